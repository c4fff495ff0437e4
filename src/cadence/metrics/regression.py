"""Regression metrics: MSE, MAE, R2 (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Mean squared error, mean absolute error and R2 (R2 is NaN for fewer than two samples)."""
    if len(y_true) == 0:
        return {}
    if not np.isfinite(y_pred).all():  # a diverged model: sklearn refuses inf, the errors are unbounded
        return {"mse": float("inf"), "mae": float("inf"), "r2": float("-inf") if len(y_true) > 1 else float("nan")}
    out = {
        "mse": float(mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
    }
    out["r2"] = float(r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan")
    return out
