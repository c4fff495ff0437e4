"""Reading ahead: polls come out in order, checked in a worker process exactly as inline, and the worker
does not outlive its reader."""

from __future__ import annotations

import numpy as np
import pytest

from cadence.data.streams import JsonlSource, Rejected, Sample, Schema, parse
from cadence.data.streams.prefetch import Prefetcher

SCHEMA = Schema(n_features=3, n_classes=4)


@pytest.mark.parametrize("workers", [0, 1])
def test_prefetched_polls_come_in_order_with_the_checks_done(tmp_path, workers):
    lines = [b'{"x": [%d, 1, 2], "y": %d}' % (i, i % 4) for i in range(50)]
    lines[7], lines[20] = b"not json", b'{"x": [1, 2], "y": 0}'
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    reader = Prefetcher(JsonlSource(path), count=8, schema=SCHEMA, workers=workers)
    got, rows, reasons = [], {}, {}
    while not reader.exhausted:
        poll = reader.read(timeout=1.0)
        if poll is None:
            continue
        for r, i in enumerate(poll.batch.good.tolist()):
            rows[poll.messages[i].id] = (poll.batch.x[r], int(poll.batch.y[r]))
        reasons.update({poll.messages[i].id: why for i, why in poll.batch.rejected.items()})
        got += poll.messages
    reader.close()
    assert [m.id for m in got] == [str(i) for i in range(1, 51)]
    for m, line in zip(got, lines, strict=True):
        expected = parse(line, SCHEMA, m.id)
        if isinstance(expected, Rejected):
            assert reasons[m.id] == expected.reason and m.id not in rows
        else:
            assert isinstance(expected, Sample) and rows[m.id][1] == expected.y
            np.testing.assert_array_equal(rows[m.id][0], expected.x)


def test_the_parsing_worker_ends_with_its_reader(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"x": [1, 2, 3], "y": 1}\n')
    reader = Prefetcher(JsonlSource(path, follow=True), count=8, schema=SCHEMA, workers=1)
    assert reader.read(timeout=2.0)
    worker = reader._proc
    reader.close()
    worker.join(timeout=5)
    assert not worker.is_alive() and worker.exitcode == 0  # ended by the closed pipe, not killed
