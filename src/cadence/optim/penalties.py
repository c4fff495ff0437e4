"""L1/L2 penalties added to the objective, J = J0 + l1*||theta||_1 + l2*||theta||_2^2, and which parameters
they cover. The step adds the penalty once per update; the optimizers' own weight_decay is separate."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

# Normalization layers whose weight and bias set a scale and shift, not a feature detector: penalizing them
# fights the normalization (the usual practice, e.g. timm and nanoGPT's no-decay groups, leaves them alone).
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm)


def penalized_parameters(model: nn.Module, exclude: Sequence[str] = ("bias", "norm")) -> list[nn.Parameter]:
    """The trainable parameters the penalty covers.

    Args:
        exclude: "bias" leaves out every parameter named `bias`; "norm" leaves out the parameters of
            normalization layers (batch/layer/group/RMS norm).
    """
    chosen: list[nn.Parameter] = []
    for module in model.modules():
        is_norm = isinstance(module, NORM_LAYERS)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or ("norm" in exclude and is_norm) or ("bias" in exclude and name == "bias"):
                continue
            chosen.append(p)
    return chosen


def penalty(params: Iterable[torch.Tensor], l1: float = 0.0, l2: float = 0.0) -> torch.Tensor:
    """l1 * sum|theta| + l2 * sum theta^2 over `params`; its gradient is l1*sign(theta) + 2*l2*theta.

    Note the factor 2: torch's coupled `weight_decay=wd` equals l2 = wd/2 on every parameter.
    """
    total = torch.zeros(())
    for p in params:
        if l1:
            total = total + l1 * p.abs().sum()
        if l2:
            total = total + l2 * p.pow(2).sum()
    return total
