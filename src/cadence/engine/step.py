"""One update: forward and loss over each chunk, backward (gradients summed), then the optimizer step.

The loss of every chunk is a sum divided by the update's sample count, so k chunks give exactly the mean
gradient of one batch of their union (full-batch chunking and gradient accumulation rely on this).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cadence.engine.strategies import Update


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
) -> tuple[torch.Tensor, bool]:
    """Run one update. Returns (mean loss of the update, applied).

    When the loss or any gradient is not finite the optimizer is not stepped (applied=False), so the weights
    and optimizer state stay the last good ones.
    """
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for idx in update.chunks:
        loss = loss_sum(task, model(x[idx]), y[idx]) / update.n_samples
        loss.backward()
        total += loss.detach()
    if not _finite(total, optimizer):
        optimizer.zero_grad(set_to_none=True)
        return total, False
    optimizer.step()
    return total, True


def _finite(total: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
    """Whether the loss and every gradient are finite, with one host sync. The max-norm is NaN/inf exactly
    when some entry is (a 2-norm can overflow on large finite entries); _foreach_norm is what torch's own
    clip_grad_norm_ uses, and costs a fraction of get_total_norm's per-call overhead on small models."""
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    return bool(torch.isfinite(torch.stack([total.abs(), *torch._foreach_norm(grads, float("inf"))]).max()))
