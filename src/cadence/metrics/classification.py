"""Classification metrics: accuracy and macro precision/recall/F1, confusion matrix (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall and F1 over all `n_classes` labels."""
    if len(y_true) == 0:
        return {}
    labels = list(range(n_classes))
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[list[int]]:
    """Confusion matrix, rows = true class, columns = predicted class."""
    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).tolist()
