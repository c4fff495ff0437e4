"""Learning-rate schedules: lr_t = lr0 * time_factor(t) * plateau_scale, on one torch LambdaLR.

Hand-written composition because torch cannot compose ReduceLROnPlateau with a time schedule: SequentialLR and
ChainedScheduler call step() without the metric (pytorch issues 68978, 110761). The time factors are closed
forms of t (not torch's recursive, chainable forms), so the state is t plus the plateau counters and a
checkpoint restores it exactly; the tests check each against torch's own scheduler class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from cadence.config import PlateauConfig, ScheduleConfig
from cadence.errors import ConfigError

TimeFactor = Callable[[int, float], float]  # (update index t, base lr) -> multiplier of the base lr


def _cosine(cur: int, length: int, base_lr: float, eta_min: float) -> float:
    floor = eta_min / base_lr
    return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * cur / length)) / 2.0


def time_factor(config: ScheduleConfig, updates_per_epoch: int = 1, max_updates: int | None = None) -> TimeFactor:
    """The multiplier of lr0 at update t (warm-up and decay, no plateau cuts).

    With W = warmup_updates and e the schedule step (t - W, or (t - W) // updates_per_epoch with per=epoch):
    warm-up (t < W): (t + 1) / W; constant: 1; exponential: gamma^e; inverse-time: 1 / (1 + beta*e)^gamma;
    step: gamma^floor(e / step_size);
    cosine: eta_min/lr0 + (1 - eta_min/lr0) * (1 + cos(pi * min(e, T_max) / T_max)) / 2;
    cosine-restarts: the cosine over the current cycle (lengths T_0, T_0*T_mult, ...).

    Args:
        max_updates: the run's update budget; cosine's default T_max is what remains of it after warm-up.

    Raises:
        ConfigError: cosine without T_max in a run with no epoch or update budget.
    """
    c = config
    warm = c.warmup_updates
    per = updates_per_epoch if c.per == "epoch" else 1
    t_max = c.T_max
    if c.name == "cosine" and t_max is None:
        if max_updates is None:
            raise ConfigError(
                "schedule 'cosine' anneals over T_max steps, and this run has no epoch or update budget to "
                "default it to. Fix: set schedule.T_max, or stop.max_epochs / stop.max_updates."
            )
        t_max = max(1, math.ceil((max_updates - warm) / per))

    def decay(e: int, base_lr: float) -> float:
        if c.name in ("constant", "plateau"):
            return 1.0
        if c.name == "exponential":
            return c.gamma**e
        if c.name == "inverse-time":
            return (1.0 + c.beta * e) ** -(1.0 if c.gamma is None else c.gamma)
        if c.name == "step":
            return (0.1 if c.gamma is None else c.gamma) ** (e // c.step_size)
        if c.name == "cosine":
            return _cosine(min(e, t_max), t_max, base_lr, c.eta_min)
        cycle = c.T_0  # cosine-restarts: walk the cycles in integers (no float log at cycle boundaries)
        while e >= cycle:
            e, cycle = e - cycle, cycle * c.T_mult
        return _cosine(e, cycle, base_lr, c.eta_min)

    def factor(t: int, base_lr: float) -> float:
        if t < warm:
            return (t + 1) / warm
        return decay((t - warm) // per, base_lr)

    return factor


class Schedule:
    """A torch LambdaLR for the time factor, times per-group plateau scales cut by `observe(record)`.

    The loop calls `step()` after every applied update and `observe(record)` after every evaluation.
    Plateau cuts follow torch's ReduceLROnPlateau exactly (threshold, cooldown, min_lr, eps=1e-8), with
    `patience` counted in evaluations; `min_lr` bounds lr0 * plateau_scale, the cuts alone.
    """

    EPS = 1e-8  # ReduceLROnPlateau's default eps: smaller cuts are ignored

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        config: ScheduleConfig,
        updates_per_epoch: int = 1,
        max_updates: int | None = None,
        plateau_mode: str | None = None,
    ):
        self.config = config
        self.optimizer = optimizer
        self.factor = time_factor(config, updates_per_epoch, max_updates)
        self.plateau: PlateauConfig | None = config.plateau or (
            PlateauConfig() if config.name == "plateau" else None
        )
        self.mode = plateau_mode or (self.plateau.mode if self.plateau else "min")
        if self.plateau and self.mode not in ("min", "max"):
            raise ConfigError(
                f"schedule.plateau.mode is {self.mode!r}; the schedule needs min or max. "
                "Fix: set schedule.plateau.mode (train() resolves 'auto' from the metric)."
            )
        self.base_lrs = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        self.scales = [1.0] * len(self.base_lrs)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.bad_evaluations = 0
        self.cooldown_left = 0
        self.lambda_lr = torch.optim.lr_scheduler.LambdaLR(
            optimizer, [lambda t, i=i: self._multiplier(i, t) for i in range(len(self.base_lrs))]
        )

    def _multiplier(self, group: int, t: int) -> float:
        return self.factor(t, self.base_lrs[group]) * self.scales[group]

    @property
    def t(self) -> int:
        """Updates stepped so far; the next update uses lr(t)."""
        return self.lambda_lr.last_epoch

    def step(self, n: int = 1) -> None:
        """Advance `n` updates at once (the lr is a closed form of t, so only the last step needs computing)."""
        self.lambda_lr.last_epoch += n - 1
        self.lambda_lr._step_count += n - 1
        self.lambda_lr.step()

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def _better(self, value: float) -> bool:
        p = self.plateau
        if p.threshold_mode == "rel":
            return (
                value < self.best * (1 - p.threshold)
                if self.mode == "min"
                else value > self.best * (1 + p.threshold)
            )
        return value < self.best - p.threshold if self.mode == "min" else value > self.best + p.threshold

    def observe(self, record: dict[str, Any]) -> None:
        """Feed one evaluation record; cut the lr by `factor` after `patience` evaluations without improvement.

        No-op without plateau cuts. Raises ConfigError if the record lacks the metric.
        """
        p = self.plateau
        if p is None:
            return
        if p.metric not in record:
            raise ConfigError(
                f"schedule.plateau.metric = {p.metric!r} is not in the evaluation record. "
                f"Allowed: {', '.join(k for k in record if k.startswith(('val_', 'train_loss')))}."
            )
        value = float(record[p.metric])
        if self._better(value):
            self.best, self.bad_evaluations = value, 0
        else:
            self.bad_evaluations += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_evaluations = 0
        if self.bad_evaluations > p.patience:
            for i, base in enumerate(self.base_lrs):
                old = base * self.scales[i]
                new = max(old * p.factor, p.min_lr)
                if old - new > self.EPS:
                    self.scales[i] = new / base
            self.cooldown_left, self.bad_evaluations = p.cooldown, 0
            self._apply()

    def scale(self, factor: float) -> None:
        """Multiply the lr by `factor` from now on, composed with the time schedule like a plateau cut
        (the fault policy `rollback` uses it); saved in `scales`, so a checkpoint keeps it."""
        self.scales = [s * factor for s in self.scales]
        self._apply()

    def _apply(self) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self.base_lrs[i] * self._multiplier(i, self.t)
        self.lambda_lr._last_lr = self.get_last_lr()  # keep torch's own get_last_lr() in step

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: t (LambdaLR's state) and the plateau counters."""
        return {
            "lambda_lr": self.lambda_lr.state_dict(),
            "scales": list(self.scales),
            "best": self.best,
            "bad_evaluations": self.bad_evaluations,
            "cooldown_left": self.cooldown_left,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lambda_lr.load_state_dict(state["lambda_lr"])
        self.scales = list(state["scales"])
        self.best = state["best"]
        self.bad_evaluations = state["bad_evaluations"]
        self.cooldown_left = state["cooldown_left"]
        self._apply()


def build_schedule(
    optimizer: torch.optim.Optimizer,
    config: ScheduleConfig,
    updates_per_epoch: int = 1,
    max_updates: int | None = None,
    plateau_mode: str | None = None,
) -> Schedule:
    """The schedule for `config`, stepped once per update by the loop (see `Schedule`)."""
    return Schedule(optimizer, config, updates_per_epoch, max_updates, plateau_mode)


class ScheduleWarning(UserWarning):
    """A schedule that the run's budget cuts short: the warm-up or the decay never completes."""


def horizon_warnings(config: ScheduleConfig, updates_per_epoch: int, budget_updates: int | None) -> list[str]:
    """What of the schedule lies beyond the budget: a warm-up longer than the run, or a cosine, step or
    restart horizon it never reaches. Empty when it fits, or when only time bounds the run.

    A warm-up of W updates in a run of B < W updates ends at lr0 * B / W: a mistake that trains on and
    reports poor accuracy without any other sign.
    """
    if budget_updates is None:
        return []
    budget, warmup = budget_updates, config.warmup_updates
    if warmup >= budget:
        return [
            f"schedule.warmup_updates = {warmup} is not shorter than the run's budget of {budget} updates: the "
            f"lr only climbs to lr0 * {budget}/{warmup} and the schedule after the warm-up never starts. "
            f"Fix: lower schedule.warmup_updates (e.g. {max(1, budget // 10)}) or raise the budget."
        ]
    unit = "updates" if config.per == "update" else "epochs"
    left = budget - warmup if config.per == "update" else (budget - warmup) // max(1, updates_per_epoch)
    horizon = {
        "cosine": ("T_max", config.T_max, "the lr never anneals down to eta_min"),
        "step": ("step_size", config.step_size, "the lr never decays"),
        "cosine-restarts": ("T_0", config.T_0, "the first cycle never ends"),
    }.get(config.name)
    if horizon is None or horizon[1] is None or horizon[1] <= left:
        return []
    field, value, effect = horizon
    return [
        f"schedule.{field} = {value} {unit} is longer than the {left} {unit} the budget leaves after the warm-up: "
        f"{effect}. Fix: set schedule.{field} <= {left}"
        + (" (or leave T_max unset: it defaults to the budget)." if field == "T_max" else ", or raise the budget.")
    ]


class ExponentialRamp:
    """The learning-rate range test's ramp: lr_t = lr_min * (lr_max / lr_min) ** (t / (n - 1)), t = 0..n-1.

    Set on every param group through `param_groups[i]["lr"]` (torch's interface for changing an lr), stepped
    once per applied update like any schedule. Each lr is the closed form of t, never a running product of
    per-step factors, so every step, the first included, multiplies the lr by the same ratio (Lightning's
    finder stepped its first update unevenly, Lightning PR 21931); lr_0 is lr_min and lr_{n-1} is lr_max
    exactly. It holds no state beyond t, and it is not a torch LRScheduler on purpose: those write
    `initial_lr` into the param groups, which would leave a trace on an optimizer that the test must hand
    back untouched.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr_min: float, lr_max: float, n: int):
        if not (0 < lr_min < lr_max and math.isfinite(lr_max)):
            raise ConfigError(
                f"the lr range must satisfy 0 < lr_min < lr_max; got lr_min={lr_min}, lr_max={lr_max}. "
                "Fix: e.g. lr_min=1e-7, lr_max=10."
            )
        if n < 2:
            raise ConfigError(f"the lr ramp needs at least 2 updates; got {n}. Fix: e.g. 100 updates.")
        self.optimizer, self.lr_min, self.lr_max, self.n = optimizer, lr_min, lr_max, n
        self.t = 0
        self._apply()

    def lr(self, t: int) -> float:
        """The lr of update t (0-based)."""
        if t <= 0:
            return self.lr_min
        if t >= self.n - 1:
            return self.lr_max
        return self.lr_min * (self.lr_max / self.lr_min) ** (t / (self.n - 1))

    def step(self, n: int = 1) -> None:
        self.t += n
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.t)
