"""Regression metrics: MSE, MAE, R2, as sklearn.metrics defines them (uniform average over outputs).

NumPy rather than sklearn.metrics for the same reason as classification.py: they run at every evaluation
and sklearn's validation dominated small runs. tests/metrics checks them against scikit-learn.
"""

from __future__ import annotations

import numpy as np


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Mean squared error, mean absolute error and R2 (R2 is NaN for fewer than two samples; for a
    constant target it is 1 if predicted exactly, else 0, as sklearn's `force_finite`)."""
    if len(y_true) == 0:
        return {}
    t = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(t.shape)
    if not np.isfinite(p).all():  # a diverged model: the errors are unbounded
        return {"mse": float("inf"), "mae": float("inf"), "r2": float("-inf") if len(t) > 1 else float("nan")}
    err = t - p
    out = {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err)))}
    if len(t) < 2:
        return {**out, "r2": float("nan")}
    ss_res = (err**2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.where(ss_res == 0, 1.0, 0.0))
    return {**out, "r2": float(r2.mean())}
