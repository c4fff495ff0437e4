"""tune(): an Optuna study over a declared space. Each trial trains the run config with the trial's
parameters and seed on the validation split or k folds, reporting to a median or successive-halving pruner;
workers (processes here, or other machines on PostgreSQL) share one study and its trial budget. At the end
the best config is trained once more and only then evaluated on the test split.

The space is space.py's, a trial objective.py's, the workers and the budget workers.py's, storages and
dead-worker recovery storage.py's; plots and the report are reports/tuning.py's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from cadence.config import RunConfig, build_config
from cadence.data.datasets import Dataset, load_data
from cadence.engine import Run, train
from cadence.engine.evaluate import metric_names
from cadence.engine.loop import prepare
from cadence.errors import ConfigError
from cadence.tuning.objective import Objective, default_metric
from cadence.tuning.space import TuneConfig, apply_params, check_space
from cadence.tuning.storage import OWNER
from cadence.tuning.workers import (
    FORMAT,
    budget_state,
    open_handle,
    open_study,
    printer,
    run_processes,
    run_worker,
)


@dataclass
class TuneResult:
    """A finished study: every trial, the best one, and the final run: `best_config` is that run's config
    (the best trial's parameters and seed; with refit, data.val_fraction 0), ready for `cadence train`."""

    study_name: str
    storage: str
    metric: str
    direction: str
    trials: list[dict]
    best: dict | None
    best_config: RunConfig | None
    final: Run | None = None
    meta: dict = field(default_factory=dict)
    study: optuna.Study | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary (what summary.json holds)."""
        final = self.final.summary() if self.final is not None else None
        return {
            "format": FORMAT,
            "study": self.study_name,
            "storage": self.storage,
            "metric": self.metric,
            "direction": self.direction,
            "best": self.best,
            "best_config": self.best_config.model_dump(mode="json") if self.best_config else None,
            "final": final,
            "trials": self.trials,
            **self.meta,
        }


def trial_records(study: optuna.Study) -> list[dict]:
    """One JSON-ready record per trial: state, value, parameters, seed, fold scores, worker, retry of."""
    out = []
    for t in study.get_trials(deepcopy=False):
        owner = t.user_attrs.get(OWNER) or {}
        out.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value if t.value is not None and math.isfinite(t.value) else None,
                "params": dict(t.params),
                "seed": t.user_attrs.get("seed"),
                "fold_scores": t.user_attrs.get("fold_scores"),
                "stop_reasons": t.user_attrs.get("stop_reasons"),
                "seconds": t.duration.total_seconds() if t.duration else None,
                "worker": owner.get("pid"),
                "retry_of": t.system_attrs.get("failed_trial"),
                "error": t.user_attrs.get("error"),
                "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            }
        )
    return out


def tune(
    config: RunConfig | dict | None = None,
    settings: TuneConfig | dict | None = None,
    *,
    data: Dataset | None = None,
    storage: str | Path | None = None,
    study_name: str = "cadence",
    workers: int = 1,
    seeded: bool | None = None,
    verbose: bool = False,
) -> TuneResult:
    """Search `settings.space` over `config` with Optuna; return every trial and the best config's test run.

    Every trial trains `config` with its parameters (and the run's seed); the pruner sees the validation
    metric at each epoch end. At the end (`settings.final`) the best trial's parameters are trained once
    more, on train + validation when `settings.refit` and the config reads no validation metric, else on
    the train split; that run is the only one evaluated on the test split.

    Args:
        config: the run every trial starts from (data, model, budget, ...).
        settings: a TuneConfig (or dict of the YAML `tune:` section).
        data: a Dataset for every trial; None loads `config.data` (seed `config.seed`).
        storage: None (in memory; one worker), a journal file path, postgresql://... or sqlite:///...
        study_name: the study in `storage`; another invocation with the same storage and name joins it.
        workers: worker processes started here, all on `storage` (journal or PostgreSQL when > 1).
        seeded: seed the samplers (default: unless `storage` was given, which others may share).

    Raises:
        ConfigError, DataError: bad settings, space or data, before the first trial.
    """
    base = config if isinstance(config, RunConfig) else build_config(config)
    if not isinstance(settings, TuneConfig):
        from cadence.tuning.space import build_tune_config

        settings = build_tune_config(settings)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1; got {workers}.")
    probe = data if data is not None else load_data(base.data, seed=base.seed)
    metric = _check(base, settings, probe)
    handle = open_handle(settings, storage, study_name)
    if workers > 1 and not handle.shared:
        handle.close()
        raise ConfigError(
            f"{workers} workers need a storage they can share; got {handle.url} "
            f"({'SQLite locks under parallel writers' if handle.kind == 'sqlite' else 'in memory'}). "
            "Fix: pass a journal file (storage='study.journal') or a postgresql:// URL."
        )
    seeded = storage is None if seeded is None else seeded
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    if base.threads is None:
        # One torch thread per worker, as compare does: on a busy 2-core machine a second intra-op thread
        # made 10-epoch digits trials 10x slower (13.5 s against 1.3 s); workers give the parallelism.
        torch.set_num_threads(1)
    try:
        study = open_study(base, settings, handle, study_name, metric, base.seed if seeded else None)
        exit_codes = []
        if workers == 1:
            run_worker(
                study, Objective(base, settings, probe, metric), handle, settings, on_trial=printer(verbose)
            )
        else:
            exit_codes = run_processes(
                base, settings, data, handle.url, study_name, metric, workers, seeded, verbose
            )
            finished, _ = budget_state(study)
            if settings.trials is not None and finished < settings.trials and not settings.seconds:
                # every worker died before the budget was spent: finish here (recovering their trials)
                run_worker(
                    study, Objective(base, settings, probe, metric), handle, settings, on_trial=printer(verbose)
                )
        search_seconds = time.perf_counter() - t0
        result = _summarize(study, base, settings, handle, metric, probe, data is not None)
    finally:
        handle.close()
        torch.set_num_threads(threads)
    result.meta.update(
        {
            **result.meta,
            "created": started,
            "search_seconds": round(search_seconds, 3),
            "workers": workers,
            "worker_exit_codes": exit_codes,
            "settings": settings.model_dump(mode="json"),
            "config": base.model_dump(mode="json"),
            "data": {"name": probe.name, "description": probe.describe(), "task": probe.task},
        }
    )
    return result


def _check(base: RunConfig, settings: TuneConfig, probe: Dataset) -> str:
    metric = settings.metric or default_metric(probe.task)
    allowed = metric_names(probe.task)
    if metric not in allowed:
        raise ConfigError(
            f"tune.metric = {metric!r} is not a validation metric of this {probe.task} task. "
            f"Allowed: {', '.join(allowed)}."
        )
    if settings.folds == 1 and len(probe.x_val) == 0:
        raise ConfigError(
            "tuning scores trials on the validation split, but data.val_fraction is 0. "
            "Fix: set data.val_fraction > 0, or tune.folds >= 2."
        )
    check_space(base, settings)
    prepare(None, probe, base)  # the model builds and fits the data
    return metric


def _summarize(study, base, settings, handle, metric, probe, given: bool) -> TuneResult:
    trials = trial_records(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = best_config = final = None
    notes: list[str] = []
    if complete:
        best_trial = study.best_trial
        seed = best_trial.user_attrs.get("seed", base.seed)
        trial_config = apply_params(base, dict(best_trial.params), seed)
        best = {
            "number": best_trial.number,
            "value": best_trial.value,
            "params": dict(best_trial.params),
            "seed": seed,
            "trial_config": trial_config.model_dump(mode="json"),
        }
        best_config, data, note = _final_setup(trial_config, settings, probe, given)
        notes += [note] if note else []
        if settings.final:
            # The only time the test split is looked at: the best config, trained once more.
            final = train(None, data, best_config)
    return TuneResult(
        study_name=study.study_name,
        storage=handle.url,
        metric=metric,
        direction=study.direction.name.lower(),
        trials=trials,
        best=best,
        best_config=best_config,
        final=final,
        meta={"notes": notes, "refit": best_config is not None and best_config.data.val_fraction == 0},
        study=study,
    )


def _final_setup(config: RunConfig, settings: TuneConfig, probe: Dataset, given: bool):
    """(config, data, note) of the final run. With refit (scikit-learn's convention) the validation split
    joins the training data: the config sets data.val_fraction 0, so `cadence train -c best.yaml` loads the
    same train + validation set (the test split is drawn first, so it stays the same test split)."""
    if not settings.refit:
        return config, probe, None
    needs = config.stop.early_stopping_metric or config.schedule.name == "plateau" or config.schedule.plateau
    if needs:
        return config, probe, "the final run keeps the validation split: the config reads validation metrics"
    if given:
        return config, probe, "the final run keeps the validation split: data was passed in, not loaded"
    refit = config.with_overrides({"data.val_fraction": 0.0})
    return refit, load_data(refit.data, seed=refit.seed), None


__all__ = ["TuneResult", "trial_records", "tune"]
