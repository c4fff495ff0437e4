"""A schedule the budget cuts short warns before training: a warm-up longer than the run (the README's
"tricks" example once reached 24% on digits that way), or a cosine/step/restart horizon beyond the budget."""

from __future__ import annotations

import re
import warnings

import pytest

import cadence
from cadence.config import ScheduleConfig
from cadence.optim.schedules import ScheduleWarning, horizon_warnings


@pytest.mark.parametrize(
    ("schedule", "per_epoch", "budget", "match"),
    [
        ({"warmup_updates": 200}, 5, 50, r"warmup_updates = 200 is not shorter than the run's budget of 50"),
        ({"name": "cosine", "T_max": 100, "warmup_updates": 10}, 5, 50, r"T_max = 100 updates .* the 40 updates"),
        ({"name": "step", "step_size": 20, "per": "epoch"}, 5, 50, r"step_size = 20 epochs .* the 10 epochs"),
        ({"name": "cosine-restarts", "T_0": 60}, 5, 50, r"T_0 = 60 updates .*first cycle never ends"),
    ],
)
def test_a_horizon_beyond_the_budget_is_named_with_the_fix(schedule, per_epoch, budget, match):
    (message,) = horizon_warnings(ScheduleConfig(**schedule), per_epoch, budget)
    assert re.search(match, message) and "Fix:" in message


@pytest.mark.parametrize(
    ("schedule", "budget"),
    [
        ({"warmup_updates": 49}, 50),
        ({"name": "cosine"}, 50),  # T_max defaults to the budget
        ({"name": "cosine", "T_max": 40, "warmup_updates": 10}, 50),
        ({"name": "step", "step_size": 50}, 50),
        ({"warmup_updates": 10_000}, None),  # only time bounds the run: nothing to compare with
    ],
)
def test_a_schedule_that_fits_is_silent(schedule, budget):
    assert horizon_warnings(ScheduleConfig(**schedule), 5, budget) == []


def test_train_warns_before_the_first_update(digits):
    with pytest.warns(ScheduleWarning, match="the lr only climbs to lr0 \\* 20/100"):
        run = cadence.train("mlp:16", digits, warmup_updates=100, max_epochs=1, threads=1)
    assert run.updates == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleWarning)
        cadence.train("mlp:16", digits, warmup_updates=10, max_epochs=1, threads=1)
