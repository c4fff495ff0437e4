"""Compare strategies (and later optimizers, schedules) on the same model, data and budget."""

from cadence.compare.strategies import DEFAULT_LRS, compare_strategies

__all__ = ["DEFAULT_LRS", "compare_strategies"]
