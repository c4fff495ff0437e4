"""The functions `import cadence` exposes: train, train_ensemble and compare as the engine and comparison
define them, plus what needs a higher layer (`verbose=`: a progress bar; compare's grid as keywords).

Arguments follow one order everywhere: (model, data, config, *, ..., **overrides).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cadence.callbacks import Progress
from cadence.comparison import CompareConfig, CompareResult, build_compare_config
from cadence.comparison import compare as run_comparison
from cadence.config import RunConfig
from cadence.data.datasets import Dataset
from cadence.engine import Callback, EnsembleRun, Run
from cadence.engine import train as engine_train
from cadence.engine import train_ensemble as engine_train_ensemble
from cadence.engine.loop import as_dataset, resolve_config
from cadence.errors import ConfigError


def train(
    model=None,
    data=None,
    config: RunConfig | dict | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    verbose: bool = False,
    **kwargs: Any,
) -> Run:
    """Train one model; `verbose=True` adds a progress bar on stderr. Every other argument is
    `cadence.engine.train`'s, documented below."""
    callbacks = [*callbacks, Progress()] if verbose else list(callbacks)
    return engine_train(model, data, config, callbacks=callbacks, **kwargs)


def train_ensemble(
    model=None,
    data=None,
    config: RunConfig | dict | None = None,
    *,
    verbose: bool = False,
    **kwargs: Any,
) -> EnsembleRun:
    """Train an ensemble; `verbose=True` shows one progress bar per member. Every other argument is
    `cadence.engine.train_ensemble`'s, documented below."""
    if verbose:
        kwargs["callbacks_for"] = lambda i: [Progress(f"member {i}")]
    return engine_train_ensemble(model, data, config, **kwargs)


train.__doc__ = f"{train.__doc__}\n\n{engine_train.__doc__}"
train_ensemble.__doc__ = f"{train_ensemble.__doc__}\n\n{engine_train_ensemble.__doc__}"


def compare(
    model: str | None = None,
    data: Dataset | tuple | str | None = None,
    config: RunConfig | dict | None = None,
    *,
    strategies: Sequence[str | dict] | None = None,
    optimizers: Sequence[str | dict] | None = None,
    schedules: Sequence[str | dict] | None = None,
    seeds: int | Sequence[int] | None = None,
    budget: dict | None = None,
    goal: float | None = None,
    goal_metric: str | None = None,
    workers: int | None = None,
    settings: CompareConfig | None = None,
    verbose: bool = False,
    **overrides: Any,
) -> CompareResult:
    """Train every strategy x optimizer x schedule x seed under one budget; return the tidy result.

    Args:
        model, data, config, overrides: the run every job starts from, as for `train` (a model spec, not a
            module: each job builds its own). Data given as arrays, a Dataset or torch data is split once
            and shared by every seed; a name or None lets each seed split the data its own way.
        strategies, optimizers, schedules, seeds, budget, goal, goal_metric, workers: the grid, as in the
            YAML `compare:` section (`strategies=["online", "mini-batch:32"]`, `optimizers=["sgd",
            "adam:0.001"]`, `seeds=3`, `budget={"samples": 12570}`); defaults as `cadence compare`.
        settings: a ready CompareConfig instead of those keywords.
        verbose: the live display of runs done, running and left (on stderr).

    Raises:
        ConfigError, DataError: before any run starts.
    """
    grid = {
        "strategies": strategies,
        "optimizers": optimizers,
        "schedules": schedules,
        "seeds": seeds,
        "budget": budget,
        "goal": goal,
        "goal_metric": goal_metric,
        "workers": workers,
    }
    grid = {k: list(v) if isinstance(v, list | tuple) else v for k, v in grid.items() if v is not None}
    if settings is not None and grid:
        raise ConfigError(f"compare() got settings= and {', '.join(grid)}. Fix: pass one or the other.")
    settings = settings or build_compare_config(grid, source="compare() arguments")
    if isinstance(model, str):
        overrides = {**overrides, "model.spec": model}
    if isinstance(data, str):
        overrides, data = {**overrides, "data.name": data}, None
    base = resolve_config(config, overrides, caller="compare()")
    shared = None if data is None else as_dataset(data, base)
    return run_comparison(base, settings, data=shared, live=verbose)
