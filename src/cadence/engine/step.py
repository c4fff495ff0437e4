"""One update: forward and loss over each chunk, backward (gradients summed), then the optimizer step.

The loss of every chunk is a sum divided by the update's sample count, so k chunks give exactly the mean
gradient of one batch of their union (full-batch chunking and gradient accumulation rely on this).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cadence.data.augment import Augmenter
from cadence.engine.strategies import Update
from cadence.optim.penalties import penalty


@dataclass(frozen=True)
class StepOptions:
    """Per-update extras; the defaults are a plain step."""

    penalized: tuple[nn.Parameter, ...] = ()
    l1: float = 0.0
    l2: float = 0.0
    clip_norm: float | None = None
    clip_value: float | None = None
    autocast: torch.dtype | None = None
    augment: Augmenter | None = None


def loss_sum(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed loss: cross-entropy for classification, squared error for regression."""
    if task == "classification":
        return F.cross_entropy(out, y, reduction="sum")
    return F.mse_loss(out.reshape(y.shape), y, reduction="sum")


def step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    update: Update,
    task: str,
    options: StepOptions | None = None,
) -> tuple[torch.Tensor, bool]:
    """Run one update. Returns (mean data loss J0 of the update, applied).

    Per chunk: augment, forward (bf16 autocast if set), loss, backward. Then, once per update: the penalty's
    gradient (J = J0 + l1*|theta|_1 + l2*|theta|_2^2), clipping by norm and by value, the optimizer step.
    When the loss or any gradient is not finite the optimizer is not stepped (applied=False), so the weights
    and optimizer state stay the last good ones.
    """
    o = options or StepOptions()
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros(())
    offset = 0
    for idx in update.chunks:
        xb = x[idx]
        if o.augment is not None:
            xb = o.augment(xb, update.epoch, update.position, update.n_samples, offset)
            offset += len(idx)
        if o.autocast is None:
            out = model(xb)
        else:
            with torch.autocast(xb.device.type, dtype=o.autocast):
                out = model(xb).float()  # the loss in fp32
        loss = loss_sum(task, out, y[idx]) / update.n_samples
        loss.backward()
        total += loss.detach()
    if not _finite(total, optimizer):
        optimizer.zero_grad(set_to_none=True)
        return total, False
    if o.penalized and (o.l1 or o.l2):
        penalty(o.penalized, o.l1, o.l2).backward()  # once per update, not per chunk: J has one penalty
    if o.clip_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), o.clip_norm)
    if o.clip_value is not None:
        nn.utils.clip_grad_value_(model.parameters(), o.clip_value)
    optimizer.step()
    return total, True


def _finite(total: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
    """Whether the loss and every gradient are finite, with one host sync. The max-norm is NaN/inf exactly
    when some entry is (a 2-norm can overflow on large finite entries); _foreach_norm is what torch's own
    clip_grad_norm_ uses, and costs a fraction of get_total_norm's per-call overhead on small models."""
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    return bool(torch.isfinite(torch.stack([total.abs(), *torch._foreach_norm(grads, float("inf"))]).max()))
