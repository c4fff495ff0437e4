"""The engine the stream learner trains with: `cadence.engine.fast.choose_engine` over the learner's resident
buffer, judged as the in-memory run of the same update size (the C kernel for one-sample updates)."""

from __future__ import annotations

import torch
from torch import nn

from cadence.config import RunConfig, Strategy, StreamConfig
from cadence.engine import fast
from cadence.engine.step import Engine, StepOptions


def choose_engine(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    config: RunConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    options: StepOptions | None = None,
) -> Engine:
    """The fastest engine that computes exactly what autograd would for these updates into `x`, `y`.

    `x`, `y` are the learner's resident buffer: never reallocated while the engine lives.
    """
    # The fast engines judge a run by its config: the same run as an in-memory one of the same update size.
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
    return fast.choose_engine(model, optimizer, scheduler, plain, x, y, task, options)
