"""Weight initialization: each scheme has its distribution, draws are seeded, aliases are one spelling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cadence.config import ModelConfig
from cadence.errors import ConfigError
from cadence.models import build_model, init_weights

FAN_IN, FAN_OUT = 400, 300


def layer(scheme: str, seed: int = 0, **kw) -> nn.Linear:
    with torch.no_grad():
        return init_weights(nn.Sequential(nn.Linear(FAN_IN, FAN_OUT)), scheme, seed=seed, **kw)[0].requires_grad_(
            False
        )


def test_xavier_is_uniform_within_the_glorot_bound():
    w = layer("xavier", activation="tanh").weight
    bound = (5 / 3) * math.sqrt(6 / (FAN_IN + FAN_OUT))  # gain(tanh) = 5/3
    assert float(w.abs().max()) <= bound
    assert float(w.abs().max()) > 0.99 * bound
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_kaiming_has_std_sqrt_2_over_fan_in_for_relu():
    assert float(layer("kaiming").weight.std()) == pytest.approx(math.sqrt(2 / FAN_IN), rel=0.02)


def test_normal_has_the_configured_std():
    assert float(layer("normal", std=0.05).weight.std()) == pytest.approx(0.05, rel=0.02)


def test_orthogonal_rows_are_orthonormal_times_the_gain():
    w = layer("orthogonal", activation="relu").weight  # 300 x 400: orthonormal rows
    torch.testing.assert_close(w @ w.T, 2.0 * torch.eye(FAN_OUT), atol=1e-4, rtol=0)


@pytest.mark.parametrize("scheme", ["xavier", "kaiming", "normal", "orthogonal"])
def test_init_is_seeded_and_zeroes_biases(scheme):
    a, b, c = layer(scheme, seed=1), layer(scheme, seed=1), layer(scheme, seed=2)
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, c.weight)
    assert torch.count_nonzero(a.bias) == 0


def test_config_aliases_glorot_and_he_to_one_spelling_and_build_model_applies_it():
    assert ModelConfig(init="glorot").init == "xavier"
    config = ModelConfig(spec="mlp:256", init="he")
    assert config.init == "kaiming"
    torch.manual_seed(0)
    model = build_model(config, (784,), 10).requires_grad_(False)
    assert float(model[1].weight.std()) == pytest.approx(math.sqrt(2 / 784), rel=0.03)
    assert torch.count_nonzero(model[1].bias) == 0


def test_unknown_scheme_is_a_config_error_listing_the_choices():
    with pytest.raises(ConfigError, match="xavier, kaiming"):
        init_weights(nn.Linear(2, 2), "lecun")
