"""train(): the training loop. One loop for every strategy; the strategy only decides what each update holds."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from cadence.config import RunConfig, Strategy, build_config
from cadence.data.datasets import Dataset, from_arrays, load_data
from cadence.engine import fast
from cadence.engine.evaluate import evaluate, metric_names
from cadence.engine.events import Callback, TrainState
from cadence.engine.run import Run
from cadence.engine.step import step
from cadence.engine.stopping import Stopping, StopReason
from cadence.engine.strategies import Update, updates, updates_per_epoch
from cadence.errors import ConfigError, DataError
from cadence.models import build_model
from cadence.optim import build_optimizer, build_schedule

# Short keyword names accepted by train(**overrides), mapped to their place in RunConfig.
SHORTCUTS = {
    "strategy": "strategy.name",
    "batch_size": "strategy.batch_size",
    "chunk_size": "strategy.chunk_size",
    "drop_last": "strategy.drop_last",
    "optimizer": "optimizer.name",
    "lr": "optimizer.lr",
    "momentum": "optimizer.momentum",
    "weight_decay": "optimizer.weight_decay",
    "schedule": "schedule.name",
    "max_epochs": "stop.max_epochs",
    "max_updates": "stop.max_updates",
    "max_samples": "stop.max_samples",
    "max_seconds": "stop.max_seconds",
    "tol": "stop.tol",
    "target_loss": "stop.target_loss",
    "early_stopping": "stop.early_stopping_metric",
    "patience": "stop.early_stopping_patience",
    "eval_every_updates": "eval.every_updates",
    "seed": "seed",
    "threads": "threads",
    "model": "model.spec",
}


def resolve_config(config: RunConfig | dict | None, overrides: dict) -> RunConfig:
    """A checked RunConfig from a config (or dict) plus keyword overrides (short names or dotted keys)."""
    base = config if isinstance(config, RunConfig) else build_config(config)
    unknown = [k for k in overrides if k not in SHORTCUTS and "." not in k]
    if unknown:
        raise ConfigError(
            f"unknown train() argument(s) {unknown}. Allowed: {', '.join(SHORTCUTS)}, "
            "or a dotted config key such as 'optimizer.betas'."
        )
    return base.with_overrides({SHORTCUTS.get(k, k).replace("__", "."): v for k, v in overrides.items()})


def _check_model(model: nn.Module, data: Dataset) -> None:
    """Run two samples through the model before training: the output must have one column per class."""
    probe = data.x_train[:2]
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            out = model(probe)
            model.train(was)
    except Exception as err:
        raise ConfigError(
            f"the model fails on inputs of shape {tuple(probe.shape)}: {err}. Fix: make the "
            f"model accept {data.input_shape} per sample."
        ) from None
    want = data.n_outputs
    got = out.shape[1] if out.ndim == 2 else (1 if out.ndim == 1 else None)
    if got != want:
        raise ConfigError(
            f"the model outputs shape {tuple(out.shape[1:])} per sample but the data needs {want} "
            f"({data.task}{', n_classes=' + str(data.n_classes) if data.n_classes else ''}). "
            f"Fix: make the last layer output {want}."
        )


def _check_stop_metric(config: RunConfig, data: Dataset) -> None:
    metric = config.stop.early_stopping_metric
    if metric is None:
        return
    allowed = metric_names(data.task)
    if metric not in allowed:
        raise ConfigError(
            f"stop.early_stopping_metric = {metric!r} is not a validation metric of this "
            f"{data.task} task. Allowed: {', '.join(allowed)}."
        )
    if len(data.x_val) == 0:
        raise ConfigError(
            "early stopping needs a validation split; data.val_fraction is 0. "
            "Fix: set data.val_fraction > 0 or drop stop.early_stopping_metric."
        )


def prepare(model: nn.Module | None, data, config: RunConfig) -> tuple[nn.Module, Dataset]:
    """Load/check the data and build/check the model before any state changes."""
    if data is None:
        data = load_data(config.data, seed=config.seed)
    elif isinstance(data, tuple | list):
        data = from_arrays(*data, config=config.data, seed=config.seed)
    elif not isinstance(data, Dataset):
        raise DataError(f"data must be a Dataset, an (x, y) tuple or None; got {type(data).__name__}.")
    if model is None:
        torch.manual_seed(config.seed)
        model = build_model(config.model, data.input_shape, data.n_outputs)
    _check_model(model, data)
    _check_stop_metric(config, data)
    return model, data


def train(
    model: nn.Module | None = None,
    data: Dataset | tuple | None = None,
    config: RunConfig | dict | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    **overrides,
) -> Run:
    """Train `model` on `data` under `config.strategy`; return a Run with history and stop reason.

    Args:
        model: any nn.Module; None builds `config.model.spec` (seeded) for the data.
        data: a Dataset, an (x, y) tuple of arrays, or None to load `config.data`.
        config: a RunConfig or a nested dict; keyword overrides (`strategy="online"`, `lr=0.1`,
            `max_epochs=3`, or dotted keys) are applied on top and checked the same way.
        callbacks: Callback objects notified at run start, each update end, each epoch end and run end.

    Raises:
        ConfigError, DataError: bad settings or data, before anything is trained.
    """
    config = resolve_config(config, overrides)
    model, data = prepare(model, data, config)
    x, y, n = data.x_train, data.y_train, len(data.x_train)
    threads = torch.get_num_threads()
    torch.set_num_threads(fast.threads_for(config) or threads)
    torch.manual_seed(config.seed)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    scheduler = build_schedule(optimizer, config.schedule)
    engine = fast.engine_for(model, optimizer, config, data)  # None: autograd, one update at a time
    stopping = Stopping(config.stop)
    state = TrainState(
        config,
        model,
        optimizer,
        scheduler,
        n,
        updates_per_epoch(config.strategy, n),
        lr=optimizer.param_groups[0]["lr"],
    )
    for cb in callbacks:
        cb.on_run_start(state)

    losses: list[torch.Tensor] = []  # kept as tensors; read once per evaluation
    reason: StopReason | None = None
    pending = updates(config.strategy, n, config.seed)
    start = time.perf_counter()
    model.train()
    try:
        while True:
            t0 = time.perf_counter()
            # A run of consecutive updates, never past an evaluation, epoch end or budget (one without engine).
            block = fast.take(pending, fast.run_length(state, engine, callbacks))
            if engine:
                block_losses, applied = engine.apply(block, scheduler)
            else:
                loss, applied = step(model, optimizer, x, y, block[0], data.task)
                block_losses = loss.reshape(1)[: int(applied)]  # empty when the update was not applied
                if applied:
                    scheduler.step()
            state.train_seconds += time.perf_counter() - t0
            done = block[: len(block_losses)]  # all of it, unless an update's loss was not finite
            if done:
                losses.append(block_losses)
                _advance(state, done)
            if not applied:
                reason = StopReason.DIVERGED
                break
            every = config.eval.every_updates
            if done[-1].epoch_end or (every and state.updates % every == 0):
                record = _record(state, model, data, losses, start)
                losses = []
                reason = stopping.converged(record["train_loss"]) or stopping.early_stopped(record, model)
            state.seconds = time.perf_counter() - start
            reason = reason or stopping.budget(state.epochs_done, state.updates, state.samples, state.seconds)
            for cb in callbacks:
                reason = cb.on_update_end(state) or reason
                if done[-1].epoch_end:
                    reason = cb.on_epoch_end(state) or reason
            if reason:
                break
    except KeyboardInterrupt:
        reason = StopReason.INTERRUPTED
    finally:
        torch.set_num_threads(threads)
    if losses:  # the run ended between evaluations: record where it stopped
        _record(state, model, data, losses, start)
    restored = reason == StopReason.EARLY_STOPPED and stopping.restore_best(model)
    run = _finish(state, model, data, reason, restored, start)
    for cb in callbacks:
        cb.on_run_end(state, run)
    return run


def _advance(state: TrainState, done: list[Update]) -> None:
    """Count the updates just applied and note where in the data they ended."""
    state.updates += len(done)
    state.samples += sum(u.n_samples for u in done)
    state.epoch, state.position = done[-1].epoch, done[-1].position
    state.epochs_done += sum(u.epoch_end for u in done)
    state.lr = state.optimizer.param_groups[0]["lr"]


def _record(state: TrainState, model: nn.Module, data: Dataset, losses: list[torch.Tensor], start: float) -> dict:
    t0 = time.perf_counter()
    record = {
        "epoch": state.samples / state.n_train,
        "updates": state.updates,
        "samples": state.samples,
        "seconds": t0 - start,
        "lr": state.lr,
        "train_loss": float(torch.cat(losses).mean()) if losses else float("nan"),
        **evaluate(model, data.x_val, data.y_val, data.task, data.n_classes, state.config.eval.batch_size),
    }
    state.history.append(record)
    state.eval_seconds += time.perf_counter() - t0
    return record


def _finish(
    state: TrainState,
    model: nn.Module,
    data: Dataset,
    reason: StopReason | None,
    restored: bool,
    start: float,
) -> Run:
    batch = state.config.eval.batch_size
    val = evaluate(model, data.x_val, data.y_val, data.task, data.n_classes, batch)
    test = evaluate(
        model, data.x_test, data.y_test, data.task, data.n_classes, batch, prefix="test_", with_confusion=True
    )
    confusion = test.pop("test_confusion_matrix", None)
    reason = reason or StopReason.BUDGET
    message = {
        StopReason.DIVERGED: f"the training loss became non-finite at update {state.updates + 1}; that update "
        "was not applied and the last good weights are kept. Fix: lower the learning rate or clip gradients.",
        StopReason.EARLY_STOPPED: "no improvement of the validation metric within the patience"
        + ("; restored the best weights" if restored else ""),
    }.get(reason, "")
    return Run(
        config=state.config,
        model=model,
        history=state.history,
        stop_reason=reason,
        updates=state.updates,
        samples_seen=state.samples,
        epochs=state.samples / state.n_train,
        seconds=time.perf_counter() - start,
        train_seconds=state.train_seconds,
        eval_seconds=state.eval_seconds,
        test_metrics=test,
        val_metrics=val,
        confusion_matrix=confusion,
        restored_best=restored,
        message=message,
    )


__all__ = ["Strategy", "train", "prepare", "resolve_config"]
