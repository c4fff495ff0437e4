"""`cadence train --checkpoint-every/--resume/--allow-changes/--from` end to end, in-process."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cadence.cli.app import app
from cadence.engine import checkpoint

FAST = [
    "--data",
    "digits",
    "--model",
    "logreg",
    "--strategy",
    "mini-batch",
    "--batch-size",
    "64",
    "--threads",
    "1",
    # the settings these tests were written with (the defaults then): sgd, lr 0.01, no early stopping
    "--optimizer",
    "sgd",
    "--lr",
    "0.01",
    "--early-stopping",
    "none",
]


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def cadence(*args: str):
    return CliRunner().invoke(app, ["train", *args, "--quiet"])


@pytest.fixture
def stopped_run(tmp_path):
    """A run interrupted at update 30 of 60, as a crash after its checkpoint at 30 would leave it."""
    run_dir = tmp_path / "run"
    result = cadence(
        *FAST, "--max-updates", "30", "--checkpoint-every", "10", "--keep", "5", "--out", str(run_dir)
    )
    assert result.exit_code == 0, result.output
    return run_dir


def test_checkpoint_flags_write_checkpoints_into_the_run_directory(stopped_run):
    names = [p.name for p in checkpoint.checkpoint_names(checkpoint.checkpoints_dir(stopped_run))]
    assert names == ["ckpt-000005", "ckpt-000004", "ckpt-000003", "ckpt-000002", "ckpt-000001"]
    assert checkpoint.read(checkpoint.checkpoints_dir(stopped_run) / names[0]).updates == 30


def test_resume_refuses_changed_settings_naming_them_and_exits_2(stopped_run):
    result = cadence("--resume", str(stopped_run), "--lr", "0.5", "--batch-size", "32")
    assert result.exit_code == 2
    assert re.search(r"optimizer\.lr: 0\.01 -> 0\.5; strategy\.batch_size: 64 -> 32", result.stderr)
    assert "--allow-changes" in result.stderr and "Traceback" not in result.stderr


def test_resume_with_allow_changes_continues_with_the_new_budget(stopped_run):
    result = cadence("--resume", str(stopped_run), "--allow-changes", "--max-updates", "45", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["updates"] == 45 and summary["stop_reason"] == "budget"
    assert f"resuming from {stopped_run}/checkpoints/ckpt-000005 (update 30," in result.stderr


def test_resume_skips_a_corrupt_newest_checkpoint_with_a_warning(stopped_run):
    newest = checkpoint.checkpoints_dir(stopped_run) / "ckpt-000005"
    data = bytearray((newest / "state.json").read_bytes())
    data[100] ^= 0x04  # one bit flipped
    (newest / "state.json").write_bytes(bytes(data))
    result = cadence("--resume", str(stopped_run))
    assert result.exit_code == 0, result.output
    assert re.search(rf"warning:.*{newest}.*state\.json does not match its SHA-256", result.stderr)
    assert "resuming from" in result.stderr and "ckpt-000004 (update 30," in result.stderr  # periodic


def test_resume_without_a_valid_checkpoint_exits_2_and_trains_nothing(tmp_path):
    run_dir = tmp_path / "empty"
    (run_dir / "checkpoints" / "ckpt-000001").mkdir(parents=True)
    result = cadence("--resume", str(run_dir))
    assert result.exit_code == 2
    assert "no valid checkpoint" in result.stderr and "ckpt-000001" in result.stderr
    assert not (run_dir / "summary.json").exists() and not (run_dir / "model.safetensors").exists()
    assert cadence("--resume", str(tmp_path / "missing")).exit_code == 2


def test_from_starts_a_new_run_on_new_data_from_the_old_weights(stopped_run, tmp_path):
    new_dir = tmp_path / "new"
    # lr so small that the update changes nothing: the new run's weights are the old run's.
    result = cadence("--from", str(stopped_run), "--limit", "600", "--lr", "1e-30", "--out", str(new_dir))
    assert result.exit_code == 0, result.output
    old, new = load_file(str(stopped_run / "model.safetensors")), load_file(str(new_dir / "model.safetensors"))
    assert all(torch.equal(old[k], new[k]) for k in old)
    summary = json.loads((new_dir / "summary.json").read_text())
    assert summary["updates"] == 30  # a new run: its own counters, with the old run's budget
    assert "limit: 600" in (new_dir / "config.yaml").read_text()
    assert "starting a new run from the weights of" in result.stderr


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--resume", "A", "--from", "B"], r"--resume continues a run exactly; --from starts a new run"),
        (["--checkpoint-every", "0"], r"every_updates = 0 must be > 0"),
        (["--keep", "0"], r"keep = 0 must be an integer >= 1"),
        (["--on-nonfinite", "ignore"], r"'ignore' is not one of"),
        (["--on-nonfinite", "rollback", "--max-updates", "3"], r"'rollback' needs checkpoints"),
    ],
)
def test_bad_fault_flags_exit_2_with_a_one_line_reason(tmp_path, args, match):
    result = cadence(*FAST, "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2, result.output
    assert re.search(match, result.stderr) and "Traceback" not in result.stderr


def test_a_full_disk_stops_training_with_the_path_and_exit_2(tmp_path, monkeypatch):
    import errno
    import os

    calls = {"n": 0}
    real_write = os.write

    def fills_up(fd, data):
        calls["n"] += 1
        if calls["n"] > 8:  # the run-start checkpoint (4 files, one write each) and the one at update 10 fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(checkpoint.os, "write", fills_up)
    run_dir = tmp_path / "run"
    result = cadence(*FAST, "--max-updates", "30", "--checkpoint-every", "10", "--out", str(run_dir))
    monkeypatch.undo()
    assert result.exit_code == 2
    assert re.search(r"could not write checkpoint .*ckpt-000003: No space left on device", result.stderr)
    assert "previous checkpoint" in result.stderr and "Traceback" not in result.stderr
    assert checkpoint.latest(checkpoint.checkpoints_dir(run_dir)).updates == 10
