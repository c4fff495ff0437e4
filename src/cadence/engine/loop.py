"""train(): the training loop. One loop for every strategy; the strategy only decides what each update holds."""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from cadence.config import RunConfig, Strategy, build_config
from cadence.config_keys import short_names
from cadence.data import inputs
from cadence.data.datasets import Dataset
from cadence.engine import checkpoint, fast, resume
from cadence.engine.evaluate import evaluate, metric_names
from cadence.engine.events import Callback, TrainState
from cadence.engine.faults import Guard
from cadence.engine.options import run_schedule, step_options
from cadence.engine.run import Run
from cadence.engine.step import step
from cadence.engine.stopping import Stopping, StopReason, budget_note
from cadence.engine.strategies import Update, updates_per_epoch
from cadence.errors import ConfigError, clip
from cadence.models import build_model
from cadence.models.artefact import describe_inputs
from cadence.models.builders import check_trusted, module_spec
from cadence.optim import build_optimizer


def resolve_config(config: RunConfig | dict | None, overrides: dict, caller: str = "train()") -> RunConfig:
    """A checked RunConfig from a config (or dict) plus keyword overrides: short names (`lr`, `max_epochs`:
    cadence.config_keys.short_names()) or dotted keys (`"optimizer.betas"`, or `optimizer__betas`)."""
    base = config if isinstance(config, RunConfig) else build_config(config)
    names = short_names()
    unknown = [k for k in overrides if k not in names and "." not in k and "__" not in k]
    if unknown:
        close = {m for k in unknown for m in difflib.get_close_matches(k, names, n=3, cutoff=0.55)}
        raise ConfigError(
            f"unknown {caller} argument(s) {clip(unknown)}"
            + (f"; did you mean {', '.join(sorted(close))}?" if close else ".")
            + " Fix: use a config key's short name (lr, batch_size, max_epochs, ...; all in "
            "cadence.config_keys.short_names()) or a dotted key such as 'optimizer.betas'."
        )
    dotted = {names.get(k) or k.replace("__", "."): v for k, v in overrides.items()}
    return base.with_overrides(dotted, source=f"{caller} arguments")


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


def as_dataset(data, config: RunConfig) -> Dataset:
    """`data` as a Dataset (cadence.data.inputs): None loads `config.data`; arrays and torch data are split."""
    return inputs.as_dataset(data, config.data, config.seed)


def prepare(model: nn.Module | None, data, config: RunConfig) -> tuple[nn.Module, Dataset]:
    """Load/check the data and build/check the model before any state changes."""
    if config.ensemble.members > 1:
        raise ConfigError(
            f"train() trains one model; ensemble.members = {config.ensemble.members}. Fix: call "
            "cadence.train_ensemble (or `cadence train --ensemble K`), or set ensemble.members=1."
        )
    data = as_dataset(data, config)
    if model is None:
        torch.manual_seed(config.seed)
        model = build_model(config.model, data.input_shape, data.n_outputs)
    _check_model(model, data)
    _check_stop_metric(config, data)
    return model, data


def train(
    model: nn.Module | str | None = None,
    data: Dataset | tuple | str | None = None,
    config: RunConfig | dict | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    resume_from: str | Path | None = None,
    allow_changes: bool = False,
    trust_code: bool = False,
    **overrides,
) -> Run:
    """Train `model` on `data` under `config.strategy`; return a Run with history and stop reason.

    Args:
        model: any nn.Module, a model spec such as "mlp:128,64", or None for `config.model.spec`;
            specs are built for the data's shape with the run's seed.
        data: a Dataset, an (x, y) tuple of arrays, a torch Dataset/TensorDataset/DataLoader of (x, y)
            pairs, a data set name ("digits", "file.csv"), or None to load `config.data`.
        config: a RunConfig or a nested dict; keyword overrides (`strategy="online"`, `lr=0.1`,
            `max_epochs=3`, or dotted keys) are applied on top and checked the same way.
        callbacks: Callback objects notified at run start, each update end, each epoch end and run end.
        resume_from: a run directory (its newest valid checkpoint) or one checkpoint to continue from,
            exactly: weights, optimizer, schedule, RNG, counters, history and data position come back.
            `config=None` means the checkpoint's config (overrides apply on top).
        allow_changes: resume even though the config or data differ from the checkpoint's.
        trust_code: let a checkpoint's config import the `package.module:factory` it names (without it,
            only a factory named again in `model`/overrides is imported).

    Raises:
        ConfigError, DataError: bad settings or data, before anything is trained.
        CheckpointError: `resume_from` holds no valid checkpoint.
    """
    if isinstance(model, str):
        overrides = {**overrides, "model.spec": model}
        model = None
    if isinstance(data, str):  # a data set's name, recorded in the config like a model spec
        overrides = {**overrides, "data.name": data}
        data = None
    ckpt = checkpoint.find(resume_from) if resume_from is not None else None
    spec_from_file = ckpt is not None and config is None and model is None and "model.spec" not in overrides
    if ckpt is not None and config is None:
        config = resume.resume_config(ckpt)
    config = resolve_config(config, overrides)
    if spec_from_file:
        check_trusted(config.model.spec, f"checkpoint {ckpt.path}", trust_code)
    if isinstance(model, nn.Module):  # config.yaml records the module, not the default spec
        config = config.with_overrides({f"model.{k}": v for k, v in module_spec(model).items()})
    model, data = prepare(model, data, config)
    x, y, n = data.x_train, data.y_train, len(data.x_train)
    threads = torch.get_num_threads()
    torch.set_num_threads(fast.threads_for(config) or threads)
    torch.manual_seed(config.seed)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    scheduler = run_schedule(config, optimizer, data)
    options = step_options(config, model, data)
    stopping = Stopping(config.stop)
    state = TrainState(
        config,
        model,
        optimizer,
        scheduler,
        n,
        updates_per_epoch(config.strategy, n),
        lr=optimizer.param_groups[0]["lr"],
        stopping=stopping,
        data_sha256=resume.data_sha256(x, y),
    )
    if ckpt is not None:
        resume.restore(ckpt, state, allow_changes)
    for cb in callbacks:
        cb.on_run_start(state)

    # None: autograd, one update at a time. Chosen after any resume: the kernel binds the restored tensors.
    engine = fast.engine_for(model, optimizer, config, data)
    guard = Guard(state).catch_signals()  # SIGINT/SIGTERM, non-finite updates; hands out the updates
    pending = guard.updates()
    reason: StopReason | None = state.stop_reason  # set when resuming a run that had finished
    start = time.perf_counter() - state.seconds  # a resumed run continues its clock
    model.train()
    try:
        while True:
            t0 = time.perf_counter()
            # A run of consecutive updates, never past an evaluation, epoch end or budget (one without engine).
            block = fast.take(pending, fast.run_length(state, engine, callbacks))
            if not block:
                break
            if engine:
                block_losses, applied = engine.apply(block, scheduler)
            else:
                loss, applied = step(model, optimizer, x, y, block[0], data.task, options)
                block_losses = loss.reshape(1)[: int(applied)]  # empty when the update was not applied
                if applied:
                    scheduler.step()
            state.train_seconds += time.perf_counter() - t0
            done = block[: len(block_losses)]  # all of it, unless an update's loss was not finite
            if done:
                state.losses.append(block_losses)  # kept as tensors; read once per evaluation
                _advance(state, done)
            if not applied:
                reason = guard.nonfinite(block[len(done)])
                if reason:
                    break
                continue
            every = config.eval.every_updates
            if done[-1].epoch_end or (every and state.updates % every == 0):
                record = _record(state, model, data, state.losses, start)
                state.losses = []
                scheduler.observe(record)  # reduce-on-plateau cuts, if configured
                reason = stopping.converged(record["train_loss"]) or stopping.early_stopped(record, model)
            state.seconds = time.perf_counter() - start
            reason = reason or stopping.budget(state.epochs_done, state.updates, state.samples, state.seconds)
            reason = reason or guard.interrupted()
            for cb in callbacks:
                reason = cb.on_update_end(state) or reason
                if done[-1].epoch_end:
                    reason = cb.on_epoch_end(state) or reason
            if reason:
                break
    except KeyboardInterrupt:
        reason = StopReason.INTERRUPTED
    finally:
        guard.release_signals()
        torch.set_num_threads(threads)
    if state.losses:  # the run ended between evaluations: record where it stopped
        _record(state, model, data, state.losses, start)
    restored = reason == StopReason.EARLY_STOPPED and stopping.restore_best(model)
    run = _finish(state, model, data, reason, restored, start)
    run.message, run.skipped_updates = guard.message or run.message, state.skipped_updates
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
        StopReason.DIVERGED: f"the loss or a gradient became non-finite at update {state.updates + 1}; that one "
        "was not applied and the last good weights are kept. Fix: lower the learning rate or clip gradients.",
        StopReason.EARLY_STOPPED: "no improvement of the validation metric within the patience"
        + ("; restored the best weights" if restored else ""),
    }.get(reason, "")
    if reason == StopReason.BUDGET and state.stopping is not None:
        message = budget_note(state.config.stop, state.history, state.stopping)
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
        inputs=describe_inputs(data),
    )


__all__ = ["Strategy", "train", "prepare", "resolve_config"]
