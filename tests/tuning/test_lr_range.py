"""The learning-rate range test: the exact ramp, the exact hand-back of every object it touches, and the
suggestion rules pinned on synthetic curves whose right answer is known."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

import cadence
from cadence.config import ScheduleConfig
from cadence.engine.step import step
from cadence.engine.strategies import Update
from cadence.errors import ConfigError
from cadence.optim import ExponentialRamp, build_schedule
from cadence.tuning import lr_range_test, suggest_lr
from cadence.tuning.lr_range import smooth

LRS = np.geomspace(1e-6, 1.0, 120)


def descent(lrs, at=1e-3, width=0.4, drop=2.0, base=2.3):
    """A loss that falls by `drop` around lr `at` (steepest there, in log10 lr), then blows up past 30x `at`."""
    u = np.log10(lrs) - math.log10(at)
    loss = base - drop / 2 * (1 + np.tanh(u / width))
    return loss + np.where(u > 1.5, 40.0 * (u - 1.5) ** 2, 0.0)


# ---- the ramp ----------------------------------------------------------------------------------------------


def test_ramp_is_the_exact_exponential_including_the_first_step():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ramp = ExponentialRamp(opt, 1e-7, 10.0, 50)
    got = []
    for _ in range(50):
        got.append(opt.param_groups[0]["lr"])
        ramp.step()
    want = [1e-7 * (10.0 / 1e-7) ** (t / 49) for t in range(50)]
    assert got[0] == 1e-7 and got[-1] == 10.0
    assert got == pytest.approx(want, rel=1e-13)
    ratios = np.array(got[1:]) / np.array(got[:-1])
    assert ratios == pytest.approx(np.full(49, (1e8) ** (1 / 49)), rel=1e-12)  # the first ratio too
    assert "initial_lr" not in opt.param_groups[0]  # it leaves no LRScheduler trace on the optimizer


def test_range_test_trains_each_update_at_the_ramps_lr(digits, one_thread):
    result = lr_range_test("mlp:32", digits, lr_min=1e-5, lr_max=1.0, updates=30, diverge=1e9)
    assert result.stop == "budget"
    assert result.lrs == pytest.approx(list(np.geomspace(1e-5, 1.0, 30)), rel=1e-12)
    assert result.lrs[0] == 1e-5


@pytest.mark.parametrize("lr_min, lr_max, updates", [(0.0, 1.0, 10), (1.0, 0.1, 10), (1e-3, 1.0, 1)])
def test_bad_ramp_is_refused_before_any_update(digits, lr_min, lr_max, updates):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="lr"):
        lr_range_test(model, digits, lr_min=lr_min, lr_max=lr_max, updates=updates)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- exact hand-back ---------------------------------------------------------------------------------------


def _net() -> nn.Module:
    # Dropout draws from torch's RNG, BatchNorm has buffers: both must come back.
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10)
    )


def _train_a_little(model, opt, sched, data, updates, start=0):
    """Plain mini-batch updates of 32, stepping the schedule: the 'user's own training' around the test."""
    for i in range(start, start + updates):
        idx = torch.arange(32 * i, 32 * (i + 1)) % len(data.x_train)
        step(model, opt, data.x_train, data.y_train, Update((idx,), 32, 0, 0, False), "classification")
        sched.step()


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_model_optimizer_schedule_and_rng_come_back_bitwise(digits, one_thread, optimizer):
    def setup():
        torch.manual_seed(0)
        model = _net()
        opt = (
            torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            if optimizer == "momentum"
            else torch.optim.Adam(model.parameters(), lr=0.003)
        )
        sched = build_schedule(opt, ScheduleConfig(name="cosine", T_max=100))
        _train_a_little(model, opt, sched, digits, 5)  # momentum / Adam moments exist, the schedule is at t=5
        return model, opt, sched

    model, opt, sched = setup()
    twin, twin_opt, twin_sched = setup()
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(9)
    rng_before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    opt_state = {i: {k: v.clone() for k, v in s.items()} for i, s in opt.state_dict()["state"].items()}
    groups = [{k: v for k, v in g.items()} for g in opt.state_dict()["param_groups"]]
    sched_state = sched.state_dict()
    model.eval()  # a mode the test must hand back too

    result = lr_range_test(model, digits, optimizer=opt, scheduler=sched, updates=40, diverge=1e9, max_epochs=1)

    assert len(result.lrs) == 40  # it did train the model in between
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for p, g in zip(model.parameters(), grads, strict=True):
        assert torch.equal(p.grad, g)
    after = opt.state_dict()
    assert after["param_groups"] == groups
    for i, s in after["state"].items():
        for k, v in s.items():
            assert torch.equal(v, opt_state[i][k]), (i, k)
    assert sched.state_dict() == sched_state
    assert torch.equal(torch.get_rng_state(), rng_before[0])
    assert np.array_equal(np.random.get_state()[1], rng_before[1])
    assert random.getstate() == rng_before[2]

    # The strongest check: training goes on exactly as in a twin that never ran the test.
    model.train()
    torch.manual_seed(5)
    _train_a_little(model, opt, sched, digits, 5, start=5)
    torch.manual_seed(5)
    _train_a_little(twin, twin_opt, twin_sched, digits, 5, start=5)
    for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_state_comes_back_when_the_test_fails_midway(digits):
    torch.manual_seed(0)
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="stream"):
        lr_range_test(model, digits, strategy="stream", updates=10)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- the suggestion rules on synthetic curves -----------------------------------------------------------


def test_steepest_finds_the_steepest_point_in_log_lr():
    got = suggest_lr(LRS, descent(LRS, at=1e-3), "steepest")
    assert got.lr == pytest.approx(1e-3, rel=0.15)


def test_steepest_is_not_fooled_by_an_early_spike():
    loss = descent(LRS, at=1e-3)
    loss[:6] = [9.0, 3.0, 2.4, 2.35, 2.31, 2.3]  # a steep fall over the first points: the start-up transient
    got = suggest_lr(LRS, loss, "steepest")
    assert got.lr == pytest.approx(1e-3, rel=0.15)


def test_steepest_uses_log_lr_spacing_not_the_index():
    # Dense below 1e-4, sparse above. A sharp fall at 3e-5 (steepest against log lr) and a wider one at 1e-2:
    # per index the sparse one looks steeper, because each of its steps spans 16x more log lr.
    lrs = np.concatenate([np.geomspace(1e-6, 1e-4, 200, endpoint=False), np.geomspace(1e-4, 1.0, 25)])

    def fall(at, width, drop):
        return -drop / 2 * (1 + np.tanh((np.log10(lrs) - math.log10(at)) / width))

    loss = 2.3 + fall(3e-5, 0.1, 0.8) + fall(1e-2, 0.5, 1.2)
    got = suggest_lr(lrs, loss, "steepest")
    assert got.lr == pytest.approx(3e-5, rel=0.2)
    per_index = lrs[np.argmin(np.gradient(loss))]
    assert per_index > 1e-3  # what slopes per index would have said


def test_valley_is_half_way_down_the_longest_decreasing_stretch():
    # Flat with noise up to 1e-4, a clean descent from 1e-4 to 1e-1, divergence after: the valley point is
    # the middle of the descent in log lr, sqrt(1e-4 * 1e-1) = 3.2e-3.
    rng = np.random.default_rng(0)
    u = np.log10(LRS)
    loss = np.where(u < -4, 2.3, np.where(u < -1, 2.3 - 2.0 * (u + 4) / 3, 0.3 + 5 * (u + 1) ** 2))
    loss = loss + np.where(u < -4, rng.normal(0, 0.003, len(u)), 0.0)
    got = suggest_lr(LRS, loss, "valley")
    assert got.lr == pytest.approx(10**-2.5, rel=0.25)
    assert "longest decreasing stretch" in got.message


def test_valley_ignores_a_noise_free_creep_from_the_first_lr():
    # Full-batch curves fall a little at every lr, even the smallest; that creep is not the valley.
    u = np.log10(LRS)
    loss = descent(LRS, at=1e-2) - 1e-4 * (u + 6)  # strictly decreasing from the first point
    got = suggest_lr(LRS, loss, "valley")
    assert 2e-3 < got.lr < 5e-2


def test_non_finite_points_are_dropped():
    loss = descent(LRS, at=1e-3)
    clean = suggest_lr(LRS, loss, "valley").lr
    loss[[30, 50, 70]] = [np.nan, np.inf, -np.inf]
    for rule in ("valley", "steepest"):
        got = suggest_lr(LRS, loss, rule)
        assert got.lr is not None and math.isfinite(got.lr)
    assert suggest_lr(LRS, loss, "valley").lr == pytest.approx(clean, rel=0.15)


@pytest.mark.parametrize("rule", ["valley", "steepest"])
@pytest.mark.parametrize("shape", ["rising", "flat-noise"])
def test_a_loss_that_never_decreases_gets_no_suggestion(rule, shape):
    rng = np.random.default_rng(1)
    loss = np.linspace(2.3, 5.0, len(LRS)) if shape == "rising" else 2.3 + rng.normal(0, 0.004, len(LRS))
    got = suggest_lr(LRS, loss, rule)
    assert got.lr is None and got.index is None
    assert "never decreased" in got.message


def test_still_falling_at_lr_max_is_said():
    got = suggest_lr(LRS, descent(LRS, at=0.3, width=0.3) - 0.1 * np.log10(LRS), "valley")
    assert "still falling" in got.message


def test_unknown_rule_and_unsorted_lrs_are_errors():
    with pytest.raises(ConfigError, match="valley, steepest"):
        suggest_lr(LRS, descent(LRS), "minimum")
    with pytest.raises(ConfigError, match="increase"):
        suggest_lr(LRS[::-1], descent(LRS), "valley")


def test_smoothing_is_bias_corrected():
    # A constant loss smooths to itself from the first point on: no pull towards zero at the start.
    assert smooth([2.0] * 5, 0.9) == pytest.approx([2.0] * 5)
    assert math.isnan(smooth([1.0, math.nan, 1.0])[1])


# ---- on real data -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["mini-batch", "full-batch", "online"])
def test_every_strategy_runs_and_stops_when_the_loss_blows_up(digits, one_thread, strategy):
    result = lr_range_test("mlp:32", digits, strategy=strategy, optimizer="sgd", lr_min=1e-4, lr_max=100.0)
    assert result.stop in ("diverged", "non-finite")
    assert len(result.lrs) < 100
    assert result.label == f"{strategy} + sgd"


def test_the_suggested_lr_trains_digits_well(digits, one_thread):
    # Measured (seed 0): valley suggests 0.29 for mini-batch 64 sgd; 3 epochs then reach val accuracy 0.94,
    # against 0.06 at a poor lr of 1e-3 (and 0.58 at 0.03).
    result = lr_range_test("mlp:128,64", digits, optimizer="sgd")
    assert 0.03 < result.suggestion < 3.0
    good = cadence.train("mlp:128,64", digits, optimizer="sgd", lr=result.suggestion, max_epochs=3, threads=1)
    poor = cadence.train("mlp:128,64", digits, optimizer="sgd", lr=1e-3, max_epochs=3, threads=1)
    assert good.val_metrics["val_accuracy"] > 0.9
    assert good.val_metrics["val_accuracy"] > poor.val_metrics["val_accuracy"] + 0.3
