"""Published snapshots: the model serving answers from, in memory (one reference, swapped) and on disk
(`<run>/published/`, for replicas). The only module that knows the snapshot format.

Format: `snapshot-<version>.safetensors`, a model artefact (models/artefact.py: `cadence.load` reads it, with
its labels and standardization) whose header also holds the snapshot's own JSON (version, samples, metrics,
preprocessing) under "cadence-snapshot"; `LATEST` names the newest file. Both are written to a temp name and
renamed into place.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from cadence.config import ModelConfig, RunConfig
from cadence.errors import CheckpointError
from cadence.models import artefact, build_model

DIRNAME = "published"
LATEST = "LATEST"
SNAPSHOT_KEY = "cadence-snapshot"


@dataclass(frozen=True)
class Snapshot:
    """A frozen copy of the model with what it needs to answer: never changed once published."""

    version: int
    model: nn.Module
    meta: dict = field(default_factory=dict)  # task, n_features, class_names, center, scale, metric, ...

    @cached_property
    def _preprocessing(self) -> tuple:
        return preprocessing(self.meta, "center"), preprocessing(self.meta, "scale")  # once, not per request

    def predict(self, rows: np.ndarray) -> dict:
        """Answers for `rows` (n, n_features): labels and class probabilities, or predictions (regression).
        Every answer carries this snapshot's version."""
        center, scale = self._preprocessing
        x = torch.from_numpy((np.ascontiguousarray(rows, dtype=np.float32) - center) / scale)
        with torch.no_grad():
            out = self.model(x)
        if self.meta.get("task", "classification") != "classification":
            return {"version": self.version, "predictions": out.reshape(len(x), -1)[:, 0].tolist()}
        proba = torch.softmax(out, dim=1)
        idx = proba.argmax(dim=1).tolist()
        names = self.meta.get("class_names") or []
        labels = [names[i] if i < len(names) else i for i in idx]
        return {"version": self.version, "labels": labels, "classes": idx, "probabilities": proba.tolist()}


def preprocessing(meta: dict, key: str) -> float | np.ndarray:
    """The snapshot's `center` or `scale`: one number, or one per feature (a list in the JSON), as float32."""
    value = meta.get(key, 0.0 if key == "center" else 1.0)
    return np.asarray(value, np.float32) if isinstance(value, list) else value


def artefact_inputs(meta: dict) -> dict:
    """What models/artefact.py records about the inputs, for a model learned from a stream."""
    center, scale = preprocessing(meta, "center"), preprocessing(meta, "scale")
    standardize = None
    if not (np.all(np.equal(center, 0.0)) and np.all(np.equal(scale, 1.0))):
        shape = [meta["n_features"]] if isinstance(center, np.ndarray) or isinstance(scale, np.ndarray) else [1]
        standardize = {
            "shape": shape,
            "mean": np.broadcast_to(np.asarray(center, np.float32), shape).tolist(),
            "std": np.broadcast_to(np.asarray(scale, np.float32), shape).tolist(),
        }
    classification = meta.get("task", "classification") == "classification"
    return {
        "data": "stream",
        "task": meta.get("task", "classification"),
        "n_classes": meta["n_outputs"] if classification else None,
        "n_outputs": meta["n_outputs"],
        "input_shape": [meta["n_features"]],
        "labels": list(meta.get("class_names") or []) or None,
        "features": None,
        "target": None,
        "image": None,
        "standardize": standardize,
    }


def freeze(model: nn.Module, version: int, meta: dict) -> Snapshot:
    """A deep copy of `model` in eval mode without gradients: later training cannot touch it."""
    frozen = copy.deepcopy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return Snapshot(version, frozen, dict(meta))


class SnapshotStore:
    """The served snapshot. Readers take `store.current` once per request and use only that object;
    publishing builds a complete new Snapshot first and then swaps the one reference (atomic in Python),
    so no reader ever sees half-updated weights."""

    def __init__(self, directory: str | Path | None = None, keep: int = 5):
        self.directory = Path(directory) if directory else None
        self.keep = keep
        self.current: Snapshot | None = None
        self.published_at: float | None = None

    def next_version(self) -> int:
        on_disk = latest_version(self.directory) if self.directory else 0
        return max(on_disk or 0, self.current.version if self.current else 0) + 1

    def publish(self, model: nn.Module, meta: dict) -> Snapshot:
        snap = freeze(model, self.next_version(), meta)
        if self.directory is not None:
            write(self.directory, snap, self.keep)
        self.swap(snap)
        return snap

    def swap(self, snap: Snapshot) -> None:
        self.current = snap
        self.published_at = time.time()


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    write(tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write(directory: str | Path, snap: Snapshot, keep: int = 5) -> Path:
    """Write `snap` to `directory` and point LATEST at it; keep the newest `keep` snapshot files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"snapshot-{snap.version:08d}.safetensors"
    _atomic_write(path, lambda tmp: write_model(tmp, snap.model, {"version": snap.version, **snap.meta}))
    _atomic_write(directory / LATEST, lambda tmp: tmp.write_text(path.name + "\n"))
    for old in sorted(directory.glob("snapshot-*.safetensors"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def write_model(path: str | Path, model: nn.Module, meta: dict) -> None:
    """`model` as a model artefact at `path` (what `cadence.load` reads), its header also holding `meta`
    (the snapshot's JSON: model, n_features, n_outputs, task, class_names, center, scale, ...)."""
    header = {SNAPSHOT_KEY: json.dumps(meta)}
    if "model" not in meta:  # a module built by hand, not from a spec: cadence.load could not rebuild it
        weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(path), metadata=header)
        return
    config = RunConfig(model=ModelConfig(**meta["model"]))
    artefact.save(path, model, config, artefact_inputs(meta), metadata=header)


def save_model(path: str | Path, model: nn.Module, meta: dict) -> Path:
    """`write_model` to a temp name, then renamed into place (a run's final `model.safetensors`)."""
    _atomic_write(Path(path), lambda tmp: write_model(tmp, model, meta))
    return Path(path)


def latest_version(directory: str | Path | None) -> int | None:
    """The version LATEST points at, or None (no snapshot published there yet)."""
    if directory is None:
        return None
    try:
        name = (Path(directory) / LATEST).read_text().strip()
        return int(name.removeprefix("snapshot-").removesuffix(".safetensors"))
    except (OSError, ValueError):
        return None


def read(path: str | Path) -> Snapshot:
    """A snapshot file as a Snapshot (the model rebuilt from its header, the weights loaded).

    Raises:
        CheckpointError: missing, not a snapshot, or weights that do not fit the model it names.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[SNAPSHOT_KEY])
            weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  safe_open has no __iter__
    except (OSError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable cadence snapshot: {err}") from None
    model = build_model(ModelConfig(**meta["model"]), (meta["n_features"],), meta["n_outputs"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"the weights in {path} do not fit the model it names: {err}") from None
    return freeze(model, int(meta.pop("version")), meta)


def read_latest(directory: str | Path) -> Snapshot | None:
    """The snapshot LATEST points at (None when none is published). A file removed between reading LATEST
    and opening it (a newer one was published meanwhile) is retried once with the new LATEST."""
    for _ in range(3):
        version = latest_version(directory)
        if version is None:
            return None
        path = Path(directory) / f"snapshot-{version:08d}.safetensors"
        if path.exists():
            return read(path)
    return None


def read_version(directory: str | Path, version: int) -> Snapshot:
    """One published version (while it is still kept on disk)."""
    return read(Path(directory) / f"snapshot-{version:08d}.safetensors")
