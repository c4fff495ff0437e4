"""Metrics match hand-computed values on small examples."""

from __future__ import annotations

import numpy as np
import pytest

from cadence.metrics import classification_metrics, confusion, regression_metrics


def test_classification_metrics_are_macro_averaged_over_all_classes():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 2])
    m = classification_metrics(y_true, y_pred, n_classes=4)  # class 3 never occurs: counts as 0 in the mean
    assert m["accuracy"] == pytest.approx(4 / 6)
    # precision per class: 1/2, 2/3, 1, 0 -> mean 0.541666; recall: 1/2, 1, 1/2, 0 -> 0.5
    assert m["precision"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 4)
    assert m["recall"] == pytest.approx(0.5)
    f1 = [2 * p * r / (p + r) for p, r in [(0.5, 0.5), (2 / 3, 1.0), (1.0, 0.5)]]
    assert m["f1"] == pytest.approx(sum(f1) / 4)


def test_confusion_matrix_rows_are_true_classes():
    assert confusion(np.array([0, 1, 1]), np.array([1, 1, 0]), 3) == [[0, 1, 0], [1, 1, 0], [0, 0, 0]]


def test_regression_metrics_match_their_formulas():
    y, p = np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 2.0])
    m = regression_metrics(y, p)
    assert m["mse"] == pytest.approx((0.25 + 0 + 1) / 3)
    assert m["mae"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - (1.25 / 2.0))
