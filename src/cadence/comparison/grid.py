"""The grid of a comparison: one Job per (strategy, optimizer, schedule, seed), each with a full RunConfig.

Owns how a budget mode becomes each run's stop budget; an optimizer without an lr gets config.DEFAULT_LRS'
(the default lr of each optimizer under each strategy, shared with single runs). Running the jobs is
runner.py's; summarizing them is results.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

from cadence.comparison.config import BudgetConfig, CompareConfig, StrategyChoice
from cadence.config import (
    DEFAULT_LRS,
    OptimizerConfig,
    RunConfig,
    ScheduleConfig,
    StopConfig,
    Strategy,
    build_config,
)
from cadence.engine.budget import budget_updates, updates_per_epoch


@dataclass(frozen=True)
class Job:
    """One run of the grid. `group` indexes its configuration (the same for every seed)."""

    index: int
    group: int
    label: str
    strategy: str
    batch_size: int | None
    optimizer: str
    schedule: str
    lr: float
    seed: int
    config: RunConfig

    def describe(self) -> dict:
        """The grid coordinates, as stored with each result."""
        return {
            "index": self.index,
            "group": self.group,
            "label": self.label,
            "strategy": self.strategy,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "lr": self.lr,
            "seed": self.seed,
        }


def default_lr(strategy: Strategy, optimizer: OptimizerConfig) -> float:
    """The optimizer's own lr if it was written in the config, else DEFAULT_LRS for the strategy (the
    table lives in config.py: a run's unset lr takes the same value)."""
    if "lr" in optimizer.model_fields_set and optimizer.lr is not None:
        return optimizer.lr
    return DEFAULT_LRS[strategy][optimizer.name]


def batch_of(choice: StrategyChoice, base: RunConfig, n_train: int) -> int:
    """Samples per update: all of them (full-batch), one (online), or the mini-batch size."""
    if choice.name == Strategy.FULL_BATCH:
        return n_train
    if choice.name == Strategy.ONLINE:
        return 1
    return choice.batch_size or base.strategy.batch_size


def budget_stop(budget: BudgetConfig) -> dict:
    """The stop budget of every run: the chosen one set, every other budget cleared."""
    return {
        "max_epochs": budget.epochs,
        "max_samples": budget.samples,
        "max_updates": budget.updates,
        "max_seconds": budget.seconds,
    }


def eval_every_updates(config: RunConfig, n_train: int, cc: CompareConfig) -> int:
    """Evaluate about `evals_per_run` times over the run (the loop also evaluates at each epoch end)."""
    expected = budget_updates(config, n_train)
    if expected is None:  # a seconds budget: the number of updates is unknown, four evaluations per epoch
        return max(1, updates_per_epoch(config.strategy, n_train) // 4)
    return max(1, expected // cc.evals_per_run)


def _strategy_label(choice: StrategyChoice, batch: int) -> str:
    return f"mini-batch {batch}" if choice.name == Strategy.MINI_BATCH else choice.name.value


def build_grid(base: RunConfig, cc: CompareConfig, n_train: int, threads: int | None = None) -> list[Job]:
    """Every (strategy, optimizer, schedule) configuration times every seed, in that nesting order.

    Each job's config is `base` with the strategy, optimizer (lr from `default_lr`), schedule, seed,
    stop budget and evaluation cadence replaced, checked again by pydantic.

    Raises:
        ConfigError: a combination the run config rejects.
    """
    cells: list[tuple[StrategyChoice, OptimizerConfig, ScheduleConfig, float, int, str]] = []
    for choice in cc.strategies:
        batch = batch_of(choice, base, n_train)
        for opt in cc.optimizers:
            for sched in cc.schedules:
                label = f"{_strategy_label(choice, batch)} + {opt.name}"
                if len(cc.schedules) > 1 or sched.name != "constant":
                    label += f" + {sched.name}"
                cells.append((choice, opt, sched, default_lr(choice.name, opt), batch, label))
    labels = [c[-1] for c in cells]
    jobs = []
    for group, (choice, opt, sched, lr, batch, label) in enumerate(cells):
        if labels.count(label) > 1:  # the same optimizer listed with two lrs
            label = f"{label} (lr {lr:g})"
        for seed in cc.seeds:
            tree = base.model_dump(mode="python")
            tree["strategy"]["name"] = choice.name
            if choice.name == Strategy.MINI_BATCH:
                tree["strategy"]["batch_size"] = batch
            tree["optimizer"] = {**opt.model_dump(mode="python"), "lr": lr}
            tree["schedule"] = sched.model_dump(mode="python")
            tree["stop"].update(budget_stop(cc.budget))
            if base.stop.early_stopping_metric == StopConfig().early_stopping_metric:
                # Runs compared under one budget all use it: the single-run default early stopping is off
                # (set stop.early_stopping_metric to another metric to compare with early stopping).
                tree["stop"]["early_stopping_metric"] = None
            tree["seed"] = seed
            if threads is not None:
                tree["threads"] = threads
            source = f"comparison grid ({label}, seed {seed})"
            config = build_config(tree, source=source)
            tree["eval"]["every_updates"] = eval_every_updates(config, n_train, cc)
            config = build_config(tree, source=source)
            jobs.append(
                Job(
                    index=len(jobs),
                    group=group,
                    label=label,
                    strategy=choice.name.value,
                    batch_size=batch if choice.name == Strategy.MINI_BATCH else None,
                    optimizer=opt.name,
                    schedule=sched.name,
                    lr=lr,
                    seed=seed,
                    config=config,
                )
            )
    return jobs


def expected_updates(job: Job, n_train: int) -> int | None:
    """Updates the run's budget allows, when known in advance (all modes but seconds)."""
    return budget_updates(job.config, n_train)


__all__ = ["DEFAULT_LRS", "Job", "budget_stop", "build_grid", "default_lr", "expected_updates"]
