"""What a stream learner's checkpoint holds and how a learner is put back from one, exactly.

Weights, optimizer and schedule state, RNG states, prequential metrics (its own, and the quality gate's),
the drift detector's memory, counters, the ledger, how much of history.jsonl belongs to the checkpoint,
and the last trained message id. engine/checkpoint.py owns the file format.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson
import torch

from cadence.engine import checkpoint
from cadence.engine.resume import config_changes, config_sha256
from cadence.errors import ConfigError

if TYPE_CHECKING:
    from cadence.serve.learner import StreamLearner

KIND = "cadence-stream"
# Settings that say where and how the learner runs, not what it learns: a restart (or a standby taking
# over under its own consumer name) may change them freely.
OPERATIONAL = {
    f"stream.{k}"
    for k in (
        "source",
        "consumer",
        "read_count",
        "parse_workers",
        "checkpoint_every_samples",
        "checkpoint_seconds",
        "keep_checkpoints",
        "publish_seconds",
        "publish_every_samples",
        "keep_snapshots",
        "record_every_samples",
        "claim_idle_ms",
        "lease_ms",
        "idle_seconds",
        "max_samples",
        "ledger",
    )
} | {"threads"}
HISTORY = "history.jsonl"


def _tensors(state: dict) -> dict:
    """NumPy arrays as tensors, so they go to state.safetensors rather than into the JSON."""
    return {
        k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for k, v in state.items()
    }


def _arrays(state: dict) -> dict:
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def capture(learner: StreamLearner) -> tuple[dict, dict]:
    """(weights, meta) of `learner` between two polls: every message up to `last_id` is in it."""
    s = learner
    meta = {
        "kind": KIND,
        "config": s.config.model_dump(mode="json"),
        "config_sha256": config_sha256(s.config),
        "state": {"updates": s.counts["updates"], "samples": s.counts["samples_trained"]},
        "stream": {
            "source": s.source.name,
            "last_id": s.last_id,
            "counts": dict(s.counts),
            "dead_by_reason": dict(s.dead_by_reason),
            "history_bytes": s.history_bytes,
            "ledger": list(s.ledger),
            "served_version": s.store.current.version if s.store.current else 0,
        },
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(),
        "metrics": _tensors(s.metrics.state_dict()),
        "gate": {k: _tensors(v) if isinstance(v, dict) else v for k, v in s.gate.state_dict().items()},
        "drift": _tensors(s.drift.state_dict()),
        "preprocess": _tensors({k: np.asarray(v, np.float32).reshape(-1) for k, v in _preprocess(s).items()}),
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(legacy=False),
            "python": random.getstate(),
        },
        "versions": {"torch": torch.__version__},
    }
    return s.model.state_dict(), meta


def restore(learner: StreamLearner, ckpt: checkpoint.Checkpoint, allow_changes: bool = False) -> None:
    """Put `learner` (freshly built) back where `ckpt` left off. Checks first; changes nothing on failure.

    Raises:
        ConfigError: the checkpoint is not a stream learner's, its config differs (without allow_changes),
            or its weights do not fit the model.
    """
    s, meta = learner, ckpt.meta
    if meta.get("kind") != KIND:
        raise ConfigError(
            f"{ckpt.path} is a checkpoint of `cadence train`, not of a stream learner. Fix: give `cadence stream` "
            "its own --out directory, or start from that run's weights with --from."
        )
    changes = [
        c
        for c in config_changes(meta["config"], s.config.model_dump(mode="json"))
        if c.split(":")[0] not in OPERATIONAL
    ]
    if changes and not allow_changes:
        raise ConfigError(
            f"cannot continue the stream run in {s.run_dir}: the config differs from its checkpoint's: "
            f"{'; '.join(changes[:5])}. Fix: use the same settings, pass --allow-changes, or use another --out."
        )
    if "preprocess" in meta and not allow_changes:
        theirs = _arrays(meta["preprocess"])
        ours = {k: np.asarray(v, np.float32).reshape(-1) for k, v in _preprocess(s).items()}
        if any(not np.array_equal(np.broadcast_to(ours[k], theirs[k].shape), theirs[k]) for k in ours):
            raise ConfigError(
                f"cannot continue the stream run in {s.run_dir}: it was learned with another standardization of "
                "the inputs (center/scale). Fix: start it the same way (the same --from or --center/--scale), "
                "pass --allow-changes, or use another --out."
            )
    have = {k: tuple(v.shape) for k, v in s.model.state_dict().items()}
    if have != {k: tuple(v.shape) for k, v in ckpt.weights.items()}:
        raise ConfigError(
            f"the weights in {ckpt.path} do not fit this model. Fix: use the model spec it was written with."
        )
    s.model.load_state_dict(ckpt.weights)
    if not any(c.startswith("optimizer.") for c in changes):
        s.optimizer.load_state_dict(meta["optimizer"])
        s.scheduler.load_state_dict(meta["scheduler"])
    s.metrics.load_state_dict(_arrays(meta["metrics"]))
    s.gate.load_state_dict({k: _arrays(v) if isinstance(v, dict) else v for k, v in meta["gate"].items()})
    s.drift.load_state_dict(_arrays(meta["drift"]))
    st = meta["stream"]
    s.counts.update(st["counts"])
    s.dead_by_reason.update(st["dead_by_reason"])
    s.last_id = st["last_id"]
    s.last_pos = s.source.position(s.last_id) if s.last_id is not None else None
    s.ledger = list(st["ledger"])
    s.history_bytes = truncate_history(s.run_dir, st["history_bytes"])
    torch.set_rng_state(meta["rng"]["torch"])
    np.random.set_state(meta["rng"]["numpy"])
    random.setstate(meta["rng"]["python"])


def _preprocess(learner: StreamLearner) -> dict:
    return {"center": learner.center, "scale": learner.scale}


def append_history(run_dir: Path, records: list[dict], size: int) -> int:
    """Append `records` to history.jsonl (fsynced) after its first `size` bytes; return the new size.
    Written before the checkpoint that counts them, so a crash in between leaves lines a restart cuts off."""
    path = Path(run_dir) / HISTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.truncate(size)
        for r in records:
            f.write(orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def truncate_history(run_dir: Path, size: int) -> int:
    """Cut history.jsonl back to the `size` bytes a checkpoint counted (records after it are redone)."""
    path = Path(run_dir) / HISTORY
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)
    return size
