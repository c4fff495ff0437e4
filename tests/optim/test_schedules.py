"""Each schedule against its closed form over t = 0..T and against torch's own scheduler class; plateau cuts
against torch's ReduceLROnPlateau and composed with warm-up and decay; state that survives a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

import cadence
from cadence.config import PlateauConfig, ScheduleConfig
from cadence.errors import ConfigError
from cadence.optim import build_schedule

LR0 = 0.1
T = 60


def optimizer(lr: float = LR0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def lrs(schedule_config: ScheduleConfig, steps: int = T, **kw) -> list[float]:
    """The lr each update t = 0..steps-1 runs with, stepping as the loop does (after each update)."""
    opt = optimizer()
    schedule = build_schedule(opt, schedule_config, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return out


def torch_lrs(make, steps: int = T) -> list[float]:
    opt = optimizer()
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


CLOSED_FORMS = [
    (dict(name="constant"), lambda t: LR0),
    (dict(name="exponential", gamma=0.95), lambda t: LR0 * 0.95**t),
    (dict(name="inverse-time", beta=0.1, gamma=0.5), lambda t: LR0 / (1 + 0.1 * t) ** 0.5),
    (dict(name="inverse-time", beta=0.1), lambda t: LR0 / (1 + 0.1 * t)),
    (dict(name="step", step_size=7, gamma=0.5), lambda t: LR0 * 0.5 ** (t // 7)),
    (
        dict(name="cosine", T_max=40, eta_min=0.01),
        lambda t: 0.01 + (LR0 - 0.01) * (1 + math.cos(math.pi * min(t, 40) / 40)) / 2,
    ),
    (
        dict(name="cosine-restarts", T_0=10, T_mult=2),  # cycles [0,10), [10,30), [30,70)
        lambda t: (
            LR0
            * (
                1
                + math.cos(
                    math.pi
                    * (t if t < 10 else t - 10 if t < 30 else t - 30)
                    / (10 if t < 10 else 20 if t < 30 else 40)
                )
            )
            / 2
        ),
    ),
    (
        dict(name="exponential", gamma=0.9, warmup_updates=5),
        lambda t: LR0 * (t + 1) / 5 if t < 5 else LR0 * 0.9 ** (t - 5),
    ),
]


@pytest.mark.parametrize(("config", "form"), CLOSED_FORMS, ids=[str(c) for c, _ in CLOSED_FORMS])
def test_schedule_follows_its_closed_form_over_t(config, form):
    assert lrs(ScheduleConfig(**config)) == pytest.approx([form(t) for t in range(T)], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("config", "form"), [cf for cf in CLOSED_FORMS if "warmup_updates" not in cf[0]], ids=lambda v: str(v)[:40]
)
def test_linear_warm_up_composes_with_every_schedule(config, form):
    # (t + 1) / W of lr0 for the first W updates, then the schedule from its own t = 0.
    got = lrs(ScheduleConfig(**config, warmup_updates=6))
    want = [LR0 * (t + 1) / 6 if t < 6 else form(t - 6) for t in range(T)]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


TORCH_CLASSES = [
    (dict(name="exponential", gamma=0.95), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.95)),
    (dict(name="step", step_size=7, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)),
    (dict(name="cosine", T_max=T, eta_min=0.01), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T, 0.01)),
    (
        dict(name="cosine-restarts", T_0=10, T_mult=2),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, 10, 2),
    ),
    (
        dict(name="step", step_size=7, gamma=0.5, warmup_updates=5),
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, 1 / 5, 1.0, total_iters=4),
                torch.optim.lr_scheduler.StepLR(o, 7, 0.5),
            ],
            milestones=[5],
        ),
    ),
]


@pytest.mark.parametrize(("config", "make"), TORCH_CLASSES, ids=[c["name"] for c, _ in TORCH_CLASSES])
def test_schedule_matches_torchs_own_scheduler(config, make):
    assert lrs(ScheduleConfig(**config)) == pytest.approx(torch_lrs(make), rel=1e-9)


def test_per_epoch_schedule_changes_the_lr_only_at_epoch_boundaries():
    got = lrs(ScheduleConfig(name="exponential", gamma=0.5, per="epoch"), steps=12, updates_per_epoch=4)
    assert got == pytest.approx([LR0] * 4 + [LR0 / 2] * 4 + [LR0 / 4] * 4)


def test_cosine_anneals_over_the_run_budget_after_warm_up_by_default():
    got = lrs(ScheduleConfig(name="cosine", warmup_updates=10), steps=50, max_updates=50)
    assert got[9] == pytest.approx(LR0)
    assert got[10 + 20] == pytest.approx(LR0 / 2)  # half way through the 40 annealing updates
    assert got[-1] == pytest.approx(LR0 * (1 + math.cos(math.pi * 39 / 40)) / 2)


def test_cosine_without_t_max_or_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="T_max"):
        build_schedule(optimizer(), ScheduleConfig(name="cosine"))


@pytest.mark.parametrize(
    ("name", "field"), [("exponential", "gamma"), ("inverse-time", "beta"), ("step", "step_size")]
)
def test_schedule_without_its_required_parameter_names_it(name, field):
    with pytest.raises(ConfigError, match=f"needs {field}"):
        cadence.build_config({"schedule": {"name": name}})


# A scripted validation-loss sequence: improves, stalls, improves, stalls long.
METRICS = [1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.7, 0.7]


@pytest.mark.parametrize(
    "plateau",
    [
        PlateauConfig(patience=2, factor=0.5),
        PlateauConfig(patience=1, factor=0.5, cooldown=2, min_lr=0.02),
        PlateauConfig(patience=0, factor=0.3, threshold=0.05, threshold_mode="abs"),
    ],
)
def test_plateau_cuts_match_torchs_reduce_lr_on_plateau(plateau):
    opt, ref_opt = optimizer(), optimizer()
    ours = build_schedule(opt, ScheduleConfig(name="plateau", plateau=plateau), plateau_mode="min")
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(
        ref_opt,
        factor=plateau.factor,
        patience=plateau.patience,
        threshold=plateau.threshold,
        threshold_mode=plateau.threshold_mode,
        cooldown=plateau.cooldown,
        min_lr=plateau.min_lr,
    )
    for value in METRICS:
        ours.observe({"val_loss": value})
        ref.step(value)
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12)
    assert opt.param_groups[0]["lr"] < LR0  # the sequence does cut


def test_plateau_in_max_mode_cuts_when_accuracy_stalls():
    opt = optimizer()
    s = build_schedule(
        opt,
        ScheduleConfig(name="plateau", plateau=PlateauConfig(metric="val_accuracy", patience=0)),
        plateau_mode="max",
    )
    s.observe({"val_accuracy": 0.5})
    s.observe({"val_accuracy": 0.6})
    assert opt.param_groups[0]["lr"] == pytest.approx(LR0)
    s.observe({"val_accuracy": 0.6})
    assert opt.param_groups[0]["lr"] == pytest.approx(LR0 * 0.1)


def run_with_evaluations(config: ScheduleConfig, every: int, metrics: list[float], steps: int) -> list[float]:
    """lr per update, with an evaluation (observe) after every `every` updates, as the loop does."""
    opt = optimizer()
    schedule = build_schedule(opt, config, plateau_mode="min")
    out, values = [], iter(metrics)
    for t in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
        if (t + 1) % every == 0:
            schedule.observe({"val_loss": next(values)})
    return out


def test_warm_up_then_plateau_cuts():
    # warm-up over 4 updates, then constant; evaluations every 4 updates; from the 3rd on the loss stalls, so
    # with patience 1 the 4th and 6th evaluations cut (after updates 16 and 24).
    config = ScheduleConfig(name="plateau", warmup_updates=4, plateau=PlateauConfig(patience=1, factor=0.5))
    got = run_with_evaluations(config, 4, [1.0, 0.5, 0.5, 0.5, 0.5, 0.5], steps=24)
    want = [LR0 * (t + 1) / 4 for t in range(4)] + [LR0] * 12 + [LR0 / 2] * 8
    assert got == pytest.approx(want)


def test_exponential_decay_with_plateau_cuts_multiplies_both():
    config = ScheduleConfig(name="exponential", gamma=0.9, plateau=PlateauConfig(patience=0, factor=0.5))
    got = run_with_evaluations(config, 5, [1.0, 1.0, 0.5, 0.5], steps=20)
    scale = [1.0] * 10 + [0.5] * 10  # the 2nd evaluation (after update 10) stalls: cut; the 3rd improves
    want = [LR0 * 0.9**t * scale[t] for t in range(20)]
    assert got == pytest.approx(want)


def test_schedule_state_dict_resumes_exactly_with_plateau_counters():
    config = ScheduleConfig(
        name="cosine", T_max=30, warmup_updates=3, plateau=PlateauConfig(patience=1, factor=0.5)
    )
    metrics = [1.0, 0.9, 0.9, 0.9, 0.8, 0.8]

    def drive(schedule, opt, ts, out):
        for t in ts:
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
            if (t + 1) % 5 == 0:
                schedule.observe({"val_loss": metrics[t // 5]})

    opt = optimizer()
    whole: list[float] = []
    drive(build_schedule(opt, config, plateau_mode="min"), opt, range(30), whole)

    opt1 = optimizer()
    first = build_schedule(opt1, config, plateau_mode="min")
    resumed: list[float] = []
    drive(first, opt1, range(13), resumed)
    state = first.state_dict()
    opt2 = optimizer()
    second = build_schedule(opt2, config, plateau_mode="min")
    second.load_state_dict(state)
    drive(second, opt2, range(13, 30), resumed)
    assert resumed == pytest.approx(whole)
    assert min(whole[3:]) < whole[3] / 2  # the run does cut and decay


def test_train_cuts_the_lr_on_a_validation_plateau_and_records_it():
    # threshold=0.9 asks every evaluation for a 90% better val_loss, so each one after the first is a stall.
    run = cadence.train(
        threads=1,
        max_epochs=4,
        optimizer="sgd",
        lr=0.05,
        schedule="plateau",
        **{"schedule.plateau.patience": 0, "schedule.plateau.threshold": 0.9, "schedule.plateau.factor": 0.5},
    )
    assert [r["lr"] for r in run.history] == pytest.approx([0.05, 0.05, 0.025, 0.0125])


def test_train_rejects_a_plateau_metric_it_does_not_record():
    with pytest.raises(ConfigError, match="val_accuracy"):
        cadence.train(threads=1, max_epochs=1, schedule="plateau", plateau_metric="val_r2")


def test_train_steps_the_schedule_once_per_update():
    run = cadence.train(
        threads=1,
        max_epochs=2,
        batch_size=100,
        optimizer="sgd",
        lr=0.01,
        schedule="exponential",
        schedule__gamma=0.9,
    )
    per_epoch = run.updates // 2
    assert run.history[0]["lr"] == pytest.approx(0.01 * 0.9**per_epoch)
    assert run.history[1]["lr"] == pytest.approx(0.01 * 0.9 ** (2 * per_epoch))
