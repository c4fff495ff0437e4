"""Which runs the fast engines compute exactly as autograd would (to rounding), and why not when they cannot.

Anything this module does not recognise is a fallback to the autograd engine, with the reason in words
(`Run.engine_fallback`). It also recognises the model and optimizer the engines compute (`mlp_layers`,
`optimizer_kind`); computing them is compiled.py's and batch.py's business.
"""

from __future__ import annotations

import torch
from torch import nn

from cadence.config import RunConfig
from cadence.engine.step import StepOptions
from cadence.models.builders import MLP
from cadence.optim import Schedule

ACTIVATIONS = {nn.ReLU: 0, nn.Tanh: 1, nn.Sigmoid: 2, nn.LeakyReLU: 3}

# Config fields the fast engines honour exactly (or that do not touch the update arithmetic). Every other
# field must keep its default, so a field added later (schedules, clipping, penalties, accumulation, AMP ...)
# sends a run with a non-default value to autograd without anyone editing this file.
HONOURED_FIELDS = frozenset(
    {
        *(
            f"data.{k}"
            for k in ("name", "data_dir", "target", "task", "image_size", "val_fraction", "test_fraction")
        ),
        "data.standardize",
        "data.limit",
        "model.spec",
        "model.init",  # only the starting weights, which the engines read as they find them
        "model.init_std",
        "model.activation",
        *(f"strategy.{k}" for k in ("name", "batch_size", "drop_last", "chunk_size", "shuffle")),
        *(f"optimizer.{k}" for k in ("name", "lr", "momentum", "weight_decay", "betas", "eps")),
        *(
            f"stop.{k}"
            for k in (
                "max_epochs",
                "max_updates",
                "max_samples",
                "max_seconds",
                "tol",
                "convergence_patience",
                "target_loss",
                "early_stopping_metric",
                "early_stopping_patience",
                "early_stopping_min_delta",
                "restore_best_weights",
                "on_nonfinite",  # the loop's policy; every engine stops before a non-finite update
                "max_skips",
                "rollback_lr_factor",
            )
        ),
        "eval.every_updates",
        "eval.batch_size",
        "seed",
        "threads",
        "device",  # the tensors' devices are checked below
        "engine",
        "distributed.backend",  # used only under torchrun, where DDP runs the autograd engine anyway
        "distributed.timeout_seconds",
    }
)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def unhonoured_fields(config: RunConfig) -> list[str]:
    """Config fields set away from their defaults that the fast engines do not implement."""
    default = _flat(RunConfig().model_dump(mode="python"))
    ours = _flat(config.model_dump(mode="python"))
    return sorted(k for k, v in ours.items() if k not in HONOURED_FIELDS and (k not in default or default[k] != v))


def model_reason(model: nn.Module) -> str | None:
    """Why `model` is not a plain built-in MLP (Flatten, Linear, act, ..., Linear) on the CPU, or None."""
    if type(model) is not MLP:
        return f"the model is a {type(model).__name__}, not a built-in mlp:... or logreg"
    mods = list(model)
    if not mods or type(mods[0]) is not nn.Flatten or mods[0].start_dim != 1:
        return "the MLP does not start with Flatten()"
    body = mods[1:]
    linears, acts = body[0::2], body[1::2]
    if not 0 < len(linears) < 64 or len(linears) != len(acts) + 1:  # the kernel keeps 64 layer pointers
        return "the MLP is not Linear layers with one activation between each (at most 63 layers)"
    if any(type(m) is not nn.Linear or m.bias is None for m in linears):
        return "the MLP has layers other than Linear with a bias (dropout, batch norm, ...)"
    kinds = {type(a) for a in acts}
    if len(kinds) > 1 or any(k not in ACTIVATIONS for k in kinds):
        names = ", ".join(sorted(k.__name__ for k in kinds))
        return f"activation {names}: the fast engines implement relu, tanh, sigmoid and leaky_relu (0.01)"
    if any(isinstance(a, nn.LeakyReLU) and a.negative_slope != 0.01 for a in acts):
        return "a LeakyReLU slope other than 0.01"
    if any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in model.modules()
    ):
        return "the model has hooks"
    params = list(model.parameters())
    if any(p.dtype != torch.float32 for p in params):
        return "the weights are not float32"
    if any(p.device.type != "cpu" for p in params):
        return f"the model is on {params[0].device}: the fast engines run on the CPU"
    if any(not p.requires_grad or not p.is_contiguous() or p._backward_hooks for p in params):
        return "a weight is frozen, not contiguous or hooked"
    return None


def mlp_layers(model: nn.Module) -> tuple[list[nn.Linear], int]:
    """The Linear layers and activation code of a model `model_reason` accepts."""
    body = list(model)[1:]
    acts = body[1::2]
    return body[0::2], ACTIVATIONS[type(acts[0])] if acts else 0


def optimizer_kind(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> str | None:
    """'sgd', 'momentum', 'nesterov', 'adam' or 'adamw' when `optimizer` is exactly that torch rule."""
    if len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if len(group["params"]) != len(params) or any(
        a is not b for a, b in zip(group["params"], params, strict=False)
    ):
        return None
    if group.get("maximize") or group.get("differentiable") or group.get("capturable"):
        return None
    if type(optimizer) is torch.optim.SGD:
        if group["dampening"] != 0:
            return None
        if group["momentum"] == 0:
            return None if group["nesterov"] else "sgd"
        return "nesterov" if group["nesterov"] else "momentum"
    if type(optimizer) in (torch.optim.Adam, torch.optim.AdamW):
        if group["amsgrad"] or group.get("fused") or group.get("decoupled_weight_decay") is None:
            return None
        if isinstance(group["lr"], torch.Tensor):
            return None
        return "adamw" if group["decoupled_weight_decay"] else "adam"
    return None


def why_not(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    config: RunConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    options: StepOptions | None,
) -> str | None:
    """Why the fast engines cannot compute this run exactly as autograd would, or None when they can."""
    if config.engine == "autograd":
        return "engine 'autograd' was asked for"
    fields = unhonoured_fields(config)
    if fields:
        return f"settings the fast engines do not implement: {', '.join(fields)}"
    if options is not None and not options.plain:
        return "penalties, clipping, bf16 or augmentation (step options) are autograd's only"
    if scheduler is not None and not isinstance(scheduler, Schedule):
        return f"a {type(scheduler).__name__} schedule: the fast engines step cadence's Schedule only"
    reason = model_reason(model)
    if reason:
        return reason
    params = list(model.parameters())
    if optimizer_kind(optimizer, params) is None:
        return (
            f"optimizer {type(optimizer).__name__} with these settings: the fast engines implement SGD, "
            "momentum, Nesterov, Adam and AdamW"
        )
    linears, _ = mlp_layers(model)
    n_out = linears[-1].out_features
    if x.dtype != torch.float32 or not x.is_contiguous() or x.device.type != "cpu":
        layout = "" if x.is_contiguous() else ", not contiguous"
        return (
            f"the inputs are {x.dtype} on {x.device}{layout}: the fast engines read contiguous float32 on the CPU"
        )
    if len(x) == 0 or x[0].numel() != linears[0].in_features:
        return "the inputs do not have the model's input width"
    # The engines index with the targets: anything autograd would reject goes there to be rejected.
    if y.device.type != "cpu" or (y.ndim and len(y) != len(x)):
        return "the targets are not on the CPU, one per input row"
    if task == "classification":
        if y.dtype != torch.int64 or y.ndim != 1:
            return "classification targets are not 1-D int64 class indices"
        if int(y.min()) < 0 or int(y.max()) >= n_out:
            return f"a label outside the model's {n_out} outputs"
        return None
    shape_ok = (y.ndim == 1 and n_out == 1) or (y.ndim == 2 and y.shape[1] == n_out)
    if y.dtype != torch.float32 or not y.is_contiguous() or not shape_ok:
        return "regression targets are not contiguous float32 of the model's output width"
    return None
