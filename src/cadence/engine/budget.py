"""The budget arithmetic in one place: samples per update, updates per epoch, the updates a run's epoch,
update and sample budgets allow, and how many updates may follow without passing them. Strategies, the loop,
the engines' run lengths, the progress bar, the schedule's default horizon and the comparison grid ask here.
"""

from __future__ import annotations

from cadence.config import RunConfig, Strategy, StrategyConfig


def micro_batch(strategy: StrategyConfig) -> int:
    """Samples per micro-batch: 1 for online (and stream), batch_size for mini-batch."""
    return strategy.batch_size if strategy.name == Strategy.MINI_BATCH else 1


def samples_per_update(strategy: StrategyConfig, n: int) -> int:
    """The most samples one update holds: n (full-batch), else micro-batch * accumulate, at most n."""
    if strategy.name == Strategy.FULL_BATCH:
        return n
    return min(n, micro_batch(strategy) * strategy.accumulate)


def samples_per_epoch(strategy: StrategyConfig, n: int) -> int:
    """Samples one epoch trains: n, less the last partial update when drop_last is set."""
    if strategy.name == Strategy.FULL_BATCH or not strategy.drop_last:
        return n
    return n - n % (micro_batch(strategy) * strategy.accumulate)


def updates_per_epoch(strategy: StrategyConfig, n: int) -> int:
    """Updates in one epoch: 1 (full-batch), else ceil(samples per epoch / samples per update)."""
    size = samples_per_update(strategy, n)
    return -(-samples_per_epoch(strategy, n) // size) if size else 0


def updates_for_samples(strategy: StrategyConfig, n: int, samples: int) -> int:
    """Updates from the start of the first epoch until `samples` samples are trained (every update of an
    epoch holds samples_per_update samples but its last, which holds the rest)."""
    per_epoch = samples_per_epoch(strategy, n)
    if samples <= 0 or per_epoch == 0:
        return 0
    epochs = (samples - 1) // per_epoch
    rest = samples - epochs * per_epoch  # 1 .. per_epoch samples into the last epoch
    return epochs * updates_per_epoch(strategy, n) + -(-rest // samples_per_update(strategy, n))


def budget_updates(config: RunConfig, n: int) -> int | None:
    """The updates the run's epoch, update and sample budgets allow (the smallest of them), or None when
    only max_seconds bounds the run. Exact for a run without skipped updates."""
    stop, strategy = config.stop, config.strategy
    bounds = []
    if stop.max_updates is not None:
        bounds.append(stop.max_updates)
    if stop.max_epochs is not None:
        bounds.append(stop.max_epochs * updates_per_epoch(strategy, n))
    if stop.max_samples is not None:
        bounds.append(updates_for_samples(strategy, n, stop.max_samples))
    return min(bounds) if bounds else None


def updates_left(config: RunConfig, n: int, updates: int, samples: int) -> int | None:
    """How many more updates can be applied without passing the update or sample budget, whatever they hold
    (each holds at most samples_per_update); None when neither budget is set. Epoch budgets are left to the
    runs, which end at each epoch end."""
    stop = config.stop
    bounds = []
    if stop.max_updates is not None:
        bounds.append(stop.max_updates - updates)
    if stop.max_samples is not None:
        size = max(1, samples_per_update(config.strategy, n))
        bounds.append(-(-(stop.max_samples - samples) // size))
    return max(0, min(bounds)) if bounds else None


def max_run(strategy: StrategyConfig) -> int | None:
    """The most updates one run may hold for this strategy, whatever the engine: one for stream (each sample
    is predicted with the weights of every update before it), unbounded otherwise."""
    return 1 if strategy.name == Strategy.STREAM else None
