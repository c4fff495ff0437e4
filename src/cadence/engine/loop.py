"""train(): the training loop, one for every strategy and every engine.

The strategy decides what each update holds (strategies.py); the engine applies runs of them (engine/fast:
autograd, or an acceleration computing the same); `start` checks everything before the first state change.
A stream plugs in as another update source over a resident buffer (engine/fast/__init__.py says how), DDP as
the autograd engine over a wrapped model, each process applying its slice of every update, all of them agreeing
after each update whether to stop (engine/distributed.py). The loop itself never asks which engine it drives.
"""

from __future__ import annotations

import dataclasses
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
from cadence.engine import budget, checkpoint, distributed, resume, strategies
from cadence.engine.evaluate import evaluate, metric_names
from cadence.engine.events import Callback, TrainState
from cadence.engine.fast import choose_engine
from cadence.engine.faults import Guard
from cadence.engine.options import device_for, run_schedule, step_options, threads_for, torch_threads
from cadence.engine.run import Run
from cadence.engine.step import Engine
from cadence.engine.stopping import Stopping, StopReason, budget_note
from cadence.engine.strategies import Block, Update
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
        with torch.random.fork_rng(devices=[]):  # the run's seed, leaving the caller's RNG as it was
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
        ConfigError, DataError: bad settings or data, before any callback runs or any state changes.
        CheckpointError: `resume_from` holds no valid checkpoint.
    """
    if isinstance(model, str):
        overrides, model = {**overrides, "model.spec": model}, None
    if isinstance(data, str):  # a data set's name, recorded in the config like a model spec
        overrides, data = {**overrides, "data.name": data}, None
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
    state, data, engine, guard = start(model, data, config, callbacks, ckpt, allow_changes)
    # Every check has passed; from here on, state changes.
    reason = state.stop_reason  # a resumed run that had finished
    begin = time.perf_counter() - state.seconds  # a resumed run continues its clock
    threads = threads_for(config, engine, model, data)
    with torch_threads(threads), guard.signals():
        try:
            for cb in callbacks:
                cb.on_run_start(state)
            model.train()
            while reason is None:
                t0 = time.perf_counter()
                updates = guard.take(run_length(state, engine, callbacks))
                if not updates:
                    break
                applied = engine.apply(updates)  # in order; stops before a non-finite loss or gradient
                state.train_seconds += time.perf_counter() - t0
                if applied.n:
                    state.losses.append(applied.losses)  # kept as tensors; read once per evaluation
                    advance(state, updates[: applied.n])
                if applied.n < len(updates):  # that update was not applied: stop, skip or roll back
                    reason = distributed.agree(state.group, guard.nonfinite(updates[applied.n]), state.updates)
                    continue
                if evaluation_due(state, updates[-1]):
                    record = _record(state, model, data, begin)
                    state.scheduler.observe(record)  # reduce-on-plateau cuts, if configured
                    reason = state.stopping.converged(record["train_loss"])
                    reason = reason or state.stopping.early_stopped(record, model)
                state.seconds = time.perf_counter() - begin
                reason = reason or state.stopping.budget(
                    state.epochs_done, state.updates, state.samples, state.seconds
                )
                reason = reason or guard.interrupted()
                for cb in callbacks:
                    reason = cb.on_update_end(state) or reason
                    if updates[-1].epoch_end:
                        reason = cb.on_epoch_end(state) or reason
                # DDP: one process's reason (its clock, a signal) stops all of them after the same update
                reason = distributed.agree(state.group, reason, state.updates)
        except KeyboardInterrupt:  # outside the main thread, where SIGINT cannot be caught as a flag
            reason = StopReason.INTERRUPTED
    if state.losses:  # ended between evaluations: record where it stopped (a run-end checkpoint keeps them)
        _record(state, model, data, begin, drain=False)
    run = _finish(state, model, data, engine, guard, reason, begin)
    run.threads = threads
    for cb in callbacks:
        cb.on_run_end(state, run)
    return run


def start(
    model: nn.Module,
    data: Dataset,
    config: RunConfig,
    callbacks: Sequence[Callback],
    ckpt: checkpoint.Checkpoint | None,
    allow_changes: bool,
) -> tuple[TrainState, Dataset, Engine, Guard]:
    """Everything the loop needs, every check first: device, strategy options, schedule, step options,
    fault policy, resume compatibility. Only then the process joins a data-parallel job (under torchrun), the
    model and data go to the device, a resume restores its checkpoint and the engine is chosen (after the
    resume: it binds the restored tensors): DDP's wraps the model.

    Raises:
        ConfigError: a setting this run cannot honour. CheckpointError: a checkpoint it cannot continue.
    """
    x, y, n = data.x_train, data.y_train, len(data.x_train)
    strategies.check(config.strategy, n)
    distributed.check(config, distributed.process_env()[1], model)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    scheduler = run_schedule(config, optimizer, data)
    options = step_options(config, model, data)
    device = distributed.local_device(device_for(config, model, optimizer, scheduler, data, options), config)
    state = TrainState(
        config,
        model,
        optimizer,
        scheduler,
        n,
        budget.updates_per_epoch(config.strategy, n),
        lr=optimizer.param_groups[0]["lr"],
        stopping=Stopping(config.stop),
        data_sha256=resume.data_sha256(x, y),
        checkpoint_dir=next((cb.checkpoint_dir for cb in callbacks if cb.checkpoint_dir is not None), None),
    )
    guard = Guard(state)  # SIGINT/SIGTERM and non-finite updates; hands out the updates
    if ckpt is not None:
        resume.check(ckpt, state, allow_changes)
    state.group = group = distributed.join(config, device)  # None for one process
    torch.manual_seed(distributed.process_seed(config.seed))
    if device.type != "cpu":
        model.to(device)  # parameters keep their identity: the optimizer still holds them
        data = on_device(data, device)
    if ckpt is not None:
        resume.restore(ckpt, state, allow_changes)
    x, y = data.x_train, data.y_train
    engine = (
        distributed.DataParallelEngine(group, model, optimizer, scheduler, x, y, data.task, options)
        if group is not None
        else choose_engine(model, optimizer, scheduler, config, x, y, data.task, options)
    )
    return state, data, engine, guard


def on_device(data: Dataset, device: torch.device) -> Dataset:
    """The data set with its splits on `device` (resident for the whole run)."""
    splits = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    return dataclasses.replace(data, **{k: getattr(data, k).to(device) for k in splits})


def run_length(state: TrainState, engine: Engine, callbacks: Sequence[Callback]) -> int:
    """How many updates the next run may hold: at most the engine's (and the strategy's) run, never past an
    evaluation, a budget in updates or samples, or an update a callback must see with that update's
    weights. Epoch ends close runs (Guard.take)."""
    if any(_sees_every_update(cb) for cb in callbacks):
        return 1
    config = state.config
    limits = [engine.max_run, budget.max_run(config.strategy)]
    every = config.eval.every_updates
    if every:
        limits.append(every - state.updates % every)
    limits.append(budget.updates_left(config, state.n_train, state.updates, state.samples))
    return max(1, min(limit for limit in limits if limit is not None))


def _sees_every_update(cb: Callback) -> bool:
    return type(cb).on_update_end is not Callback.on_update_end and cb.exact_updates


def advance(state: TrainState, done: Sequence[Update]) -> None:
    """Count the updates just applied and note where in the data they ended."""
    last = done[-1]
    state.updates += len(done)
    if isinstance(done, Block):  # one epoch's consecutive updates: no Update objects made
        state.samples += done.n_samples
        state.epochs_done += last.epoch_end
    else:
        state.samples += sum(u.n_samples for u in done)
        state.epochs_done += sum(u.epoch_end for u in done)
    state.epoch, state.position = last.epoch, last.position
    state.lr = state.optimizer.param_groups[0]["lr"]


def evaluation_due(state: TrainState, last: Update) -> bool:
    """At every epoch end and every `eval.every_updates` updates."""
    every = state.config.eval.every_updates
    return last.epoch_end or bool(every and state.updates % every == 0)


def _record(state: TrainState, model: nn.Module, data: Dataset, begin: float, drain: bool = True) -> dict:
    """One history record: counters, lr, the mean train loss since the last one (drained from the state
    unless `drain` is False), validation metrics."""
    t0 = time.perf_counter()
    losses = [t.detach().float().cpu().reshape(-1) for t in state.losses]
    record = {
        "epoch": state.samples / state.n_train,
        "updates": state.updates,
        "samples": state.samples,
        "seconds": t0 - begin,
        "lr": state.lr,
        "train_loss": float(torch.cat(losses).mean()) if losses else float("nan"),
        **evaluate(
            model,
            data.x_val,
            data.y_val,
            data.task,
            data.n_classes,
            state.config.eval.batch_size,
            group=state.group,
        ),
    }
    state.history.append(record)
    if drain:
        state.losses = []
    state.eval_seconds += time.perf_counter() - t0
    return record


def _finish(
    state: TrainState,
    model: nn.Module,
    data: Dataset,
    engine: Engine,
    guard: Guard,
    reason: StopReason | None,
    begin: float,
) -> Run:
    """The Run: best weights restored for early stopping, final validation and test metrics, the message."""
    restored = reason == StopReason.EARLY_STOPPED and state.stopping.restore_best(model)
    batch = state.config.eval.batch_size
    group = state.group
    val = evaluate(model, data.x_val, data.y_val, data.task, data.n_classes, batch, group=group)
    test = evaluate(
        model,
        data.x_test,
        data.y_test,
        data.task,
        data.n_classes,
        batch,
        "test_",
        with_confusion=True,
        group=group,
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
        seconds=time.perf_counter() - begin,
        train_seconds=state.train_seconds,
        eval_seconds=state.eval_seconds,
        test_metrics=test,
        val_metrics=val,
        confusion_matrix=confusion,
        restored_best=restored,
        message=guard.message or message,
        skipped_updates=state.skipped_updates,
        engine=engine.name,
        engine_fallback=engine.fallback,
        device=str(data.x_train.device),
        inputs=describe_inputs(data),
        processes=group.size if group is not None else 1,
        rank=group.rank if group is not None else 0,
    )


__all__ = ["Strategy", "advance", "prepare", "resolve_config", "run_length", "start", "train"]
