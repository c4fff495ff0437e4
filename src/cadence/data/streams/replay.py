"""`cadence replay`: a data set streamed into Redis as messages, for tests and demos, optionally with drift
(labels permuted from sample K on) and a known number of malformed messages of every kind."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from cadence.data.streams.redis import connect, parse_url
from cadence.errors import DataError

# The malformed kinds, each with the dead-letter reason code the learner gives it.
MALFORMED = {
    "not-json": "not-json",
    "not-an-object": "not-an-object",
    "missing-field": "missing-field",
    "wrong-shape": "wrong-shape",
    "wrong-dtype": "wrong-dtype",
    "non-finite": "non-finite",
    "label-out-of-range": "label-out-of-range",
    "oversized": "oversized",
}


@dataclass
class ReplayReport:
    """What was sent: message counts, the malformed ones by kind, where drift starts, the entry IDs."""

    sent: int = 0
    good: int = 0
    malformed: Counter = field(default_factory=Counter)
    drift_at: int | None = None
    ids: list[str] = field(default_factory=list)


def load_raw(
    name: str, *, target: str | None = None, data_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Features (flat, as stored: unscaled) and labels of a data set: digits, fashion-mnist, mnist, a CSV
    file (with `target`) or a JSONL file of {"x": [...], "y": ...} lines.

    Raises:
        DataError: unknown name, missing files, malformed content.
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data.astype(np.int64), bunch.target.astype(np.int64)
    if name in ("fashion-mnist", "mnist"):
        from cadence.data.idx import load_idx_dataset

        x, y, _, _ = load_idx_dataset(name, data_dir=data_dir)
        return x.reshape(len(x), -1), y.astype(np.int64)
    path = Path(name)
    if path.suffix.lower() == ".csv":
        from cadence.data.files import load_csv

        x, y, _ = load_csv(path, target)
        return x, y
    if path.suffix.lower() == ".jsonl":
        xs, ys = [], []
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            if line.strip():
                try:
                    msg = orjson.loads(line)
                    xs.append(msg["x"])
                    ys.append(msg.get("y"))
                except (orjson.JSONDecodeError, KeyError, TypeError) as err:
                    raise DataError(f"{path} line {n} is not a {{'x': [...], 'y': ...}} message: {err}") from None
        return np.asarray(xs), np.asarray(ys)
    raise DataError(
        f"cannot replay {name!r}. Allowed: digits, fashion-mnist, mnist, a .csv file (with --target), "
        "a .jsonl file."
    )


def _drift_permutation(n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of the classes that moves every class (so every label changes at the drift)."""
    while True:
        perm = rng.permutation(n_classes)
        if not (perm == np.arange(n_classes)).any():
            return perm


def _malformed(kind: str, x: np.ndarray, y, n_classes: int, oversize_bytes: int) -> bytes:
    row = x.tolist()
    if kind == "not-json":
        return b'{"x": [1, 2, 3'
    if kind == "not-an-object":
        return orjson.dumps(row)
    if kind == "missing-field":
        return orjson.dumps({"features": row, "y": y})
    if kind == "wrong-shape":
        return orjson.dumps({"x": row[:-1], "y": y})
    if kind == "wrong-dtype":
        return orjson.dumps({"x": ["a"] * len(row), "y": y})
    if kind == "non-finite":
        return orjson.dumps({"x": [1e39, *row[1:]], "y": y})  # finite in JSON, inf in float32
    if kind == "label-out-of-range":
        return orjson.dumps({"x": row, "y": n_classes + 3})
    return orjson.dumps({"x": row, "y": y, "pad": "x" * oversize_bytes})


def replay(
    x: np.ndarray,
    y: np.ndarray,
    to: str,
    *,
    rate: float | None = None,
    drift_at: int | None = None,
    malformed_rate: float = 0.0,
    oversize_bytes: int = 1_048_577,
    limit: int | None = None,
    repeat: int = 1,
    seed: int = 0,
    keep_ids: bool = False,
) -> ReplayReport:
    """XADD each sample (in order, `repeat` passes) to the stream at `to` (redis://HOST:PORT/STREAM).

    Args:
        rate: messages per second (None: as fast as Redis takes them, in pipelines of 500).
        drift_at: from this message index on, labels are mapped through a fixed permutation that moves
            every class (a sudden concept drift).
        malformed_rate: exactly round(rate * total) messages, at seeded random positions, are malformed,
            cycling through MALFORMED's kinds (they are extra messages: the good ones all go too).
        oversize_bytes: the padding of an "oversized" message (more than the learner's max_message_bytes).
    """
    host, port, stream = parse_url(to)
    r = connect(host, port)
    n = len(x) * repeat if limit is None else min(limit, len(x) * repeat)
    rng = np.random.default_rng(seed)
    n_classes = int(np.max(y)) + 1 if np.issubdtype(np.asarray(y).dtype, np.integer) else 0
    perm = _drift_permutation(n_classes, rng) if drift_at is not None and n_classes > 1 else None
    n_bad = round(malformed_rate * n)
    total = n + n_bad
    bad_at = set(rng.choice(total, size=n_bad, replace=False).tolist()) if n_bad else set()
    kinds = list(MALFORMED)
    report = ReplayReport(drift_at=drift_at)
    pipe, start, i = r.pipeline(transaction=False), time.perf_counter(), 0
    batch = 500 if not rate else max(1, int(rate / 200))  # with a rate: one round trip per ~5 ms of messages
    for pos in range(total):
        xi, yi = x[i % len(x)], y[i % len(x)]
        yi = yi.item() if hasattr(yi, "item") else yi
        if pos in bad_at:
            kind = kinds[sum(report.malformed.values()) % len(kinds)]
            payload = _malformed(kind, xi, yi, n_classes, oversize_bytes)
            report.malformed[kind] += 1
        else:
            if perm is not None and i >= drift_at:
                yi = int(perm[yi])
            payload = orjson.dumps({"x": xi.tolist(), "y": yi}, option=orjson.OPT_SERIALIZE_NUMPY)
            report.good += 1
            i += 1
        pipe.xadd(stream, {"data": payload})
        report.sent += 1
        if len(pipe) >= batch:
            ids = pipe.execute()
            if keep_ids:
                report.ids += [v.decode() for v in ids]
        if rate:
            wait = start + report.sent / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
    if len(pipe):
        ids = pipe.execute()
        if keep_ids:
            report.ids += [v.decode() for v in ids]
    r.close()
    return report
