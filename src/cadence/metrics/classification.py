"""Classification metrics: accuracy and macro precision/recall/F1, confusion matrix.

Computed from one confusion matrix in NumPy rather than by sklearn.metrics: these run at every evaluation,
and sklearn's input validation costs ~13 ms a call, which dominated training time on small data sets
(iris: 1.3 s of 2 s for 100 epochs). tests/metrics checks them against scikit-learn.
"""

from __future__ import annotations

import numpy as np


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall and F1 over all `n_classes` labels; a class never
    predicted (or never present) counts 0 in the mean, as sklearn's `zero_division=0`.

    F1 per class is 2 tp / (2 tp + fp + fn), the form sklearn uses."""
    if len(y_true) == 0:
        return {}
    cm = _confusion(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    return {
        "accuracy": float(tp.sum() / len(y_true)),
        "precision": float(ratio(tp, predicted).mean()),
        "recall": float(ratio(tp, actual).mean()),
        "f1": float(ratio(2 * tp, predicted + actual).mean()),
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[list[int]]:
    """Confusion matrix, rows = true class, columns = predicted class."""
    return _confusion(y_true, y_pred, n_classes).tolist()
