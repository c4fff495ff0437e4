"""tune(): an Optuna study over a declared space. Each trial trains the run config with the trial's
parameters and seed on the validation split or k folds, reporting to a median or successive-halving pruner;
workers (processes here, or other machines on PostgreSQL) share one study and its trial budget. At the end
the best config is trained once more and only then evaluated on the test split.

The space and its checks are space.py's, storages and dead-worker recovery storage.py's, plots and the
report reports/tuning.py's.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from cadence.config import RunConfig, build_config
from cadence.data.datasets import Dataset, load_data
from cadence.engine import Callback, Run, TrainState, train
from cadence.engine.evaluate import lower_is_better, metric_names
from cadence.engine.loop import prepare
from cadence.errors import ConfigError
from cadence.tuning.space import TuneConfig, apply_params, check_space, suggest
from cadence.tuning.storage import OWNER, StudyStorage, open_storage, this_worker

FORMAT = "cadence-tune/1"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
IN_FLIGHT = (TrialState.RUNNING, TrialState.WAITING)


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
    """One trial: suggest parameters, train each fold with the trial's seed, return the mean fold score."""

    def __init__(self, base: RunConfig, settings: TuneConfig, data: Dataset, metric: str):
        self.base, self.settings, self.metric = base, settings, metric
        self.folds = make_folds(data, settings.folds, base.seed)
        stop = base.stop
        self.epochs = stop.max_epochs if not (stop.max_updates or stop.max_samples) else None

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.settings.space, self.base)
        seed = trial.user_attrs.get("seed")  # a retried trial keeps its seed (user attrs are copied)
        if seed is None:
            seed = self.base.seed + trial.number
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


def budget_state(study: optuna.Study) -> tuple[int, int]:
    """(finished, in flight) trials counted against the budget.

    Finished: complete, pruned, and failed unless it was queued again (a dead worker's trial retried: the
    copy counts instead). In flight: running and waiting (queued retries).
    """
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    finished = sum(t.state in COUNTED or (t.state == TrialState.FAIL and t.number not in retried) for t in trials)
    return finished, sum(t.state in IN_FLIGHT for t in trials)


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    storage: StudyStorage,
    settings: TuneConfig,
    *,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    poll_seconds: float = 0.5,
) -> int:
    """Run trials until the study's budget is spent; return how many this worker ran.

    With the lock held: recover dead workers' trials, count, and if the budget allows, let Optuna create
    the next trial (or take a queued retry); the lock is released once the trial has recorded its worker,
    so no two workers can both take the last slot (Optuna's MaxTrialsCallback counts after the fact and
    overshoots by up to one trial per worker). A worker whose remaining slots are all in flight elsewhere
    waits, recovering as it goes, so a worker killed mid-trial costs a retry, never a lost trial.
    """
    start, ran = time.monotonic(), 0
    held = False

    def started(trial: optuna.Trial) -> float:
        nonlocal held
        trial.set_user_attr(OWNER, this_worker())
        storage.lock.release()
        held = False
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            raise

    callbacks = [on_trial] if on_trial else []
    while settings.seconds is None or time.monotonic() - start < settings.seconds:
        storage.lock.acquire()
        held = True
        try:
            storage.recover(study)
            finished, in_flight = budget_state(study)
            if settings.trials is not None and finished >= settings.trials:
                return ran
            if settings.trials is None or finished + in_flight < settings.trials or _queued(study):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.optimize(started, n_trials=1, catch=(Exception,), callbacks=callbacks)
                ran += 1
                continue
        finally:
            if held:
                storage.lock.release()
                held = False
        time.sleep(poll_seconds)  # every open slot is running elsewhere: wait for it to finish or die
    return ran


def _queued(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _sampler(settings: TuneConfig, seed: int | None) -> optuna.samplers.BaseSampler:
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.startup_trials)


def _pruner(settings: TuneConfig) -> optuna.pruners.BasePruner:
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials, n_warmup_steps=1)
    if settings.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def open_study(
    base: RunConfig, settings: TuneConfig, storage: StudyStorage, name: str, metric: str, seed: int | None
) -> optuna.Study:
    """Create the study or join it; a study made with other settings is refused.

    Raises:
        ConfigError: the study exists with a different run config, space or metric.
    """
    direction = "minimize" if lower_is_better(metric) else "maximize"
    study = optuna.create_study(
        storage=storage.storage,
        study_name=name,
        direction=direction,
        sampler=_sampler(settings, seed),
        pruner=_pruner(settings),
        load_if_exists=True,
    )
    # What makes trials comparable; the budget and the storage settings may differ between invocations.
    searched = settings.model_dump(mode="json", include={"space", "folds", "metric"})
    ours = {"config": base.model_dump(mode="json"), "tune": searched, "metric": metric}
    theirs = study.user_attrs.get("cadence")
    if theirs is None:
        study.set_user_attr("cadence", ours)
        study.set_user_attr("format", FORMAT)
    elif theirs != ours or study.direction.name.lower() != direction:
        raise ConfigError(
            f"study {name!r} in {storage.url} was made with other settings (run config, space or metric). "
            "Fix: use a new --study name, or the same config file."
        )
    return study


def _worker_seed(index: int, base_seed: int, shared: bool) -> int | None:
    """Sampler seed of a worker: base seed + index in a private storage (reproducible with one worker);
    none in a named shared storage, where other invocations seeded alike would propose the same trials."""
    return None if shared else base_seed + 7919 * index


def _worker_main(base, settings, data, storage_url, study_name, metric, seed, verbose) -> None:
    """Entry point of a worker process (spawned): open the study and run trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if base.threads is None:
        torch.set_num_threads(1)  # parallelism comes from the workers
    storage = _open(settings, storage_url, study_name)
    try:
        study = open_study(base, settings, storage, study_name, metric, seed)
        data = data if data is not None else load_data(base.data, seed=base.seed)
        run_worker(study, Objective(base, settings, data, metric), storage, settings, on_trial=_printer(verbose))
    finally:
        storage.close()


def _open(settings: TuneConfig, url, study_name: str) -> StudyStorage:
    return open_storage(
        url,
        study_name,
        heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.grace,
        max_retry=settings.max_retries,
    )


def _printer(verbose: bool):
    if not verbose:
        return None

    def show(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "" if trial.value is None else f" {trial.value:.4f}"
        seconds = f" [{trial.duration.total_seconds():.1f} s]" if trial.duration else ""
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        print(
            f"trial {trial.number} {trial.state.name.lower()}{value}{seconds} (pid {os.getpid()}): {params}",
            file=sys.stderr,
            flush=True,
        )

    return show


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@dataclass
class TuneResult:
    """A finished study: every trial, the best one as a ready-to-run config, and its test-split run."""

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
    handle = _open(settings, storage, study_name)
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
                study, Objective(base, settings, probe, metric), handle, settings, on_trial=_printer(verbose)
            )
        else:
            exit_codes = _run_processes(
                base, settings, data, handle.url, study_name, metric, workers, seeded, verbose
            )
            finished, _ = budget_state(study)
            if settings.trials is not None and finished < settings.trials and not settings.seconds:
                # every worker died before the budget was spent: finish here (recovering their trials)
                run_worker(
                    study, Objective(base, settings, probe, metric), handle, settings, on_trial=_printer(verbose)
                )
        search_seconds = time.perf_counter() - t0
        result = _summarize(study, base, settings, handle, metric, probe)
    finally:
        handle.close()
        torch.set_num_threads(threads)
    result.meta.update(
        {
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


def _run_processes(base, settings, data, url, study_name, metric, workers, seeded, verbose) -> list[int | None]:
    # forkserver where available (as compare's runner): the server imports torch and cadence once and forks
    # each worker from that; never a plain fork of this process, whose torch thread pools would not survive.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["cadence.tuning.search"])
    else:
        ctx = mp.get_context("spawn")
    procs = []
    for index in range(workers):
        seed = _worker_seed(index, base.seed, not seeded)
        args = (base, settings, data, url, study_name, metric, seed, verbose)
        procs.append(ctx.Process(target=_worker_main, args=args, name=f"cadence-tune-{index}"))
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return [p.exitcode for p in procs]


def _summarize(study, base, settings, handle, metric, probe) -> TuneResult:
    trials = trial_records(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = best_config = final = None
    if complete:
        best_trial = study.best_trial
        seed = best_trial.user_attrs.get("seed", base.seed + best_trial.number)
        best_config = apply_params(base, dict(best_trial.params), seed)
        best = {
            "number": best_trial.number,
            "value": best_trial.value,
            "params": dict(best_trial.params),
            "seed": seed,
        }
        if settings.final:
            # The only time the test split is looked at: the best config, trained once more on the train split.
            final = train(None, probe, best_config)
    return TuneResult(
        study_name=study.study_name,
        storage=handle.url,
        metric=metric,
        direction=study.direction.name.lower(),
        trials=trials,
        best=best,
        best_config=best_config,
        final=final,
        study=study,
    )


__all__ = [
    "Objective",
    "TuneResult",
    "budget_state",
    "make_folds",
    "open_study",
    "run_worker",
    "trial_records",
    "tune",
]
