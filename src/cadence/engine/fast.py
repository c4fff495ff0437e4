"""The fast path: which runs skip autograd, and how the loop cuts the update sequence into runs.

Owns the support predicate (anything it does not know falls back to autograd, silently), the choice of
engine (fast_engines.py computes) and the run lengths. What each update holds stays `strategies.Update`'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from cadence.config import RunConfig, Strategy
from cadence.data.datasets import Dataset
from cadence.engine.events import Callback, TrainState
from cadence.engine.fast_engines import BatchEngine, OnlineKernel, kernel, mlp_layers, optimizer_kind
from cadence.engine.strategies import Update

# Config fields the fast path honours exactly (or that do not touch the update arithmetic). Every other
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
        "model.init",  # only the starting weights, which the kernel reads as it finds them
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
            )
        ),
        "eval.every_updates",
        "eval.batch_size",
        "seed",
        "threads",
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
    """Config fields set away from their defaults that the fast path does not implement."""
    default = _flat(RunConfig().model_dump(mode="python"))
    ours = _flat(config.model_dump(mode="python"))
    return sorted(k for k, v in ours.items() if k not in HONOURED_FIELDS and (k not in default or default[k] != v))


def supports(model: nn.Module, optimizer: torch.optim.Optimizer, config: RunConfig, data: Dataset) -> bool:
    """Whether the fast path computes exactly what autograd would for this run (to rounding)."""
    if unhonoured_fields(config) or config.strategy.name == Strategy.STREAM:
        return False
    layers = mlp_layers(model)
    if layers is None or optimizer_kind(optimizer, list(model.parameters())) is None:
        return False
    x, y, n_out = data.x_train, data.y_train, layers[0][-1].out_features
    if x.dtype != torch.float32 or not x.is_contiguous() or x.device.type != "cpu" or len(x) == 0:
        return False
    if layers[0][0].in_features != data.n_features:
        return False
    # The kernel indexes with the targets: anything autograd would reject goes there to be rejected.
    if data.task == "classification":
        return y.dtype == torch.int64 and y.ndim == 1 and int(y.min()) >= 0 and int(y.max()) < n_out
    shape_ok = (y.ndim == 1 and n_out == 1) or (y.ndim == 2 and y.shape[1] == n_out)
    return y.dtype == torch.float32 and y.is_contiguous() and shape_ok


def engine_for(
    model: nn.Module, optimizer: torch.optim.Optimizer, config: RunConfig, data: Dataset
) -> OnlineKernel | BatchEngine | None:
    """The engine for this run, or None when only autograd computes it exactly."""
    if not supports(model, optimizer, config, data):
        return None
    one_sample = config.strategy.name == Strategy.ONLINE or (
        config.strategy.name == Strategy.MINI_BATCH and config.strategy.batch_size == 1
    )
    if one_sample and kernel() is not None:
        return OnlineKernel(model, optimizer, data)
    return BatchEngine(model, optimizer, data)


def threads_for(config: RunConfig) -> int | None:
    """Torch threads for a strategy: one for one-sample updates (a second thread only adds hand-offs),
    torch's default otherwise. `config.threads` wins."""
    if config.threads:
        return config.threads
    s = config.strategy
    if s.name == Strategy.ONLINE or (s.name == Strategy.MINI_BATCH and s.batch_size == 1):
        return 1
    return None


def run_length(state: TrainState, engine, callbacks: Sequence[Callback]) -> int:
    """How many updates the next run may hold: never past an evaluation, a budget in updates or samples, or
    an update a callback must see with the weights of that update. Epoch ends close runs in `take`."""
    if engine is None or any(_sees_every_update(cb) for cb in callbacks):
        return 1
    config = state.config
    limit = engine.max_run
    every, stop = config.eval.every_updates, config.stop
    if every:
        limit = min(limit, every - state.updates % every)
    if stop.max_updates:
        limit = min(limit, stop.max_updates - state.updates)
    if stop.max_samples:  # an update holds at most batch_size samples: this never overshoots the budget
        per_update = state.n_train // state.updates_per_epoch + (state.n_train % state.updates_per_epoch > 0)
        limit = min(limit, -(-(stop.max_samples - state.samples) // per_update))
    return max(limit, 1)


def _sees_every_update(cb: Callback) -> bool:
    return type(cb).on_update_end is not Callback.on_update_end and cb.exact_updates


def take(pending: Iterator[Update], limit: int) -> list[Update]:
    """The next run of consecutive updates: at most `limit`, ending at an epoch end."""
    block = []
    for update in pending:
        block.append(update)
        if update.epoch_end or len(block) >= limit:
            break
    return block


__all__ = ["BatchEngine", "OnlineKernel", "engine_for", "kernel", "run_length", "supports", "take", "threads_for"]
