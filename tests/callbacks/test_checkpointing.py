"""When the Checkpointing callback writes: run start, every N updates, every S seconds, run end; keep K."""

from __future__ import annotations

import numpy as np
import pytest

import cadence
import cadence.callbacks.checkpointing as checkpointing
from cadence.callbacks import Checkpointing
from cadence.engine import checkpoint
from cadence.errors import ConfigError

CONFIG = dict(
    strategy={"name": "mini-batch", "batch_size": 10},
    model={"spec": "logreg"},
    stop={"max_updates": 23},
    data={"test_fraction": 0.0},
)


@pytest.fixture(scope="module")
def data():
    gen = np.random.default_rng(0)
    x = gen.normal(size=(120, 5)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _updates(saver: Checkpointing) -> list[int]:
    return [checkpoint.read(p).updates for p in saver.written]


def test_writes_at_run_start_every_n_updates_and_at_run_end(data, tmp_path):
    saver = Checkpointing(tmp_path, every_updates=5, keep=100)
    run = cadence.train(data=data, config=CONFIG, callbacks=[saver])
    assert _updates(saver) == [0, 5, 10, 15, 20, 23]
    final = checkpoint.read(saver.written[-1])
    assert final.meta["stop_reason"] == run.stop_reason == "budget"
    assert final.meta["checkpointing"] == {"every_updates": 5, "every_seconds": None, "keep": 100}


def test_keeps_only_the_newest_k(data, tmp_path):
    saver = Checkpointing(tmp_path, every_updates=2, keep=3)
    cadence.train(data=data, config=CONFIG, callbacks=[saver])
    kept = checkpoint.checkpoint_names(checkpoint.checkpoints_dir(tmp_path))
    assert [p.name for p in kept] == [p.name for p in saver.written[::-1][:3]]


def test_writes_every_s_seconds_by_the_clock(data, tmp_path, monkeypatch):
    clock = {"now": 0.0}

    def monotonic():
        clock["now"] += 1.0  # one second passes per look at the clock
        return clock["now"]

    monkeypatch.setattr(checkpointing.time, "monotonic", monotonic)
    saver = Checkpointing(tmp_path, every_seconds=4, keep=100)
    cadence.train(data=data, config=CONFIG, callbacks=[saver])
    # The clock is read once per update and once per write (which restarts the interval), so with one
    # second per reading a write falls due every 4 updates; plus run start and run end.
    assert _updates(saver) == [0, 4, 8, 12, 16, 20, 23]


def test_a_resumed_run_does_not_write_a_duplicate_start_checkpoint(data, tmp_path):
    cadence.train(data=data, config=CONFIG, callbacks=[Checkpointing(tmp_path, every_updates=10)])
    saver = Checkpointing(tmp_path, every_updates=10)
    cadence.train(
        data=data,
        config={**CONFIG, "stop": {"max_updates": 30}},
        callbacks=[saver],
        resume_from=tmp_path,
        allow_changes=True,
    )
    assert _updates(saver) == [30, 30]  # no second checkpoint at update 23; periodic and run-end at 30


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every_updates": 0}, r"every_updates = 0 must be > 0"),
        ({"every_seconds": -1.0}, r"every_seconds = -1.0 must be > 0"),
        ({"keep": 0}, r"keep = 0 must be an integer >= 1"),
    ],
)
def test_bad_settings_are_refused_with_the_value(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Checkpointing(tmp_path, **kwargs)
