"""The engine interface of BOUNDARIES.md (`apply(updates) -> losses, n`) over the reference autograd update,
for tuning code that drives updates itself. Issue 9 replaces it with `cadence.engine.fast.choose_engine`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cadence.engine.step import StepOptions, step
from cadence.engine.strategies import Update


@dataclass(frozen=True)
class Applied:
    """What one `apply` did: the mean data loss of each applied update, and how many were applied."""

    losses: torch.Tensor
    n: int


class ReferenceEngine:
    """Applies updates one by one with `engine.step.step`; steps `scheduler` once per applied update.

    `apply` stops at the first update whose loss or gradient is not finite: that one is not applied, and the
    weights and optimizer state stay as they were (step's guarantee), so `n < len(updates)` says where.
    """

    name = "autograd"
    fallback = "tuning drives the reference update until the engine interface of issue 9 lands"
    max_run = 1

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        task: str,
        options: StepOptions | None = None,
    ):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.x, self.y, self.task, self.options = x, y, task, options

    def apply(self, updates: Sequence[Update]) -> Applied:
        losses = []
        for update in updates:
            loss, applied = step(self.model, self.optimizer, self.x, self.y, update, self.task, self.options)
            if not applied:
                break
            losses.append(loss.reshape(1))
            if self.scheduler is not None:
                self.scheduler.step()
        return Applied(torch.cat(losses) if losses else torch.empty(0), len(losses))
