"""Each budget mode, run for real: the quantity held equal is equal across strategies, the others differ."""

from __future__ import annotations

import pytest

from cadence.comparison import build_compare_config, compare
from cadence.config import build_config

GRID = {"strategies": ["full-batch", "mini-batch:16", "online"], "optimizers": ["sgd"], "seeds": 1, "workers": 1}


def _runs(blobs, budget: dict) -> dict[str, dict]:
    result = compare(
        build_config({"model": {"spec": "mlp:8"}}), build_compare_config({**GRID, "budget": budget}), data=blobs
    )
    assert not result.meta["interrupted"]
    return {r["strategy"]: r for r in result.runs}


def _batch(strategy: str, n_train: int) -> int:
    return {"full-batch": n_train, "mini-batch": 16, "online": 1}[strategy]


def test_equal_samples_each_run_within_one_batch_of_the_budget(blobs):
    n = len(blobs.x_train)  # 180
    runs = _runs(blobs, {"samples": 500})
    for strategy, run in runs.items():
        assert run["stop_reason"] == "budget"
        assert 500 <= run["samples_seen"] < 500 + _batch(strategy, n), strategy
    # mini-batch: two epochs of 12 updates (360 samples), then 9 batches of 16 (504 >= 500)
    assert runs["online"]["updates"] == 500 and runs["mini-batch"]["updates"] == 33
    assert runs["full-batch"]["updates"] == 3  # 3 * 180 = 540


def test_equal_epochs_every_run_sees_every_sample_the_same_number_of_times(blobs):
    n = len(blobs.x_train)
    runs = _runs(blobs, {"epochs": 2})
    assert {r["samples_seen"] for r in runs.values()} == {2 * n}
    assert {s: r["updates"] for s, r in runs.items()} == {"full-batch": 2, "mini-batch": 2 * 12, "online": 2 * n}


def test_equal_updates_every_run_takes_the_same_number_of_steps(blobs):
    n = len(blobs.x_train)
    runs = _runs(blobs, {"updates": 30})
    assert {r["updates"] for r in runs.values()} == {30}
    # an epoch of 180 is 11 batches of 16 and one of 4: 30 updates = 2 epochs + 6 batches
    assert {s: r["samples_seen"] for s, r in runs.items()} == {
        "full-batch": 30 * n,
        "mini-batch": 2 * n + 6 * 16,
        "online": 30,
    }


@pytest.mark.parametrize("seconds", [0.3])
def test_equal_seconds_every_run_trains_until_the_wall_clock_budget(blobs, seconds):
    runs = _runs(blobs, {"seconds": seconds})
    for strategy, run in runs.items():
        assert run["stop_reason"] == "budget" and run["seconds"] >= seconds, strategy
        assert run["run_config"]["stop"]["max_epochs"] is None  # not cut short by the default 10 epochs
    # one update of full-batch costs 180 samples' work; online's one sample: more updates, fewer samples each
    assert runs["online"]["updates"] > runs["full-batch"]["updates"]
