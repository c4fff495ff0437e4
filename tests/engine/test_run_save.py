"""Saving a run: atomic (a full disk leaves the previous run or nothing, never a mix), what it records (the
engine, and why no faster one ran), and that the run's own checkpoints survive the final save."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
import safetensors.torch

import cadence
from cadence.callbacks import Checkpointing
from cadence.engine import checkpoint
from cadence.errors import SaveError
from cadence.models import artefact

QUICK = dict(strategy="online", max_updates=20, threads=1)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs of its own (root may mount one), or None where mounting is not permitted."""
    where = tmp_path / "disk"
    where.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True
        )
    except OSError:  # no mount command
        mounted = None
    if mounted is None or mounted.returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_full_disk_at_the_final_save_leaves_the_previous_run_intact(digits, small_disk, tmp_path, monkeypatch):
    small = cadence.train("logreg", digits, **QUICK)  # ~10 KB of files
    large = cadence.train("mlp:512,512", digits, **QUICK)  # a 1.2 MB model: more than the disk holds
    disk = small_disk
    if disk is None:  # not root: a write that fails as a full disk does once 256 KiB are written
        disk = tmp_path / "simulated"
        written = [0]
        real_write = os.write

        def write(fd, data):
            written[0] += len(data)
            if written[0] > 256 * 1024:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        monkeypatch.setattr(checkpoint.os, "write", write)

        def save_file(state, path, metadata=None):  # the weights through the same failing write
            checkpoint._write_file(Path(path), safetensors.torch.save(state, metadata=metadata))

        monkeypatch.setattr(artefact, "save_file", save_file)
    run_dir = disk / "run"
    small.save(run_dir)
    before = _files(run_dir)

    with pytest.raises(
        SaveError, match=rf"could not save the run to {run_dir}: .*No space left on device.*bytes free"
    ):
        large.save(run_dir)
    assert _files(run_dir) == before  # the old run, whole
    assert sorted(p.name for p in disk.iterdir()) == ["run"]  # and no temp folder left behind
    with pytest.raises(SaveError, match=rf"nothing was written to {disk / 'fresh'}"):
        large.save(disk / "fresh")
    assert sorted(p.name for p in disk.iterdir()) == ["run"]


def test_the_final_save_replaces_the_files_and_keeps_the_runs_checkpoints(digits, tmp_path):
    first = cadence.train("logreg", digits, callbacks=[Checkpointing(tmp_path, every_updates=10)], **QUICK)
    first.save(tmp_path)
    second = cadence.train("logreg", digits, seed=1, **QUICK)
    second.save(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["seed"] == 1
    assert checkpoint.latest(checkpoint.checkpoints_dir(tmp_path)).updates == 20  # carried over
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(checkpoint.TEMP)]


def test_saving_onto_a_file_is_refused(digits, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SaveError, match="it is a file"):
        cadence.train("logreg", digits, **QUICK).save(tmp_path / "f")


@pytest.mark.parametrize(
    ("settings", "engine", "fallback"),
    [
        (dict(strategy="online"), "c-kernel", None),
        (dict(strategy="mini-batch"), "batch", None),
        (dict(strategy="online", optimizer="rmsprop"), "autograd", "optimizer RMSprop"),
        (dict(strategy="online", engine="autograd"), "autograd", "engine 'autograd' was asked for"),
    ],
)
def test_summary_json_records_the_engine_and_why_no_faster_one_ran(digits, tmp_path, settings, engine, fallback):
    cadence.train("mlp:16", digits, max_updates=5, threads=1, **settings).save(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["engine"] == engine
    assert (summary["engine_fallback"] is None) if fallback is None else (fallback in summary["engine_fallback"])
