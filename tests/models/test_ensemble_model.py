"""Ensemble averages its members' predictions: class probabilities for classification, outputs for regression."""

from __future__ import annotations

import torch
from torch import nn

from cadence.models import Ensemble


def members(n_out: int) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Linear(4, n_out) for _ in range(3)]


def test_classification_ensemble_outputs_log_of_the_mean_class_probabilities():
    ms = members(5)
    x = torch.randn(8, 4)
    out = Ensemble(ms, "classification")(x)
    mean_p = torch.stack([m(x).softmax(-1) for m in ms]).mean(0)
    torch.testing.assert_close(out.exp(), mean_p)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(8))


def test_regression_ensemble_outputs_the_mean_prediction():
    ms = members(1)
    x = torch.randn(8, 4)
    torch.testing.assert_close(Ensemble(ms, "regression")(x), torch.stack([m(x) for m in ms]).mean(0))
