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


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_equal_scikit_learns(seed):
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    n_classes = 6  # with 5 drawn: class 5 is absent from both, and small samples miss others too
    y_true, y_pred = rng.integers(0, 5, 40), rng.integers(0, 5, 40)
    y_pred[:3] = 5 - seed % 2  # a class predicted but never true, in some seeds
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0
    )
    m = classification_metrics(y_true, y_pred, n_classes)
    assert m == pytest.approx({"accuracy": accuracy_score(y_true, y_pred), "precision": p, "recall": r, "f1": f})


@pytest.mark.parametrize("shape", [(30,), (30, 3)])
def test_regression_metrics_equal_scikit_learns(shape):
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(0)
    y, p = rng.standard_normal(shape), rng.standard_normal(shape)
    m = regression_metrics(y, p)
    want = {"mse": mean_squared_error(y, p), "mae": mean_absolute_error(y, p), "r2": r2_score(y, p)}
    assert m == pytest.approx(want)
    assert regression_metrics(np.ones(4), np.ones(4))["r2"] == r2_score(np.ones(4), np.ones(4))
    assert regression_metrics(np.ones(4), np.zeros(4))["r2"] == r2_score(np.ones(4), np.zeros(4))


def test_regression_metrics_of_a_diverged_model_are_unbounded_not_an_error():
    m = regression_metrics(np.array([1.0, 2.0]), np.array([np.inf, 1.0]))
    assert (m["mse"], m["r2"]) == (float("inf"), float("-inf"))
