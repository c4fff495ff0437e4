"""Tuning with evidence: the learning-rate range test (lr_range.py), batch-size advice from the gradient noise
scale (batch_size.py), and an Optuna search over a declared space (space.py, search.py, storage.py: folds,
pruning, journal or PostgreSQL storage, several workers). Optuna is imported only by the search."""

from cadence.tuning.batch_size import BatchSizeAdvice, advise_batch_size, gradient_noise_scale
from cadence.tuning.lr_range import LRRangeResult, lr_range_test, suggest_lr

_SEARCH = {"tune": "search", "TuneResult": "search", "TuneConfig": "space", "load_tune_file": "space"}


def __getattr__(name: str):
    # The search imports Optuna (and SQLAlchemy); `cadence compare` uses only the range test.
    if name in _SEARCH:
        import importlib

        return getattr(importlib.import_module(f"cadence.tuning.{_SEARCH[name]}"), name)
    raise AttributeError(f"module 'cadence.tuning' has no attribute {name!r}")


__all__ = [
    "BatchSizeAdvice",
    "LRRangeResult",
    "TuneConfig",
    "TuneResult",
    "advise_batch_size",
    "gradient_noise_scale",
    "load_tune_file",
    "lr_range_test",
    "suggest_lr",
    "tune",
]
