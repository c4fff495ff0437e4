"""Model builders: MLP, a small CNN, logistic/softmax regression, or a user factory. No training code.

Also the one gate through which a spec's `package.module:factory` is imported: code named only by a file
(a checkpoint, a run's config) is imported only when the user trusts it (`check_trusted`).
"""

from __future__ import annotations

import importlib
import math
import os
import re

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
        self.dropout = dropout
        self.batch_norm = batch_norm


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
    if not arg.strip():
        raise ConfigError(
            f"model spec {spec!r} names no hidden widths. Fix: give them, e.g. mlp:128,64, or use logreg for "
            "a model without hidden layers."
        )
    parts = [w.strip() for w in arg.split(",")]
    if "" in parts:
        raise ConfigError(
            f"model spec {spec!r}: hidden width {parts.index('') + 1} is empty. Fix: one integer per "
            "comma, e.g. mlp:128,64."
        )
    try:
        widths = [int(w) for w in parts]
    except ValueError:
        raise ConfigError(
            f"model spec {spec!r}: hidden widths must be integers like mlp:128,64; got {arg!r}"
        ) from None
    if any(w <= 0 for w in widths):
        raise ConfigError(f"model spec {spec!r}: widths must be > 0; got {widths}")
    return widths


# A factory spec: a dotted module path, a colon, an attribute name (`package.module:factory`).
_FACTORY = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*):([A-Za-z_]\w*)$")
BUILTIN_KINDS = ("mlp", "logreg", "linear", "cnn", "custom")


def factory_module(spec: str) -> str | None:
    """The module a `package.module:factory` spec would import, or None for a built-in spec."""
    m = _FACTORY.match(spec.strip())
    return m.group(1) if m and m.group(1) not in BUILTIN_KINDS else None


def check_trusted(spec: str, source: str, trust_code: bool, flag: str = "--trust-code") -> None:
    """Refuse a factory spec read from `source` (a checkpoint, a run directory) unless the user trusts it.

    Importing a module runs its code, so a spec that only a file names is never imported on its own:
    the user names it again (`--model package.module:factory`) or passes `--trust-code`.

    Raises:
        ConfigError: `spec` names a module and `trust_code` is false; nothing was imported.
    """
    module = factory_module(spec)
    if module is None or trust_code:
        return
    raise ConfigError(
        f"{source} asks to import module {module!r} (model spec {spec!r}); cadence does not import code that "
        f"only a file names. Fix: if you trust where it came from, name it again (--model {spec}, or "
        f"model=... in Python) or pass {flag} (trust_code=True)."
    )


def module_spec(model: nn.Module) -> dict:
    """The ModelConfig fields that describe a model passed as an instance, for the run's config.yaml.

    A built-in MLP is described by its spec (rebuilt the same way from it); any other module by
    `custom:<module>.<class>`, which build_model refuses to build: cadence cannot know its arguments.
    """
    if type(model) is MLP:
        spec = f"mlp:{','.join(map(str, model.widths))}" if model.widths else "logreg"
        return {
            "spec": spec,
            "activation": model.activation,
            "dropout": model.dropout,
            "batch_norm": model.batch_norm,
        }
    cls = type(model)
    return {"spec": f"custom:{cls.__module__}.{cls.__qualname__}"}


def build_model(config: ModelConfig, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """Build the model named by `config.spec` for inputs of `input_shape` and `n_outputs` outputs.

    Specs: `mlp:W1,W2,...`, `logreg` (softmax/linear regression), `cnn`, or `package.module:factory`
    (called as factory(input_shape=..., n_outputs=...)). `config.init` re-initializes the weights
    (models/init.py) from torch's global generator, which train() seeds first. Callers that read the
    spec from a file call `check_trusted` first.

    Raises:
        ConfigError: unknown spec, bad widths, a model too large for this machine's memory, a factory
            that cannot be imported, fails when called, or returns something other than an nn.Module.
    """
    model = _build(config, input_shape, n_outputs)
    return init_weights(model, config.init, activation=config.activation, std=config.init_std)


def _build(config: ModelConfig, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    spec = config.spec.strip()
    kind, colon, arg = spec.partition(":")
    n_inputs = math.prod(input_shape)
    if kind == "mlp":
        widths = _parse_widths(spec, arg)
        _check_size(spec, n_inputs, widths, n_outputs)
        try:
            return MLP(n_inputs, widths, n_outputs, config.activation, config.dropout, config.batch_norm)
        except (RuntimeError, MemoryError) as err:  # the allocation itself failed
            raise ConfigError(
                f"model spec {spec!r} could not be allocated: {err}. Fix: use smaller widths."
            ) from None
    if kind in ("logreg", "linear") and not colon:
        return MLP(n_inputs, [], n_outputs)
    if kind == "cnn" and not colon:
        return SmallCNN(input_shape, n_outputs, config.activation, config.dropout, config.batch_norm)
    if kind == "custom":
        raise ConfigError(
            f"model spec {spec!r} records a run trained on a module passed as an object ({arg}); cadence "
            "cannot rebuild it without its constructor arguments. Fix: pass the module again (train(model=...), "
            "cadence.load(run, model=...)), or train from a factory spec package.module:function."
        )
    if factory_module(spec):
        return _call_factory(spec, input_shape, n_outputs)
    raise ConfigError(
        f"unknown model spec {spec!r}. Allowed: mlp:W1,W2,... (e.g. mlp:128,64), logreg, cnn, "
        "or package.module:factory."
    )


def _call_factory(spec: str, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(
            f"model factory {spec!r} could not be loaded: {err}. "
            "Fix: give package.module:function, importable from the current environment."
        ) from None
    call = f"{module}.{name}(input_shape={tuple(input_shape)}, n_outputs={n_outputs})"
    if not callable(factory):
        raise ConfigError(
            f"model factory {spec!r} is a {type(factory).__name__}, not a function to call as {call}."
        )
    try:
        model = factory(input_shape=tuple(input_shape), n_outputs=n_outputs)
    except Exception as err:  # the user's code: any failure is reported as theirs, in one line
        raise ConfigError(
            f"model factory {spec!r} failed when called as {call}: {type(err).__name__}: {err}. Fix: give a "
            "function that takes the keyword arguments input_shape and n_outputs and returns a torch.nn.Module."
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module.")
    return model


def _check_size(spec: str, n_inputs: int, widths: list[int], n_outputs: int) -> None:
    """Refuse an MLP whose float32 weights and gradients would not fit in the memory available now,
    before torch tries to allocate (and the kernel kills the process or the machine swaps)."""
    sizes = [n_inputs, *widths, n_outputs]
    n_params = sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))
    need = 2 * 4 * n_params  # weights + gradients, float32; optimizer state comes on top
    available = _available_memory()
    if available is not None and need > available:
        raise ConfigError(
            f"model spec {spec!r} has {n_params:,} parameters: {need / 2**30:.1f} GiB for float32 weights and "
            f"gradients alone, but this machine has {available / 2**30:.1f} GiB available. Fix: use smaller "
            "widths, e.g. mlp:128,64."
        )


def _available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
