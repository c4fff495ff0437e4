"""The checkpoint format: atomic writes, verified reads, corruption detection, pruning, disk faults."""

from __future__ import annotations

import errno
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cadence.engine import checkpoint
from cadence.engine.checkpoint import CheckpointWarning
from cadence.errors import CheckpointError

SRC = Path(__file__).resolve().parents[2] / "src" / "cadence"


def _write(directory: Path, updates: int, seed: int = 0) -> Path:
    gen = torch.Generator().manual_seed(seed)
    weights = {"0.weight": torch.randn(4, 3, generator=gen), "0.bias": torch.randn(4, generator=gen)}
    meta = {"state": {"updates": updates}, "stop_reason": None, "moments": {0: {"exp_avg": torch.ones(3)}}}
    return checkpoint.write(directory, weights, meta)


def _flip_bit(path: Path, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def test_encode_decode_gives_back_tensors_tuples_int_keys_arrays_and_non_finite_floats():
    obj = {
        "state": {0: {"step": torch.tensor(3.0), "buf": torch.arange(6, dtype=torch.int64).reshape(2, 3)}},
        "betas": (0.9, 0.999),
        "rng": torch.get_rng_state(),
        "np": np.random.get_state(legacy=False),
        "floats": [float("inf"), float("-inf"), 1e-300, 0.1 + 0.2],
        "__dunder": None,
        "flags": [True, None, "x"],
    }
    tensors: dict = {}
    text = json.dumps(checkpoint.encode(obj, tensors, "s"))
    back = checkpoint.decode(json.loads(text), tensors)
    assert back["betas"] == (0.9, 0.999) and isinstance(back["betas"], tuple)
    assert torch.equal(back["state"][0]["buf"], obj["state"][0]["buf"])
    assert back["state"][0]["step"].dtype == torch.float32
    assert torch.equal(back["rng"], obj["rng"])
    assert np.array_equal(back["np"]["state"]["key"], obj["np"]["state"]["key"])
    assert back["floats"] == obj["floats"]
    assert back["__dunder"] is None and back["flags"] == [True, None, "x"]


def test_encode_refuses_an_object_that_is_not_data_and_names_where_it_is():
    with pytest.raises(CheckpointError, match=r"state\.scheduler\.fn.*function"):
        checkpoint.encode({"scheduler": {"fn": lambda t: 1.0}}, {}, "state")


def test_a_written_checkpoint_reads_back_bitwise_and_leaves_no_temp_files(tmp_path):
    path = _write(tmp_path, updates=7)
    assert sorted(p.name for p in path.iterdir()) == sorted([*checkpoint.FILES, checkpoint.MANIFEST])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    ckpt = checkpoint.read(path)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(ckpt.weights["0.weight"], torch.randn(4, 3, generator=gen))
    assert ckpt.updates == 7
    assert torch.equal(ckpt.meta["moments"][0]["exp_avg"], torch.ones(3))


def test_names_count_up_and_latest_is_the_newest(tmp_path):
    paths = [_write(checkpoint.checkpoints_dir(tmp_path), updates=u) for u in (5, 10, 15)]
    assert [p.name for p in paths] == ["ckpt-000001", "ckpt-000002", "ckpt-000003"]
    assert checkpoint.latest(checkpoint.checkpoints_dir(tmp_path)).updates == 15
    assert checkpoint.find(tmp_path).path == paths[-1]
    assert checkpoint.find(paths[0]).updates == 5  # one checkpoint named directly


def _truncate(path: Path) -> None:
    target = path / "model.safetensors"
    target.write_bytes(target.read_bytes()[:-10])


def _bitflip_state(path: Path) -> None:
    _flip_bit(path / "state.safetensors", 8 * 60 + 3)


def _empty_file(path: Path) -> None:
    (path / "state.json").write_bytes(b"")


def _empty_manifest(path: Path) -> None:
    (path / checkpoint.MANIFEST).write_bytes(b"")


def _no_manifest(path: Path) -> None:  # what a write killed before its rename would look like, if renamed
    (path / checkpoint.MANIFEST).unlink()


def _empty_dir(path: Path) -> None:
    for p in path.iterdir():
        p.unlink()


def _foreign_files(path: Path) -> None:  # another tool's checkpoint under our name
    _empty_dir(path)
    torch.save({"w": torch.ones(2)}, path / "model.pt")


def _foreign_manifest(path: Path) -> None:  # a self-consistent manifest of another format
    body = {"format": "other-tool", "version": 1, "files": {}}
    text = json.dumps(body, sort_keys=True)
    import hashlib

    (path / checkpoint.MANIFEST).write_text(
        json.dumps({"body": body, "sha256": hashlib.sha256(text.encode()).hexdigest()})
    )


def _swapped_file(path: Path) -> None:  # a file from another (valid) checkpoint
    other = path.parent / "ckpt-000001" / "state.json"
    (path / "state.json").write_bytes(other.read_bytes())


def _not_a_directory(path: Path) -> None:
    for p in path.iterdir():
        p.unlink()
    path.rmdir()
    path.write_bytes(b"ckpt")


CORRUPTIONS = [
    _truncate,
    _bitflip_state,
    _empty_file,
    _empty_manifest,
    _no_manifest,
    _empty_dir,
    _foreign_files,
    _foreign_manifest,
    _swapped_file,
    _not_a_directory,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_a_corrupt_newest_checkpoint_is_named_in_a_warning_and_the_previous_one_is_used(tmp_path, corrupt):
    run = tmp_path / "run"
    directory = checkpoint.checkpoints_dir(run)
    _write(directory, updates=10, seed=1)
    newest = _write(directory, updates=20, seed=2)
    corrupt(newest)
    with pytest.raises(CheckpointError, match=re.escape(str(newest))):
        checkpoint.read(newest)
    with pytest.warns(CheckpointWarning, match=re.escape(str(newest))):
        found = checkpoint.latest(directory)
    assert found.updates == 10 and found.path.name == "ckpt-000001"


def test_every_single_bit_flip_of_the_manifest_and_sampled_flips_of_each_file_are_detected(tmp_path):
    path = _write(tmp_path, updates=3)
    raw = (path / checkpoint.MANIFEST).read_bytes()
    detected = 0
    for bit in range(len(raw) * 8):  # every bit of the manifest, checked in memory
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ValueError):
            checkpoint.manifest_body(bytes(flipped))
        detected += 1
    rng = random.Random(0)
    for name in [checkpoint.MANIFEST, *checkpoint.FILES]:  # and 32 flips of each file on disk
        for bit in rng.sample(range((path / name).stat().st_size * 8), 32):
            _flip_bit(path / name, bit)
            with pytest.raises(CheckpointError):
                checkpoint.read(path)
            detected += 1
            _flip_bit(path / name, bit)  # undo
        assert checkpoint.read(path).updates == 3
    assert detected == len(raw) * 8 + 4 * 32


def test_find_with_no_valid_checkpoint_says_what_it_found(tmp_path):
    directory = checkpoint.checkpoints_dir(tmp_path)
    _empty_manifest(_write(directory, updates=1))
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError, match=r"found 1 invalid: ckpt-000001"):
        checkpoint.find(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.find(tmp_path / "missing")


def test_prune_keeps_the_newest_k(tmp_path):
    for u in range(5):
        _write(tmp_path, updates=u)
    deleted = checkpoint.prune(tmp_path, keep=2)
    assert [p.name for p in deleted] == ["ckpt-000003", "ckpt-000002", "ckpt-000001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000004", "ckpt-000005"]
    assert _write(tmp_path, updates=9).name == "ckpt-000006"  # names never repeat


def test_leftovers_of_a_killed_write_do_not_count_and_are_removed(tmp_path):
    good = _write(tmp_path, updates=1)
    leftover = tmp_path / f"{checkpoint.TEMP}ckpt-000002-123"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")
    assert checkpoint.checkpoint_names(tmp_path) == [good]
    assert checkpoint.remove_temp(tmp_path) == [leftover]
    assert [p.name for p in tmp_path.iterdir()] == [good.name]


def test_a_full_disk_mid_write_keeps_the_previous_checkpoint_and_says_where_and_why(tmp_path, monkeypatch):
    previous = _write(tmp_path, updates=1)
    real_write = os.write
    budget = {"bytes": 150}  # runs out in the second file

    def disk_fills_up(fd, data):
        if budget["bytes"] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget["bytes"] -= len(data)
        return real_write(fd, data)

    monkeypatch.setattr(checkpoint.os, "write", disk_fills_up)
    with pytest.raises(CheckpointError) as info:
        _write(tmp_path, updates=2)
    message = str(info.value)
    assert "No space left on device" in message
    assert str(tmp_path / "ckpt-000002") in message and f"previous checkpoint {previous} is intact" in message
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [previous.name]  # the partial write is gone
    assert checkpoint.read(previous).updates == 1


def test_an_unwritable_directory_keeps_the_previous_checkpoint_and_says_where_and_why(tmp_path, monkeypatch):
    previous = _write(tmp_path, updates=1)
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_WRONLY and str(path).startswith(str(tmp_path)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    # Tests run as root, for whom chmod 0o555 does not stop a write; so the refusal is simulated.
    monkeypatch.setattr(checkpoint.os, "open", read_only)
    with pytest.raises(CheckpointError, match=r"Permission denied \(.*model\.safetensors\)"):
        _write(tmp_path, updates=2)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [previous.name]


def test_a_checkpoint_directory_that_is_a_file_is_a_clear_error(tmp_path):
    blocked = tmp_path / "checkpoints"
    blocked.write_text("not a directory")
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*checkpoints.*(exists|directory)"):
        _write(blocked, updates=1)


def test_source_never_unpickles_every_torch_load_passes_weights_only():
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if re.search(r"^\s*(import pickle|from pickle|import dill|import cloudpickle)", text, re.M):
            offenders.append(f"{path}: imports a pickle module")
        for call in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text):
            if not re.search(r"weights_only\s*=\s*True", call.group(0)):
                offenders.append(f"{path}: {call.group(0)}")
    assert offenders == []
