"""The engine of a run, chosen once: autograd (the reference) or an acceleration that computes the same.

    engine = choose_engine(model, optimizer, scheduler, config, x, y, task, options)
    engine.name          # "autograd" | "c-kernel" | "batch"
    engine.fallback      # why no faster engine runs (in words), or None
    engine.max_run       # the most consecutive updates one apply() may take (1 for autograd)
    applied = engine.apply(updates)   # a list of strategies.Update, indices into x and y
    applied.losses, applied.n         # losses of the applied updates; n < len(updates) only when updates[n]
                                      # had a non-finite loss or gradient: not applied, state bitwise as before

Every engine checks the loss and every gradient before it writes anything, and steps the lr schedule once
per applied update; the loop (loop.py) treats them all alike. `x`, `y` are read at apply time, so they may
be a resident buffer that is filled while the engine lives (never reallocated). predicate.py says which runs
the fast engines compute exactly; compiled.py is the C kernel's one-sample engine, batch.py the torch-ops one.

How the next strategies plug in, without a branch in the loop:
- stream: its update source appends each arriving sample to a resident buffer (x, y, allocated once) and
  yields a one-sample Update pointing at that row; the engine is chosen over that buffer, so the compiled
  kernel serves streams too. Predict-before-learn: each loss an engine returns is computed before its own
  update is applied (test-then-train), and `budget.max_run(strategy)` caps stream runs at one update, so a
  prediction made before yielding an update has seen every earlier one.
- DDP: under torchrun, loop.start takes distributed.DataParallelEngine instead of choose_engine: the
  AutogradEngine over a DistributedDataParallel wrapper of the model, applying this process's slice of each
  update's chunks; its backward sums the gradients of every process. The finiteness check sees the all-reduced
  loss and gradients, so every process skips the same update.
"""

from __future__ import annotations

import torch
from torch import nn

from cadence.config import RunConfig, Strategy
from cadence.engine.fast.batch import BatchEngine
from cadence.engine.fast.compiled import OnlineKernel, kernel
from cadence.engine.fast.predicate import HONOURED_FIELDS, unhonoured_fields, why_not
from cadence.engine.step import Applied, AutogradEngine, Engine, StepOptions


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
    """The fastest engine that computes this run exactly as autograd would (to rounding).

    The compiled kernel for one-sample updates (online, stream, mini-batch of 1), the batch engine for the
    rest, autograd for anything the predicate does not know, or when `config.engine` is "autograd".
    """
    reason = why_not(model, optimizer, scheduler, config, x, y, task, options)
    if reason is not None:
        return AutogradEngine(model, optimizer, scheduler, x, y, task, options, fallback=reason)
    s = config.strategy
    one_sample = s.accumulate == 1 and (
        s.name in (Strategy.ONLINE, Strategy.STREAM) or (s.name == Strategy.MINI_BATCH and s.batch_size == 1)
    )
    if not one_sample:
        return BatchEngine(model, optimizer, scheduler, x, y, task)
    if kernel() is None:
        missing = "the compiled kernel is not built (pip install -e . builds it with a C compiler)"
        return BatchEngine(model, optimizer, scheduler, x, y, task, fallback=missing)
    return OnlineKernel(model, optimizer, scheduler, x, y, task)


__all__ = [
    "HONOURED_FIELDS",
    "Applied",
    "AutogradEngine",
    "BatchEngine",
    "Engine",
    "OnlineKernel",
    "choose_engine",
    "kernel",
    "unhonoured_fields",
    "why_not",
]
