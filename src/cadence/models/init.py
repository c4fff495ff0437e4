"""Weight initialization by name (xavier, kaiming, normal, orthogonal), seeded; over torch.nn.init.

Covers the weights of Linear and Conv layers (biases are set to 0); other layers keep torch's defaults.
"""

from __future__ import annotations

import torch
from torch import nn

from cadence.errors import ConfigError

SCHEMES = ("default", "xavier", "kaiming", "normal", "orthogonal")
ALIASES = {"glorot": "xavier", "he": "kaiming"}
# Gains torch.nn.init.calculate_gain knows; gelu is close enough to relu for the He/Glorot fan arguments.
_NONLINEARITY = {"relu": "relu", "gelu": "relu", "leaky_relu": "leaky_relu", "tanh": "tanh", "sigmoid": "sigmoid"}


def init_weights(
    model: nn.Module,
    scheme: str,
    seed: int | None = None,
    activation: str = "relu",
    std: float = 0.01,
) -> nn.Module:
    """Re-initialize the Linear/Conv weights of `model` in place and zero their biases; returns `model`.

    xavier (Glorot & Bengio 2010): U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out));
    kaiming (He et al. 2015): N(0, gain^2 / fan_in); normal: N(0, std^2);
    orthogonal (Saxe et al. 2014): gain * a (semi-)orthogonal matrix; default: leave torch's init.
    gain is torch.nn.init.calculate_gain(activation).

    Args:
        seed: draws come from a generator seeded with it; None uses torch's global generator.

    Raises:
        ConfigError: an unknown scheme.
    """
    scheme = ALIASES.get(scheme, scheme)
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown weight init {scheme!r}. Allowed: {', '.join(SCHEMES)}, glorot, he.")
    if scheme == "default":
        return model
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    nonlinearity = _NONLINEARITY.get(activation, "relu")
    gain = nn.init.calculate_gain(nonlinearity)
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
                continue
            w = module.weight
            if scheme == "xavier":
                nn.init.xavier_uniform_(w, gain=gain, generator=gen)
            elif scheme == "kaiming":
                nn.init.kaiming_normal_(w, nonlinearity=nonlinearity, generator=gen)
            elif scheme == "normal":
                nn.init.normal_(w, 0.0, std, generator=gen)
            else:
                nn.init.orthogonal_(w, gain=gain, generator=gen)
            if module.bias is not None:
                module.bias.zero_()
    return model
