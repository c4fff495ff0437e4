"""The budget arithmetic (engine/budget.py) agrees with the updates the strategies actually yield, and the
progress bar, the comparison grid and the schedule's horizon all ask it."""

from __future__ import annotations

import itertools

import pytest

from cadence.callbacks.progress import expected_updates as progress_expected
from cadence.comparison.grid import Job
from cadence.comparison.grid import expected_updates as grid_expected
from cadence.config import build_config
from cadence.engine import budget
from cadence.engine.events import TrainState
from cadence.engine.stopping import Stopping
from cadence.engine.strategies import updates

STRATEGIES = [
    {"name": "full-batch", "chunk_size": 7},
    {"name": "online"},
    {"name": "online", "accumulate": 3},
    {"name": "mini-batch", "batch_size": 8},
    {"name": "mini-batch", "batch_size": 8, "drop_last": True},
    {"name": "mini-batch", "batch_size": 4, "accumulate": 3},
    {"name": "mini-batch", "batch_size": 4, "accumulate": 3, "drop_last": True},
]
STOPS = [{"max_epochs": 3}, {"max_updates": 7, "max_epochs": None}, {"max_samples": 50, "max_epochs": None}]


def _counted(config, n: int) -> int:
    """Updates until the run's stop rules say budget, walking the strategy's own updates."""
    stopping, epochs, samples = Stopping(config.stop), 0, 0
    for count, update in enumerate(updates(config.strategy, n, seed=0), start=1):
        epochs, samples = epochs + update.epoch_end, samples + update.n_samples
        if stopping.budget(epochs, count, samples, 0.0):
            return count
    raise AssertionError("unreachable")


@pytest.mark.parametrize(("strategy", "stop", "n"), list(itertools.product(STRATEGIES, STOPS, [23, 24])))
def test_budget_updates_is_the_number_of_updates_the_run_takes(strategy, stop, n):
    config = build_config({"strategy": strategy, "stop": stop})
    assert budget.budget_updates(config, n) == _counted(config, n)
    per_epoch = sum(1 for _ in itertools.takewhile(lambda u: u.epoch == 0, updates(config.strategy, n, 0)))
    assert budget.updates_per_epoch(config.strategy, n) == per_epoch


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_progress_and_the_comparison_grid_expect_the_same_updates(strategy):
    config = build_config({"strategy": strategy, "stop": {"max_samples": 50, "max_epochs": None}})
    state = TrainState(config, None, None, None, 23, budget.updates_per_epoch(config.strategy, 23))
    job = Job(0, 0, "x", config.strategy.name.value, config.strategy.batch_size, "sgd", "constant", 0.1, 0, config)
    assert progress_expected(state) == grid_expected(job, 23) == _counted(config, 23)


def test_updates_left_never_lets_a_run_pass_the_sample_budget():
    config = build_config({"strategy": {"batch_size": 8}, "stop": {"max_samples": 50, "max_epochs": None}})
    # 23 samples: updates of 8, 8, 7, 8, 8, 7, ...: after 3 updates (23 samples) at most 4 more fit under 50.
    assert budget.updates_left(config, 23, updates=3, samples=23) == 4
    assert budget.updates_left(config, 23, updates=6, samples=46) == 1
    assert budget.updates_left(build_config({"stop": {"max_seconds": 1, "max_epochs": None}}), 23, 0, 0) is None
