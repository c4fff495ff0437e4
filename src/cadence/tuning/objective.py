"""One trial's objective: the run config with the trial's parameters and seed, trained on the validation
split or on k folds, its running score reported to the pruner at every epoch end (and at every fold end)."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import numpy as np
import optuna
import torch

from cadence.config import RunConfig
from cadence.data.datasets import Dataset
from cadence.engine import Callback, TrainState, train
from cadence.errors import ConfigError
from cadence.tuning.space import TuneConfig, apply_params, suggest


def default_metric(task: str) -> str:
    return "val_accuracy" if task == "classification" else "val_r2"


def make_folds(data: Dataset, k: int, seed: int) -> list[Dataset]:
    """The data each trial trains on: [data] for k = 1, else k folds over train + validation together
    (scikit-learn's StratifiedKFold for classification, KFold for regression), the same for every trial.

    The folds keep the split's standardization, fitted on its training part; the test split is left out.
    """
    empty = {"x_test": data.x_test[:0], "y_test": data.y_test[:0]}
    if k == 1:
        return [replace(data, **empty)]
    from sklearn.model_selection import KFold, StratifiedKFold

    x, y = torch.cat([data.x_train, data.x_val]), torch.cat([data.y_train, data.y_val])
    if len(x) < 2 * k:
        raise ConfigError(f"tune.folds = {k} needs at least {2 * k} samples; got {len(x)}. Fix: lower folds.")
    splitter = (
        StratifiedKFold(k, shuffle=True, random_state=seed)
        if data.task == "classification"
        else KFold(k, shuffle=True, random_state=seed)
    )
    index = np.zeros(len(x)) if data.task != "classification" else y.numpy()
    folds = []
    for train_idx, val_idx in splitter.split(np.zeros(len(x)), index):
        tr, va = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
        folds.append(replace(data, x_train=x[tr], y_train=y[tr], x_val=x[va], y_val=y[va], **empty))
    return folds


class _Report(Callback):
    """Reports the running mean of the fold scores to the trial at every epoch end, and prunes.

    Issue 4373 (Optuna's maintainers): report the mean over the folds done so far, never a raw fold score,
    which rises and falls from fold to fold. Within fold f the current fold's latest value stands in for its
    score, at step f * epochs + epoch, so step f * epochs + epochs - 1 (reported by the objective from the
    fold's final score) is exactly the running mean after fold f, and every step compares like with like
    across trials. Without an epoch budget only fold ends are reported, at step = fold.
    """

    def __init__(self, trial: optuna.Trial, fold: int, scores: list[float], epochs: int | None, metric: str):
        self.trial, self.fold, self.scores, self.epochs, self.metric = trial, fold, scores, epochs, metric

    def on_epoch_end(self, state: TrainState) -> None:
        epoch = state.epochs_done
        if self.epochs is None or epoch >= self.epochs:  # the fold's last epoch: the objective reports it
            return None
        value = state.history[-1].get(self.metric) if state.history else None
        if value is None or not math.isfinite(value):
            return None
        running = (sum(self.scores) + value) / (len(self.scores) + 1)
        self.trial.report(running, self.fold * self.epochs + epoch - 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"fold {self.fold + 1}, epoch {epoch}: running mean {self.metric} {running:.4g}"
            )
        return None


class Objective:
    """One trial: suggest parameters, train each fold, return the mean fold score."""

    def __init__(self, base: RunConfig, settings: TuneConfig, data: Dataset, metric: str):
        self.base, self.settings, self.metric = base, settings, metric
        self.folds = make_folds(data, settings.folds, base.seed)
        stop = base.stop
        self.epochs = stop.max_epochs if not (stop.max_updates or stop.max_samples) else None

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.settings.space, self.base)
        # Every trial trains with the run's seed (recorded with it; a retry keeps it, user attrs are copied):
        # trials then differ only by their parameters, and best.yaml, which `cadence train` splits with its
        # seed, gets the same split and initial weights as the trial it came from.
        seed = trial.user_attrs.get("seed", self.base.seed)
        trial.set_user_attr("seed", seed)
        config = apply_params(self.base, params, seed)
        scores: list[float] = []
        reasons: list[str] = []
        for fold, data in enumerate(self.folds):
            run = train(None, data, config, callbacks=[_Report(trial, fold, scores, self.epochs, self.metric)])
            value = run.val_metrics.get(self.metric, math.nan)
            reasons.append(run.stop_reason.value)
            trial.set_user_attr("stop_reasons", reasons)
            if not math.isfinite(value):
                raise optuna.TrialPruned(f"fold {fold + 1}: {self.metric} is {value} ({run.stop_reason.value})")
            scores.append(value)
            trial.set_user_attr("fold_scores", scores)
            step = fold if self.epochs is None else fold * self.epochs + self.epochs - 1
            trial.report(statistics.fmean(scores), step)
            if fold < len(self.folds) - 1 and trial.should_prune():
                raise optuna.TrialPruned(
                    f"after fold {fold + 1}: running mean {self.metric} {statistics.fmean(scores):.4g}"
                )
        return statistics.fmean(scores)


__all__ = ["Objective", "default_metric", "make_folds"]
