"""Workers on one study: the exact trial budget (count and start under one lock), waiting for trials in
flight elsewhere, the samplers and pruners, and the worker processes `tune(workers=N)` starts."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from cadence.config import RunConfig
from cadence.data.datasets import load_data
from cadence.engine.evaluate import lower_is_better
from cadence.errors import ConfigError
from cadence.tuning.objective import Objective
from cadence.tuning.space import TuneConfig
from cadence.tuning.storage import OWNER, StudyStorage, open_storage, this_worker

FORMAT = "cadence-tune/1"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
IN_FLIGHT = (TrialState.RUNNING, TrialState.WAITING)


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
    # Multivariate TPE models the parameters jointly (lr and batch size interact); `group` lets it do so
    # over conditional spaces (`when`, per-layer widths). Both are experimental in Optuna 5.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=settings.startup_trials, multivariate=True, group=True
        )


def _pruner(settings: TuneConfig, base: RunConfig) -> optuna.pruners.BasePruner:
    if settings.pruner == "median":
        # Not at the first epochs: with a cosine or warm-up schedule the early accuracy says little about the
        # last (a Fashion-MNIST study pruned half its trials after one or two epochs of ten).
        warmup = settings.pruner_warmup
        if warmup is None:
            warmup = max(1, (base.stop.max_epochs or 3) // 3)
        return optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials, n_warmup_steps=warmup)
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
        pruner=_pruner(settings, base),
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
    storage = open_handle(settings, storage_url, study_name)
    try:
        study = open_study(base, settings, storage, study_name, metric, seed)
        data = data if data is not None else load_data(base.data, seed=base.seed)
        run_worker(study, Objective(base, settings, data, metric), storage, settings, on_trial=printer(verbose))
    finally:
        storage.close()


def open_handle(settings: TuneConfig, url, study_name: str) -> StudyStorage:
    return open_storage(
        url,
        study_name,
        heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.grace,
        max_retry=settings.max_retries,
    )


def printer(verbose: bool):
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


def run_processes(base, settings, data, url, study_name, metric, workers, seeded, verbose) -> list[int | None]:
    # forkserver where available (as compare's runner): the server imports torch and cadence once and forks
    # each worker from that; never a plain fork of this process, whose torch thread pools would not survive.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["cadence.tuning.workers"])
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


__all__ = ["budget_state", "open_handle", "open_study", "printer", "run_processes", "run_worker"]
