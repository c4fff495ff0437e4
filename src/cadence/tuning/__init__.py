"""Tuning with evidence: the learning-rate range test, batch-size advice from the gradient noise scale, and an
Optuna search over a declared space (cross-validation, pruning, journal or PostgreSQL storage, many workers)."""

from cadence.tuning.lr_range import LRRangeResult, lr_range_test, suggest_lr

__all__ = ["LRRangeResult", "lr_range_test", "suggest_lr"]
