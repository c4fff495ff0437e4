"""compare(): check everything, build the grid, run it, and return a CompareResult."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from rich.console import Console

from cadence.comparison.config import CompareConfig
from cadence.comparison.environment import environment, usable_cores
from cadence.comparison.grid import Job, build_grid
from cadence.comparison.results import CompareResult
from cadence.comparison.runner import LiveDisplay, run_jobs
from cadence.config import RunConfig, build_config
from cadence.data.datasets import Dataset, load_data
from cadence.engine.evaluate import metric_names
from cadence.engine.loop import prepare
from cadence.errors import ConfigError
from cadence.tuning.lr_range import lr_range_test


def compare(
    config: RunConfig | None = None,
    settings: CompareConfig | None = None,
    *,
    data: Dataset | None = None,
    live: bool = False,
    console: Console | None = None,
    on_result: Callable[[CompareResult], None] | None = None,
    meta: dict | None = None,
) -> CompareResult:
    """Train every (strategy, optimizer, schedule, seed) of `settings` under one budget; collect the runs.

    Args:
        config: the run settings every job starts from (data, model, ...); its budget is replaced.
        settings: the grid, budget, goal and worker count (defaults: CompareConfig()).
        data: a Dataset shared by every seed; None loads `config.data` with each seed's own split.
        live: show the live display of runs done, running and left (on stderr).
        on_result: called with the growing result after each finished run (e.g. to save it).
        meta: extra facts stored in results.json (e.g. the command line).

    Raises:
        ConfigError, DataError: before any run starts.
    """
    config = config or build_config()
    settings = settings or CompareConfig()
    probe = data if data is not None else load_data(config.data, seed=settings.seeds[0])
    allowed = metric_names(probe.task)
    if settings.goal_metric is not None and settings.goal_metric not in allowed:
        raise ConfigError(
            f"compare.goal_metric = {settings.goal_metric!r} is not a validation metric of this {probe.task} "
            f"task. Allowed: {', '.join(allowed)}."
        )
    if len(probe.x_val) == 0:
        raise ConfigError(
            "a comparison races every run to a validation goal, but data.val_fraction is 0. "
            "Fix: set data.val_fraction > 0."
        )
    prepare(None, probe, config)  # the model builds and fits the data
    n_train = len(probe.x_train)
    cores = usable_cores()
    n_jobs = len(settings.strategies) * len(settings.optimizers) * len(settings.schedules) * len(settings.seeds)
    workers = min(settings.workers or cores, n_jobs)
    # One torch thread per worker unless the run config says otherwise: parallelism comes from the workers,
    # and intra-op threads on a busy machine fall off a cliff (measured on 2 shared cores: 20 full-batch
    # epochs of digits took 0.31 s with 1 thread, 6.2 s with 2).
    threads = config.threads or 1
    jobs = build_grid(config, settings, n_train, threads=threads)
    lr_find = []
    if settings.tune_lr:
        jobs, lr_find = tune_lrs(jobs, probe, (console or Console(stderr=True)) if live else None)

    result = CompareResult(
        runs=[],
        meta={
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **(meta or {}),
            "data": {
                "name": probe.name,
                "task": probe.task,
                "n_classes": probe.n_classes,
                "input_shape": list(probe.input_shape),
                "n_train": n_train,
                "n_val": len(probe.x_val),
                "n_test": len(probe.x_test),
                "description": probe.describe(),
                "split": "shared by every seed" if data is not None else "each seed splits the data its own way",
            },
            "budget": {
                "mode": settings.budget.mode,
                "amount": settings.budget.amount,
                "description": settings.budget.describe(),
            },
            "workers": workers,
            "threads_per_worker": threads,
            "n_runs": len(jobs),
            "n_configurations": n_jobs // len(settings.seeds),
            "config": config.model_dump(mode="json"),
            "compare": settings.dump(),
            "environment": environment(),
            "interrupted": False,
            **({"lr_find": lr_find} if settings.tune_lr else {}),
        },
    )

    def collect(record: dict) -> None:
        result.runs.append(record)
        if on_result:
            on_result(result)

    title = (
        f"[bold]Comparing[/] {result.meta['n_configurations']} configurations × {len(settings.seeds)} seeds "
        f"on {probe.name} · {settings.budget.describe()} · {workers} worker{'s' if workers > 1 else ''}"
    )
    start = time.perf_counter()
    if live:
        with LiveDisplay(jobs, n_train, title, console) as display:
            records, interrupted = run_jobs(jobs, workers, data=data, display=display, on_result=collect)
    else:
        records, interrupted = run_jobs(jobs, workers, data=data, on_result=collect)
    result.runs = records
    result.meta["interrupted"] = interrupted
    result.meta["seconds"] = round(time.perf_counter() - start, 3)
    return result


def tune_lrs(jobs: list[Job], data: Dataset, console: Console | None = None) -> tuple[list[Job], list[dict]]:
    """Run the lr range test once per configuration (with its first seed's config) and give every run of
    that configuration the suggested lr; where the test suggests none, the default lr stays, and its record
    says why. Returns the new jobs and one record per configuration (LRRangeResult.to_dict() plus
    group, label, lr_used, default_lr)."""
    chosen: dict[int, float] = {}
    records = []
    for job in jobs:
        if job.group in chosen:
            continue
        found = lr_range_test(None, data, job.config)
        chosen[job.group] = found.suggestion if found.suggestion is not None else job.lr
        records.append(
            {
                **found.to_dict(),
                "group": job.group,
                "label": job.label,
                "lr_used": chosen[job.group],
                "default_lr": job.lr,
            }
        )
        if console is not None:
            console.print(f"lr-find {job.label}: {found.message}", highlight=False, soft_wrap=True)
    tuned = [
        replace(job, lr=chosen[job.group], config=job.config.with_overrides({"optimizer.lr": chosen[job.group]}))
        for job in jobs
    ]
    return tuned, records
