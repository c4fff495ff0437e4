"""Atomic checkpoints on disk: write, verify, find the newest valid one, prune. Never pickle.

A checkpoint is a directory `<run>/checkpoints/ckpt-<seq>` holding `model.safetensors` (the weights),
`state.safetensors` (every other tensor: optimizer moments, RNG, ...), `state.json` (everything else,
with tensors replaced by {"__tensor__": key}) and `manifest.json` (the SHA-256 and size of each file, and
a SHA-256 of its own body). It is written as a temp directory in the same parent: each file fsynced, the
manifest last, then `os.replace` into place and the parent directory fsynced. A checkpoint whose manifest
is missing or does not match its files does not exist. What goes into a checkpoint and how a run is
restored from one lives in resume.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from cadence.errors import CheckpointError

FORMAT = "cadence-checkpoint"
VERSION = 1
DIRNAME = "checkpoints"
TEMP = ".tmp-"  # anything starting with this is an unfinished write or delete; it does not exist
MANIFEST = "manifest.json"
FILES = ("model.safetensors", "state.safetensors", "state.json")
_NAME = re.compile(r"ckpt-(\d{6,})$")


class CheckpointWarning(UserWarning):
    """A checkpoint on disk is incomplete or corrupt and was skipped."""


@dataclass
class Checkpoint:
    """A verified checkpoint read into memory."""

    path: Path
    meta: dict  # state.json, tensors already put back in place
    weights: dict[str, torch.Tensor]

    @property
    def updates(self) -> int:
        return int(self.meta["state"]["updates"])


# --- JSON with tensors on the side -------------------------------------------------------------------


def encode(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    """`obj` as JSON-ready data; tensors are moved into `tensors` under `key` and left as placeholders.

    Tuples, non-string dict keys and NumPy arrays are tagged so `decode` gives back the same types.

    Raises:
        CheckpointError: an object that is neither a tensor nor plain data (a function, a module, ...).
    """
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v, tensors, f"{key}.{k}") for k, v in obj.items()}
        return {"__items__": [[encode(k, tensors, key), encode(v, tensors, f"{key}.{k}")] for k, v in obj.items()]}
    raise CheckpointError(
        f"cannot store {key} in a checkpoint: a {type(obj).__name__} is neither a tensor nor plain data. "
        "Fix: keep only tensors, numbers, strings, lists and dicts in state that is checkpointed."
    )


def decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `encode`."""
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if "__tuple__" in obj:
        return tuple(decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_hashable(decode(k, tensors)): decode(v, tensors) for k, v in obj["__items__"]}
    return {k: decode(v, tensors) for k, v in obj.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list | tuple) else key


# --- writing -----------------------------------------------------------------------------------------


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync. Plain os calls, so a test can make os.write fail as a full disk does."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    """fsync a file or a folder (a folder's entry list: after a rename into it, the rename is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_bytes(files: dict[str, bytes], info: dict) -> bytes:
    body = {
        "format": FORMAT,
        "version": VERSION,
        "files": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in files.items()},
        **info,
    }
    text = json.dumps(body, sort_keys=True)
    return json.dumps({"body": body, "sha256": _sha256(text.encode())}, sort_keys=True, indent=1).encode()


def checkpoint_names(directory: Path) -> list[Path]:
    """Checkpoint directories (valid or not) in `directory`, newest first; temp entries excluded."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def write(directory: str | Path, weights: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write one checkpoint atomically into `directory` (created if missing); return its path.

    `meta` may hold tensors anywhere (they go to state.safetensors). The new checkpoint's sequence
    number is one past the highest name present, so names never repeat.

    Raises:
        CheckpointError: the directory cannot be created or written (full disk, read-only, ...); any
            partial write is removed and earlier checkpoints are left as they were.
    """
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    state_json = json.dumps(encode(meta, tensors, "state"), sort_keys=True).encode()
    files = {
        "model.safetensors": save_tensors(
            {k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()}
        ),
        "state.safetensors": save_tensors(tensors),
        "state.json": state_json,
    }
    tmp = final = directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
        names = checkpoint_names(directory)
        seq = int(_NAME.match(names[0].name).group(1)) + 1 if names else 1
        final = directory / f"ckpt-{seq:06d}"
        tmp = directory / f"{TEMP}{final.name}-{os.getpid()}"
        tmp.mkdir()
        for name, data in files.items():
            _write_file(tmp / name, data)
        info = {"updates": meta.get("state", {}).get("updates"), "stop_reason": meta.get("stop_reason")}
        _write_file(tmp / MANIFEST, _manifest_bytes(files, info))
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(directory)
    except OSError as err:
        if tmp != directory:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = checkpoint_names(directory)
        keep = f"the previous checkpoint {previous[0]} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(
            f"could not write checkpoint {final}: {err.strerror or err}"
            f"{f' ({err.filename})' if err.filename else ''}; {keep}. "
            "Fix: free disk space or make the run directory writable (or choose another with --out), then "
            "resume with --resume."
        ) from None
    return final


def prune(directory: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints. Each is first renamed to a temp name, so a kill
    mid-delete leaves nothing that looks like a checkpoint. Returns the deleted paths."""
    deleted = []
    for path in checkpoint_names(Path(directory))[keep:]:
        trash = path.with_name(f"{TEMP}del-{path.name}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        deleted.append(path)
    return deleted


def remove_temp(directory: str | Path) -> list[Path]:
    """Remove leftovers of writes or deletes that were killed midway. Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = [p for p in directory.iterdir() if p.name.startswith(TEMP)]
    for p in removed:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return removed


# --- reading -----------------------------------------------------------------------------------------


def manifest_body(raw: bytes) -> dict:
    """The body of a manifest, checked: its own SHA-256, our format and version, and an entry (sha256,
    bytes) for each checkpoint file.

    Raises:
        ValueError: saying what is wrong with it.
    """
    try:
        outer = json.loads(raw)
        body = outer["body"]
        ok = _sha256(json.dumps(body, sort_keys=True).encode()) == outer["sha256"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{MANIFEST} is empty or not a cadence manifest") from None
    if not ok:
        raise ValueError(f"{MANIFEST} does not match its own SHA-256 (corrupted)")
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError(f"{MANIFEST} is not in format {FORMAT!r}")
    if body.get("version") != VERSION:
        raise ValueError(f"format version {body.get('version')!r}; this cadence reads version {VERSION}")
    files = body.get("files")
    for name in FILES:
        entry = files.get(name) if isinstance(files, dict) else None
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("bytes"), int)
        ):
            raise ValueError(f"{MANIFEST} does not list {name} with its SHA-256 and size")
    return body


def read(path: str | Path) -> Checkpoint:
    """Read and verify one checkpoint: manifest self-hash, then size and SHA-256 of every file, then
    parse (safetensors and JSON only). The bytes that are hashed are the bytes that are parsed.

    Raises:
        CheckpointError: the checkpoint is missing, incomplete, corrupt or foreign; the message says why.
    """
    path = Path(path)

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} is not valid: {why}")

    if not path.is_dir():
        raise bad("not a directory" if path.exists() else "it does not exist")
    try:
        raw = (path / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise bad(f"no {MANIFEST} (an unfinished write, or not a cadence checkpoint)") from None
    except OSError as err:
        raise bad(f"{MANIFEST} cannot be read: {err}") from None
    try:
        listed = manifest_body(raw)["files"]
    except ValueError as err:
        raise bad(str(err)) from None
    data: dict[str, bytes] = {}
    for name in FILES:
        try:
            blob = (path / name).read_bytes()
        except OSError as err:
            raise bad(f"{name} cannot be read: {err.strerror or err}") from None
        if len(blob) != listed[name]["bytes"]:
            raise bad(f"{name} has {len(blob)} bytes, the manifest says {listed[name]['bytes']} (truncated?)")
        if _sha256(blob) != listed[name]["sha256"]:
            raise bad(f"{name} does not match its SHA-256 in the manifest (corrupted)")
        data[name] = blob
    try:
        weights = load_tensors(data["model.safetensors"])
        tensors = load_tensors(data["state.safetensors"])
        meta = decode(json.loads(data["state.json"]), tensors)
    except Exception as err:  # hashes matched, so this is a foreign or buggy writer, not bit rot
        raise bad(f"its files do not parse: {err}") from None
    return Checkpoint(path, meta, weights)


def peek(path: str | Path) -> dict | None:
    """The manifest body of a checkpoint if it is intact (its files are not hashed), else None. Cheap:
    for deciding whether a new checkpoint is needed, never for loading."""
    try:
        return manifest_body((Path(path) / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None


def checkpoints_dir(run_dir: str | Path) -> Path:
    """Where a run directory keeps its checkpoints."""
    return Path(run_dir) / DIRNAME


def latest(directory: str | Path) -> Checkpoint | None:
    """The newest valid checkpoint in a checkpoints directory (`checkpoints_dir(run_dir)`), or None.
    Each newer invalid one is skipped with a CheckpointWarning naming it and saying why."""
    for path in checkpoint_names(Path(directory)):
        try:
            return read(path)
        except CheckpointError as err:
            warnings.warn(f"skipping {err}; trying the previous one", CheckpointWarning, stacklevel=2)
    return None


def find(where: str | Path | Checkpoint) -> Checkpoint:
    """The checkpoint to resume from: `where` is a run directory (its newest valid checkpoint), its
    checkpoints directory, one checkpoint directory, or a Checkpoint already read.

    Raises:
        CheckpointError: nothing valid there; the message lists what was found.
    """
    if isinstance(where, Checkpoint):
        return where
    where = Path(where)
    if (where / MANIFEST).exists() or _NAME.match(where.name):
        return read(where)
    run_dir = where.parent if where.name == DIRNAME else where
    if not run_dir.is_dir():
        raise CheckpointError(
            f"cannot resume: {where} does not exist. Fix: pass the run directory of an earlier "
            "`cadence train --checkpoint-every N` run."
        )
    found = latest(checkpoints_dir(run_dir))
    if found is None:
        names = [p.name for p in checkpoint_names(checkpoints_dir(run_dir))]
        seen = f"found {len(names)} invalid: {', '.join(names)}" if names else "found none"
        raise CheckpointError(
            f"cannot resume: no valid checkpoint in {checkpoints_dir(run_dir)} ({seen}). Nothing was "
            "trained. Fix: resume a run written with --checkpoint-every/--checkpoint-seconds, or drop "
            "--resume to start from scratch."
        )
    return found
