"""First version of the comparison: the same model and data under full-batch, mini-batch and online."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cadence.config import RunConfig, Strategy
from cadence.data.datasets import Dataset, load_data
from cadence.engine import Run, train

# Plain SGD step sizes that work for standardized inputs: full-batch can take large steps on the exact
# gradient; one noisy sample per update needs a small one.
DEFAULT_LRS = {Strategy.FULL_BATCH: 0.5, Strategy.MINI_BATCH: 0.05, Strategy.ONLINE: 0.005}


def compare_strategies(
    config: RunConfig,
    strategies: Sequence[Strategy] = tuple(DEFAULT_LRS),
    lrs: dict[Strategy, float] | None = None,
    data: Dataset | None = None,
    callbacks_for: Callable[[Strategy], list] | None = None,
) -> list[Run]:
    """Train the same model (same seed, same init) once per strategy under `config`'s budget.

    `lrs` maps a strategy to its learning rate; a strategy not in it uses `config.optimizer.lr` if the user
    set it explicitly, else DEFAULT_LRS.
    """
    data = data or load_data(config.data, seed=config.seed)
    runs = []
    for strategy in strategies:
        lr = (lrs or {}).get(strategy, DEFAULT_LRS[strategy])
        cfg = config.with_overrides({"strategy.name": strategy, "optimizer.lr": lr})
        runs.append(train(None, data, cfg, callbacks=callbacks_for(strategy) if callbacks_for else ()))
    return runs
