"""Model builders: MLP, a small CNN, logistic/softmax regression, or a user factory. No training code."""

from __future__ import annotations

import importlib
import math

import torch
from torch import nn

from cadence.config import ModelConfig
from cadence.errors import ConfigError
from cadence.models.init import init_weights

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


class MLP(nn.Sequential):
    """Flatten, then Linear -> [BatchNorm] -> activation -> [Dropout] per hidden width, then a Linear head."""

    def __init__(
        self,
        n_inputs: int,
        widths: list[int],
        n_outputs: int,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        layers: list[nn.Module] = [nn.Flatten()]
        prev = n_inputs
        for w in widths:
            layers.append(nn.Linear(prev, w))
            if batch_norm:
                layers.append(nn.BatchNorm1d(w))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = w
        layers.append(nn.Linear(prev, n_outputs))
        super().__init__(*layers)
        self.widths = list(widths)
        self.activation = activation


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks (16, 32 channels, max-pool) and a linear head; for square image inputs."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        n_outputs: int,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        if len(input_shape) == 1:  # flat vectors of a square image, e.g. 784 or 64
            side = math.isqrt(input_shape[0])
            if side * side != input_shape[0]:
                raise ConfigError(
                    f"cnn needs image inputs; got {input_shape[0]} features, not a square image. "
                    "Fix: use an MLP (mlp:128,64) for tabular data."
                )
            input_shape = (1, side, side)
        self.input_shape = tuple(input_shape)
        c, h, w = self.input_shape
        act = ACTIVATIONS[activation]

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1),
                *([nn.BatchNorm2d(cout)] if batch_norm else []),
                act(),
                nn.MaxPool2d(2),
            ]

        self.features = nn.Sequential(*block(c, 16), *block(16, 32))
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(32 * (h // 4) * (w // 4), n_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(x.shape[0], *self.input_shape)))


def _parse_widths(spec: str, arg: str) -> list[int]:
    try:
        widths = [int(w) for w in arg.split(",") if w.strip()]
    except ValueError:
        raise ConfigError(
            f"model spec {spec!r}: hidden widths must be integers like mlp:128,64; got {arg!r}"
        ) from None
    if any(w <= 0 for w in widths):
        raise ConfigError(f"model spec {spec!r}: widths must be > 0; got {widths}")
    return widths


def build_model(config: ModelConfig, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """Build the model named by `config.spec` for inputs of `input_shape` and `n_outputs` outputs.

    Specs: `mlp:W1,W2,...`, `logreg` (softmax/linear regression), `cnn`, or `package.module:factory`
    (called as factory(input_shape=..., n_outputs=...)). `config.init` re-initializes the weights
    (models/init.py) from torch's global generator, which train() seeds first.

    Raises:
        ConfigError: unknown spec, bad widths, or a factory that cannot be imported.
    """
    model = _build(config, input_shape, n_outputs)
    return init_weights(model, config.init, activation=config.activation, std=config.init_std)


def _build(config: ModelConfig, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    spec = config.spec.strip()
    kind, _, arg = spec.partition(":")
    n_inputs = math.prod(input_shape)
    if kind == "mlp":
        return MLP(
            n_inputs,
            _parse_widths(spec, arg),
            n_outputs,
            config.activation,
            config.dropout,
            config.batch_norm,
        )
    if kind in ("logreg", "linear") and not arg:
        return MLP(n_inputs, [], n_outputs)
    if kind == "cnn" and not arg:
        return SmallCNN(input_shape, n_outputs, config.activation, config.dropout, config.batch_norm)
    if arg and "." in kind or (arg and kind not in ("mlp", "cnn", "logreg")):
        try:
            factory = getattr(importlib.import_module(kind), arg)
        except (ImportError, AttributeError) as err:
            raise ConfigError(
                f"model factory {spec!r} could not be loaded: {err}. "
                "Fix: give package.module:function, importable from the current environment."
            ) from None
        model = factory(input_shape=input_shape, n_outputs=n_outputs)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module.")
        return model
    raise ConfigError(
        f"unknown model spec {spec!r}. Allowed: mlp:W1,W2,... (e.g. mlp:128,64), logreg, cnn, "
        "or package.module:factory."
    )
