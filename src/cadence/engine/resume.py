"""What a checkpoint holds and how a run is put back from one, exactly.

`capture` turns a TrainState between two updates into checkpoint content: weights, optimizer and schedule
state, RNG states (torch, NumPy, Python), counters, history, the stop checks' memory, the train losses
since the last evaluation, the data position and a fingerprint of the data order, and the config with
its hash. `restore` checks all of it against the new run before changing anything, then loads it, so the
loop continues the same `updates()` sequence from (epoch, position). checkpoint.py owns the file format.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cadence.config import RunConfig, build_config
from cadence.engine import checkpoint
from cadence.engine.events import TrainState
from cadence.engine.stopping import StopReason
from cadence.engine.strategies import epoch_order
from cadence.errors import CheckpointError, ConfigError

# TrainState fields that are objects with their own state, handled one by one below.
_OBJECTS = {"config", "model", "optimizer", "scheduler", "stopping", "losses", "checkpoint_dir", "stop_reason"}
_OBJECTS |= {"group"}  # a data-parallel job's process group: the job's, never a checkpoint's


def config_sha256(config: RunConfig) -> str:
    return hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def data_sha256(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of the training tensors (shape, dtype and values); at most ~16 MB of rows is hashed, evenly
    strided, so a fingerprint costs a few milliseconds even for large sets."""
    h = hashlib.sha256(f"{tuple(x.shape)} {x.dtype} {tuple(y.shape)} {y.dtype}".encode())
    stride = max(1, x.numel() * x.element_size() // (16 << 20))
    for t in (x, y):
        h.update(np.ascontiguousarray(t[::stride].detach().cpu().numpy()).tobytes())
    return h.hexdigest()


def order_sha256(state: TrainState) -> str:
    """SHA-256 of the sample order of the next update's epoch: a resume checks torch still draws it."""
    epoch, _ = state.next_position()
    order = epoch_order(state.n_train, state.config.seed, epoch, state.config.strategy.shuffle)
    return hashlib.sha256(order.numpy().tobytes()).hexdigest()


def capture(state: TrainState, *, stop_reason: StopReason | None = None, history_len: int | None = None) -> tuple:
    """Checkpoint content (weights, meta) for `state`, taken between two updates.

    Args:
        stop_reason: how the run ended, for the checkpoint written at run end (None mid-run).
        history_len: keep only this many history records (the run-end record of a partial period is
            recomputed by a resumed run, so it is left out).
    """
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.name not in _OBJECTS}
    if history_len is not None:
        fields["history"] = state.history[:history_len]
    epoch, position = state.next_position()
    stopping = {k: v for k, v in vars(state.stopping).items() if k != "config"} if state.stopping else {}
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(legacy=False), "python": random.getstate()}
    meta = {
        "config": state.config.model_dump(mode="json"),
        "config_sha256": config_sha256(state.config),
        "state": fields,
        "next": {"epoch": epoch, "position": position, "order_sha256": order_sha256(state)},
        "stop_reason": None if stop_reason is None else stop_reason.value,
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        "stopping": stopping,
        "losses": torch.cat([t.detach().reshape(-1).cpu() for t in state.losses]) if state.losses else None,
        "rng": rng,
        # Under DDP every process's RNG (dropout draws differ per process), by rank; collective: every
        # process of the job calls capture at the same update.
        "rng_ranks": state.group.gather_object(rng, "gathering RNG states for a checkpoint")
        if state.group
        else None,
        "versions": {"torch": torch.__version__},
    }
    return state.model.state_dict(), meta


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, as `key: old -> new`."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def resume_config(ckpt: checkpoint.Checkpoint) -> RunConfig:
    """The config a checkpoint was written with."""
    try:
        return build_config(ckpt.meta["config"], source=f"checkpoint {ckpt.path}")
    except ConfigError as err:
        raise CheckpointError(f"{err}\n(the checkpoint was written by an incompatible cadence version)") from None


def _check_weights(model: nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if have != got:
        diff = sorted(
            [f"{k}: missing from the checkpoint" for k in have.keys() - got.keys()]
            + [f"{k}: not in the model" for k in got.keys() - have.keys()]
            + [
                f"{k}: {got[k]} in the checkpoint, {have[k]} in the model"
                for k in have.keys() & got.keys()
                if have[k] != got[k]
            ]
        )
        raise ConfigError(
            f"the weights in {where} do not fit this model: {'; '.join(diff[:5])}"
            f"{f' (and {len(diff) - 5} more)' if len(diff) > 5 else ''}. Fix: use the same model spec "
            "(model.spec) and data shape as the run that wrote it."
        )


def load_weights(where: str | Path, model: nn.Module) -> checkpoint.Checkpoint:
    """Load the weights of the newest valid checkpoint at `where` into `model` (for a new run that
    starts from old weights, `cadence train --from RUN_DIR`). Returns the checkpoint.

    Raises:
        CheckpointError: no valid checkpoint. ConfigError: the weights do not fit the model.
    """
    ckpt = checkpoint.find(where)
    _check_weights(model, ckpt.weights, ckpt.path)
    model.load_state_dict(ckpt.weights)
    return ckpt


def start_from(where: str | Path, config: RunConfig, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """A new model for `config` (built as train() builds it) holding the weights of an earlier run: its
    newest valid checkpoint, or else its final `model.safetensors`. For incremental training, e.g. on
    new data; the optimizer, counters and history start fresh.

    Raises:
        CheckpointError: `where` has neither. ConfigError: the weights do not fit the model.
    """
    from safetensors.torch import load_file

    from cadence.models import build_model

    torch.manual_seed(config.seed)
    model = build_model(config.model, input_shape, n_outputs)
    try:
        load_weights(where, model)
    except CheckpointError:
        final = Path(where) / "model.safetensors"
        if not final.is_file():
            raise
        weights = load_file(final)
        _check_weights(model, weights, final)
        model.load_state_dict(weights)
    return model


def start_config(where: str | Path) -> RunConfig:
    """The config of an earlier run: its newest valid checkpoint's, or else its config.yaml."""
    try:
        return resume_config(checkpoint.find(where))
    except CheckpointError:
        from cadence.config import load_config

        if not (Path(where) / "config.yaml").is_file():
            raise
        return load_config(Path(where) / "config.yaml")


def check(ckpt: checkpoint.Checkpoint, state: TrainState, allow_changes: bool = False) -> list[str]:
    """Whether `ckpt` can continue the freshly built run `state`; changes nothing. Returns the config
    changes that are allowed (empty for an exact resume).

    Raises:
        ConfigError: the config or the training data differ (without allow_changes), or the weights do not
            fit the model. CheckpointError: this torch draws another data order than the writer's did.
    """
    meta = ckpt.meta
    changes = config_changes(meta["config"], state.config.model_dump(mode="json"))
    old_n = meta["state"].get("n_train")
    data_changed = old_n != state.n_train or meta["state"].get("data_sha256") != state.data_sha256
    if (changes or data_changed) and not allow_changes:
        what = ["the config differs: " + "; ".join(changes)] if changes else []
        if data_changed:
            same = ", same count but other values" if old_n == state.n_train else ""
            what.append(f"the training data differ ({old_n} -> {state.n_train} samples{same})")
        raise ConfigError(
            f"cannot resume from {ckpt.path}: {' and '.join(what)}. Fix: resume with the same settings, "
            "pass --allow-changes (allow_changes=True) to continue with the new ones, or start a new run "
            "from these weights with --from."
        )
    _check_weights(state.model, ckpt.weights, ckpt.path)
    nxt = meta["next"]
    order = epoch_order(state.n_train, state.config.seed, nxt["epoch"], state.config.strategy.shuffle)
    if (
        not (changes or data_changed)
        and hashlib.sha256(order.numpy().tobytes()).hexdigest() != nxt["order_sha256"]
    ):
        raise CheckpointError(
            f"cannot resume exactly from {ckpt.path}: this torch ({torch.__version__}) draws another sample "
            f"order for epoch {nxt['epoch']} than the one that wrote it "
            f"({meta.get('versions', {}).get('torch')}). Fix: resume with that torch version, or pass "
            "--allow-changes to accept a different order."
        )
    return changes


def restore(ckpt: checkpoint.Checkpoint, state: TrainState, allow_changes: bool = False) -> list[str]:
    """Put a freshly built run (`state`: model, optimizer, schedule, stopping) back where `ckpt` left off.
    Everything is checked first (`check`); nothing changes unless all checks pass. Returns the config
    changes that were allowed (empty for an exact resume).

    With `allow_changes`, the weights, counters, history, data position and RNG come back; the optimizer
    state only if the optimizer settings are unchanged, the schedule state only if neither the optimizer
    nor the schedule changed; a changed training set starts at the next epoch.

    Raises:
        ConfigError, CheckpointError: as `check`.
    """
    changes = check(ckpt, state, allow_changes)
    meta = ckpt.meta
    data_changed = (
        meta["state"].get("n_train") != state.n_train or meta["state"].get("data_sha256") != state.data_sha256
    )
    same_optimizer = not any(c.startswith("optimizer.") for c in changes)
    same_schedule = same_optimizer and not any(c.startswith("schedule.") for c in changes)

    state.model.load_state_dict(ckpt.weights)
    if same_optimizer:
        state.optimizer.load_state_dict(meta["optimizer"])
    if same_schedule and state.scheduler is not None and meta["scheduler"] is not None:
        state.scheduler.load_state_dict(meta["scheduler"])
    if state.stopping is not None:
        for key, value in meta["stopping"].items():
            setattr(state.stopping, key, value)
    fixed = _OBJECTS | {"n_train", "updates_per_epoch", "data_sha256"}
    names = {f.name for f in dataclasses.fields(state)} - fixed
    for key, value in meta["state"].items():
        if key in names:
            setattr(state, key, value)
    state.skipped_positions = [list(p) for p in state.skipped_positions]
    state.losses = [meta["losses"]] if meta["losses"] is not None else []
    state.lr = state.optimizer.param_groups[0]["lr"]
    rng = _rng_of_this_process(meta, state)
    if rng is not None:
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
    if data_changed and state.next_position()[1]:  # a position into the old data means nothing now
        state.epochs_done = state.epoch + 1
    state.stop_reason = _still_stopped(meta["stop_reason"], state, bool(changes or data_changed))
    return changes


def _rng_of_this_process(meta: dict, state: TrainState) -> dict | None:
    """The RNG states this process continues with: its own rank's from a data-parallel checkpoint, rank 0's
    (the only one) otherwise; None for a rank the checkpoint has none for (it was written by fewer
    processes): that process keeps its fresh per-rank seed."""
    rank = state.group.rank if state.group is not None else 0
    ranks = meta.get("rng_ranks")
    if ranks:
        return ranks[rank] if rank < len(ranks) else None
    return meta["rng"] if rank == 0 else None


def _still_stopped(saved: str | None, state: TrainState, changed: bool) -> StopReason | None:
    """A run that had finished stays finished on an exact resume (it trains nothing more); with changed
    settings, or after an interruption, it continues while its budget allows."""
    if saved is None or saved == StopReason.INTERRUPTED:
        return None
    if not changed:
        return StopReason(saved)
    s = state
    return state.stopping.budget(s.epochs_done, s.updates, s.samples, s.seconds) if state.stopping else None


def summary(ckpt: checkpoint.Checkpoint) -> str:
    """One line on where a checkpoint is: `ckpt-000012 (update 300, epoch 0, position 300)`."""
    nxt: dict[str, Any] = ckpt.meta["next"]
    return f"{ckpt.path} (update {ckpt.updates}, epoch {nxt['epoch']}, position {nxt['position']})"
