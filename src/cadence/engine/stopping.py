"""Why a run stops: the StopReason enum and the checks that produce it.

Budget checks run after every update; convergence and early stopping after every evaluation; divergence
comes from the step (a non-finite loss is never applied).
"""

from __future__ import annotations

import copy
import math
from enum import StrEnum

from torch import nn

from cadence.config import StopConfig
from cadence.engine.evaluate import lower_is_better


class StopReason(StrEnum):
    CONVERGED = "converged"
    EARLY_STOPPED = "early-stopped"
    BUDGET = "budget"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"


class Stopping:
    """Holds what the stop checks remember between calls: best metric, patience counters, best weights."""

    def __init__(self, config: StopConfig):
        self.config = config
        self.prev_loss: float | None = None
        self.flat_checks = 0
        self.best: float | None = None
        self.bad_checks = 0
        self.best_state: dict | None = None
        self.best_record: dict | None = None

    def budget(self, epochs_done: int, updates: int, samples: int, seconds: float) -> StopReason | None:
        """BUDGET once any of max_epochs, max_updates, max_samples, max_seconds is reached."""
        c = self.config
        if (
            (c.max_epochs is not None and epochs_done >= c.max_epochs)
            or (c.max_updates is not None and updates >= c.max_updates)
            or (c.max_samples is not None and samples >= c.max_samples)
            or (c.max_seconds is not None and seconds >= c.max_seconds)
        ):
            return StopReason.BUDGET
        return None

    def converged(self, train_loss: float) -> StopReason | None:
        """CONVERGED when `train_loss` (the mean over the updates since the last check) is at or below
        `target_loss`, or its relative improvement (prev - now) / |prev| stays below `tol` for
        `convergence_patience` checks in a row."""
        c = self.config
        if c.target_loss is not None and train_loss <= c.target_loss:
            return StopReason.CONVERGED
        if c.tol is not None and self.prev_loss is not None:
            rel = (self.prev_loss - train_loss) / max(abs(self.prev_loss), 1e-12)
            self.flat_checks = self.flat_checks + 1 if rel < c.tol else 0
            if self.flat_checks >= c.convergence_patience:
                return StopReason.CONVERGED
        self.prev_loss = train_loss
        return None

    def early_stopped(self, record: dict, model: nn.Module) -> StopReason | None:
        """EARLY_STOPPED when the monitored validation metric has not improved by more than min_delta for
        `early_stopping_patience` evaluations; snapshots the best weights as it goes."""
        c = self.config
        if c.early_stopping_metric is None:
            return None
        value = record[c.early_stopping_metric]
        sign = 1.0 if lower_is_better(c.early_stopping_metric) else -1.0
        if self.best is None or sign * (self.best - value) > c.early_stopping_min_delta:
            self.best, self.bad_checks, self.best_record = value, 0, record
            if c.restore_best_weights:
                self.best_state = copy.deepcopy(model.state_dict())
            return None
        self.bad_checks += 1
        return StopReason.EARLY_STOPPED if self.bad_checks >= c.early_stopping_patience else None

    def restore_best(self, model: nn.Module) -> bool:
        """Load the best weights seen, if early stopping kept them. Returns whether it did."""
        if self.best_state is None:
            return False
        model.load_state_dict(self.best_state)
        return True


def budget_note(config: StopConfig, history: list[dict], stopping: Stopping) -> str:
    """For a run that ended on its budget: a sentence saying so when the watched metric was still improving
    (early stopping had not run out of patience, or, without it, the last evaluations still improved
    on the ones before), with the fix; "" otherwise."""
    metric = config.early_stopping_metric or "train_loss"
    values = [r[metric] for r in history if isinstance(r.get(metric), float) and math.isfinite(r[metric])]
    if len(values) < 2:
        return ""
    sign = 1.0 if lower_is_better(metric) else -1.0
    if config.early_stopping_metric is not None:
        since = stopping.bad_checks  # evaluations since the best one
        if since >= config.early_stopping_patience:
            return ""
    else:
        recent, before = values[-1], values[max(0, len(values) - 4)]
        if sign * (before - recent) <= 1e-3 * abs(before):
            return ""
        since = 0
    when = "at the last evaluation" if since == 0 else f"{since} evaluation{'s' * (since > 1)} before the end"
    budgets = {
        "max_epochs": "--max-epochs",
        "max_updates": "--max-updates",
        "max_samples": "--max-samples",
        "max_seconds": "--max-seconds",
    }
    set_ = [f"{k}={getattr(config, k):g}" for k in budgets if getattr(config, k) is not None]
    flags = "/".join(budgets[k] for k in budgets if getattr(config, k) is not None)
    return (
        f"{metric} was still improving (best {when}) when the budget ({', '.join(set_)}) ran out. "
        f"Fix: a larger budget ({flags}) may give a better model."
    )
