"""The learning-rate range test (Smith 2017): a short run with the lr growing exponentially, the smoothed loss
against lr, and a suggested lr. The model, optimizer, schedule and RNG are handed back exactly as they were.

Hand-written (STYLE.md): torch has no range test, and Lightning's and fastai's finders train the caller's
model without restoring it exactly (Lightning issues 6675/9672, fastai 3013). Plots are reports/tuning.py's.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cadence.config import RunConfig
from cadence.data.datasets import Dataset
from cadence.engine.fast import choose_engine
from cadence.engine.loop import prepare, resolve_config
from cadence.engine.options import step_options
from cadence.engine.strategies import updates as strategy_updates
from cadence.errors import ConfigError
from cadence.optim import ExponentialRamp, build_optimizer

RULES = ("valley", "steepest")


@dataclass(frozen=True)
class Suggestion:
    """A rule's pick on a loss-vs-lr curve: the lr and its index in the curve, or None with the reason."""

    rule: str
    lr: float | None
    index: int | None
    message: str


@dataclass
class LRRangeResult:
    """One range test: the lr and loss of each update, the smoothed curve, and the suggestion."""

    lrs: list[float]
    losses: list[float]  # raw mean loss of each update; nan for the non-finite one that stopped the test
    smoothed: list[float]
    rule: str
    suggestion: float | None
    index: int | None
    message: str
    stop: str  # "diverged" (smoothed loss past diverge x best), "non-finite" or "budget"
    suggestions: dict[str, float | None] = field(default_factory=dict)  # every rule's pick, for the plot
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN losses become None."""
        tree = asdict(self)
        for key in ("losses", "smoothed"):
            tree[key] = [v if math.isfinite(v) else None for v in tree[key]]
        return tree


def smooth(losses: list[float], beta: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction: a_t = beta*a_{t-1} + (1-beta)*l_t, s_t = a_t/(1-beta^t).

    Without the correction the first points are pulled towards 0 (a_0 = 0), which reads as a steep early
    descent. Non-finite losses are passed through as nan and leave the average alone.
    """
    out, avg, count = [], 0.0, 0
    for loss in losses:
        if not math.isfinite(loss):
            out.append(math.nan)
            continue
        count += 1
        avg = beta * avg + (1.0 - beta) * loss
        out.append(avg / (1.0 - beta**count))
    return out


def suggest_lr(
    lrs,
    losses,
    rule: str = "valley",
    *,
    skip_start: int | None = None,
    skip_end: int | None = None,
    min_drop: float = 0.01,
    tol: float = 0.01,
) -> Suggestion:
    """Pick an lr from a loss-vs-lr curve (`lrs` increasing).

    Non-finite points are dropped, then the first `skip_start` (default 10%) and last `skip_end` (default 5%)
    of the rest, where early spikes and the divergence live. If no later point is `min_drop` (relative) below
    the first kept one, the loss never decreased: no lr is suggested, and the message says so (fastai's
    valley would return the largest lr there).

    - steepest: the most negative slope d loss / d log(lr) (slopes against log lr, not the index or lr, so
      uneven spacing does not fool it), up to the lowest loss: past it the curve is diverging.
    - valley (fastai's rule): the longest decreasing stretch and the point half-way into it. As in fastai the
      stretch is read from a longest decreasing subsequence: its L points ending at e give the stretch of the
      L points up to e, so noise between them is skipped. Unlike fastai a step only counts as decreasing if it
      drops by more than `tol` of the curve's total drop: a noise-free curve (full-batch) creeps down
      from the very first lr, and without the tolerance that creep would be the longest stretch.

    Raises:
        ConfigError: an unknown rule, lrs and losses of different lengths, or lrs not increasing.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown lr rule {rule!r}. Allowed: {', '.join(RULES)}.")
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if lrs.shape != losses.shape or lrs.ndim != 1:
        raise ConfigError(f"lrs and losses must be 1-D of the same length; got {lrs.shape} and {losses.shape}.")
    kept = np.flatnonzero(np.isfinite(lrs) & (lrs > 0) & np.isfinite(losses))
    if np.any(np.diff(lrs[kept]) <= 0):
        raise ConfigError("the lrs of a range test must increase from point to point.")
    n = len(kept)
    start = max(1, round(0.10 * n)) if skip_start is None else skip_start
    end = max(1, round(0.05 * n)) if skip_end is None else skip_end
    kept = kept[start : max(start, n - end)]
    if len(kept) < 3:
        return Suggestion(rule, None, None, f"only {n} finite points, too few to read a curve from")
    x, y = np.log(lrs[kept]), losses[kept]
    span = f"lr {lrs[kept[0]]:.2g} to {lrs[kept[-1]]:.2g}"
    if not y[1:].min() < y[0] - min_drop * abs(y[0]):
        return Suggestion(
            rule,
            None,
            None,
            f"the loss never decreased ({span}); no lr is suggested. Fix: check that the model can learn "
            "these data, or start the range lower (lr_min).",
        )
    if rule == "steepest":
        lowest = int(np.argmin(y))
        slopes = np.gradient(y[: lowest + 1], x[: lowest + 1])
        i = int(np.argmin(slopes))
        how = f"steepest descent of the loss against log lr, {span}"
    else:
        length = _decreasing_lengths(y, tol * (y[0] - y.min()))
        last = int(np.argmax(length))
        first = last - int(length[last]) + 1
        i = first + int(np.argmin(np.abs(x[first : last + 1] - (x[first] + x[last]) / 2)))
        how = f"half-way down the longest decreasing stretch, lr {lrs[kept[first]]:.2g} to {lrs[kept[last]]:.2g}"
    index = int(kept[i])
    message = f"suggested lr {lrs[index]:.3g} ({rule}: {how})"
    if int(np.argmin(y)) == len(y) - 1:
        message += f"; the loss was still falling at lr {lrs[kept[-1]]:.2g}, so a larger lr_max may find more"
    return Suggestion(rule, float(lrs[index]), index, message)


def _decreasing_lengths(y: np.ndarray, tol: float) -> np.ndarray:
    """length[i]: the most points of a subsequence ending at i in which each point is more than `tol` below
    the one before it (fastai's longest-decreasing-subsequence table, O(n^2) over at most a few hundred)."""
    length = np.ones(len(y), dtype=int)
    for i in range(1, len(y)):
        higher = np.flatnonzero(y[:i] > y[i] + tol)
        if len(higher):
            length[i] = length[higher].max() + 1
    return length


class _Snapshot:
    """Everything the range test changes, copied so that `restore` puts it back bit for bit: weights and
    buffers, gradients, train/eval mode, optimizer state and hyperparameters, the schedule, and the torch,
    numpy and Python RNGs (dropout draws from torch's)."""

    def __init__(self, model: nn.Module | None, optimizer, scheduler):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        if model is not None:
            self.weights = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
            self.grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
            self.modes = [m.training for m in model.modules()]
        self.optimizer_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
        self.scheduler_state = copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None

    def restore(self) -> None:
        if self.model is not None:
            self.model.load_state_dict(self.weights)
            for p, g in zip(self.model.parameters(), self.grads, strict=True):
                p.grad = g
            for m, mode in zip(self.model.modules(), self.modes, strict=True):
                m.training = mode
        if self.scheduler is not None:
            self.scheduler.load_state_dict(self.scheduler_state)
        if self.optimizer is not None:  # after the schedule, so the optimizer's own saved lr is what stays
            self.optimizer.load_state_dict(self.optimizer_state)
        torch.set_rng_state(self.rng[0])
        np.random.set_state(self.rng[1])
        random.setstate(self.rng[2])
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def lr_range_test(
    model: nn.Module | str | None = None,
    data: Dataset | tuple | None = None,
    config: RunConfig | dict | None = None,
    *,
    optimizer: torch.optim.Optimizer | str | None = None,
    scheduler: Any = None,
    lr_min: float = 1e-7,
    lr_max: float = 10.0,
    updates: int = 100,
    beta: float = 0.9,
    diverge: float = 4.0,
    rule: str = "valley",
    **overrides,
) -> LRRangeResult:
    """Run the range test under `config.strategy` and suggest an lr; leave every object as it was.

    Update t (0-based) trains with lr_t = lr_min * (lr_max/lr_min)^(t/(updates-1)) (optim.ExponentialRamp).
    The loss of each update is smoothed (`smooth`, bias-corrected EMA with `beta`). beta=0.9, not fastai's
    and Lightning's 0.98: an EMA lags about beta/(1-beta) updates, which over 100 updates spanning 8 decades
    is 4 decades at 0.98 (the smoothed minimum then sits where the raw loss already diverges) and under one
    at 0.9. On digits (mlp:128,64, 100 updates, seed 0) valley gives sgd 0.29 / momentum 0.095 / adam
    0.007 for mini-batch 64 and sgd 0.42 / adam 0.0059 for full-batch, next to compare's swept defaults
    0.3 / 0.03 / 0.003 and 0.5 / 0.01; online it is high (sgd 0.14, adam 0.004 against 0.01 and 0.0003):
    one-sample losses are noisy. The test stops early when
    the smoothed loss exceeds `diverge` times its best so far (4x, as Lightning and fastai) or an update's
    loss or gradient is not finite. `suggest_lr` picks the lr by `rule`.

    Args:
        model: an nn.Module (trained in place, then restored), a spec such as "mlp:128,64", or None for
            `config.model.spec`.
        data, config, overrides: as for `cadence.train`.
        optimizer: the optimizer to test (restored afterwards); None builds `config.optimizer`, and a name
            ("adam") is the `optimizer` override of `cadence.train`.
        scheduler: the run's lr schedule, if any: not stepped during the test, and restored with the rest.

    Raises:
        ConfigError, DataError: bad settings or data, before anything is trained.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown lr rule {rule!r}. Allowed: {', '.join(RULES)}.")
    if not diverge > 1:
        raise ConfigError(f"diverge must be > 1 (a multiple of the best loss); got {diverge}. Fix: e.g. 4.")
    if not 0 <= beta < 1:
        raise ConfigError(f"beta must be in [0, 1); got {beta}. Fix: e.g. 0.9.")
    if isinstance(model, str):
        overrides = {**overrides, "model.spec": model}
        model = None
    if isinstance(optimizer, str):
        overrides = {**overrides, "optimizer": optimizer}
        optimizer = None
    config = resolve_config(config, overrides)
    snapshot = _Snapshot(model, optimizer, scheduler)  # before prepare(), which seeds torch to build a model
    threads = torch.get_num_threads()
    try:
        model, data = prepare(model, data, config)
        optimizer = optimizer or build_optimizer(model.parameters(), config.optimizer)
        ramp = ExponentialRamp(optimizer, lr_min, lr_max, updates)
        # One thread unless the config says otherwise: the test is a hundred small updates, and a second
        # intra-op thread on a busy machine made them 9x slower (digits mini-batch: 12.9 s against 1.4 s).
        torch.set_num_threads(config.threads or 1)
        options = step_options(config, model, data)
        # The ramp is not cadence's Schedule, so this is the autograd engine (the fast ones step only that);
        # chosen through the engine interface all the same, and it steps the ramp once per applied update.
        engine = choose_engine(model, optimizer, ramp, config, data.x_train, data.y_train, data.task, options)
        model.train()
        lrs, losses, stop = _ramp(engine, config, len(data.x_train), updates, beta, diverge)
    finally:
        torch.set_num_threads(threads)
        snapshot.restore()
    smoothed = smooth(losses, beta)
    picks = {r: suggest_lr(lrs, smoothed, r) for r in RULES}
    chosen = picks[rule]
    note = {"diverged": f"stopped at lr {lrs[-1]:.3g}: the smoothed loss passed {diverge:g}x its best"}.get(stop)
    if stop == "non-finite":
        note = f"stopped at lr {lrs[-1]:.3g}: the loss or a gradient became non-finite"
    return LRRangeResult(
        lrs=lrs,
        losses=losses,
        smoothed=smoothed,
        rule=rule,
        suggestion=chosen.lr,
        index=chosen.index,
        message=chosen.message + (f"; {note}" if note else ""),
        stop=stop,
        suggestions={r: s.lr for r, s in picks.items()},
        label=f"{config.strategy.name.value} + {config.optimizer.name}",
    )


def _ramp(engine, config, n_train, updates, beta, diverge) -> tuple[list[float], list[float], str]:
    """Train along the ramp; return (lr of each update, its loss, why it stopped)."""
    lrs: list[float] = []
    losses: list[float] = []
    best, avg = math.inf, 0.0
    for t, update in zip(range(updates), strategy_updates(config.strategy, n_train, config.seed), strict=False):
        lrs.append(float(engine.optimizer.param_groups[0]["lr"]))  # the lr this update trains with
        applied = engine.apply([update])
        if applied.n == 0:
            losses.append(math.nan)
            return lrs, losses, "non-finite"
        loss = float(applied.losses[0])
        losses.append(loss)
        avg = beta * avg + (1.0 - beta) * loss
        smoothed = avg / (1.0 - beta ** (t + 1))
        if t > 0 and smoothed > diverge * best:
            return lrs, losses, "diverged"
        best = min(best, smoothed)
    return lrs, losses, "budget"


__all__ = ["RULES", "LRRangeResult", "Suggestion", "lr_range_test", "smooth", "suggest_lr"]
