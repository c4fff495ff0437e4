"""The engine the stream learner trains with, in the shape of the engine interface (BOUNDARIES.md):
`choose_engine(model, optimizer, scheduler, config, x, y, task, options)` -> `.apply(updates)`.

A local stand-in until `cadence.engine.fast.choose_engine` lands (issue 9): it wraps today's fast engines
(the C kernel for one-sample updates) and `engine.step.step` (autograd), over the learner's resident buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cadence.config import RunConfig, Strategy, StreamConfig
from cadence.data.datasets import Dataset
from cadence.engine import fast
from cadence.engine.step import StepOptions, step
from cadence.engine.strategies import Update


@dataclass(frozen=True)
class Applied:
    losses: torch.Tensor  # mean data loss of each applied update, in order
    n: int  # updates applied; updates[n] (if any) had a non-finite loss or gradient and was not applied


class _Fast:
    def __init__(self, engine, scheduler):
        self._engine, self._scheduler = engine, scheduler
        self.name = "c-kernel" if isinstance(engine, fast.OnlineKernel) else "batch"
        self.fallback = None
        self.max_run = engine.max_run

    def apply(self, updates: list[Update]) -> Applied:
        losses, _ = self._engine.apply(updates, self._scheduler)
        return Applied(losses, len(losses))


class _Autograd:
    name, max_run = "autograd", 1

    def __init__(self, model, optimizer, scheduler, x, y, task, options, fallback: str):
        self._args = (model, optimizer, x, y)
        self._scheduler, self._task, self._options = scheduler, task, options
        self.fallback = fallback

    def apply(self, updates: list[Update]) -> Applied:
        losses = []
        for update in updates:
            loss, applied = step(*self._args, update, self._task, self._options)
            if not applied:
                break
            self._scheduler.step()
            losses.append(loss.reshape(1))
        return Applied(torch.cat(losses) if losses else torch.empty(0), len(losses))


def choose_engine(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    config: RunConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    options: StepOptions | None = None,
):
    """The fastest engine that computes exactly what autograd would for these updates into `x`, `y`.

    `x`, `y` are the learner's resident buffer: never reallocated while the engine lives.
    """
    n_classes = config.stream.n_classes if task == "classification" else None
    data = Dataset(x, y, x[:0], y[:0], x[:0], y[:0], task=task, n_classes=n_classes)
    # The fast path judges a run by its config: the same run as an in-memory one of the same update size.
    one = config.stream.batch_size == 1
    plain = config.model_copy(
        update={
            "stream": StreamConfig(),
            "strategy": config.strategy.model_copy(
                update={
                    "name": Strategy.ONLINE if one else Strategy.MINI_BATCH,
                    "batch_size": config.stream.batch_size,
                }
            ),
        }
    )
    engine = (
        fast.engine_for(model, optimizer, plain, data) if options is None or options == StepOptions() else None
    )
    if engine is not None:
        return _Fast(engine, scheduler)
    why = "the fast path does not compute this model/optimizer/options exactly"
    return _Autograd(model, optimizer, scheduler, x, y, task, options, why)
