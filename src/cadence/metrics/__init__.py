"""Evaluation metrics over scikit-learn. A leaf: imports nothing else from cadence."""

from cadence.metrics.classification import classification_metrics, confusion
from cadence.metrics.regression import regression_metrics

__all__ = ["classification_metrics", "confusion", "regression_metrics"]
