"""`cadence train` and the engine: a diverged run exits 3 with its summary and last good weights written,
`--engine`, and the run directory checked before anything is trained (a file, a read-only folder, another
run's folder unless --overwrite)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cadence.cli import run_plan
from cadence.cli.app import DIVERGED_EXIT, app
from cadence.config import ModelConfig
from cadence.models import build_model

runner = CliRunner()
QUICK = ["--data", "digits", "--model", "logreg", "--max-updates", "20", "--threads", "1"]


def train(*args: str):
    return runner.invoke(app, ["train", *args])


@pytest.fixture
def grad_csv(tmp_path) -> Path:
    """Issue 9's case: one feature a = 5e20 (1 + i/1000), target 0: a finite loss, an infinite gradient."""
    path = tmp_path / "grad.csv"
    path.write_text("a,y\n" + "".join(f"{5e20 * (1 + i / 1000)!r},0.0\n" for i in range(50)))
    return path


@pytest.mark.parametrize("engine", ["auto", "autograd"])
def test_a_diverged_run_exits_3_with_its_summary_and_the_last_good_weights(grad_csv, tmp_path, engine):
    out = tmp_path / "run"
    result = train(
        *("--data", str(grad_csv), "--target", "y", "--model", "logreg", "--standardize", "none"),
        *("--init", "normal", "--optimizer", "sgd", "--lr", "1e-30", "--epochs", "1", "--threads", "1"),
        *("--strategy", "online", "--engine", engine, "--out", str(out), "--json"),
    )
    assert result.exit_code == DIVERGED_EXIT == 3, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["stop_reason"], summary["updates"]) == ("diverged", 0)
    assert summary["engine"] == ("c-kernel" if engine == "auto" else "autograd")
    torch.manual_seed(0)  # the initial weights: the first update was never applied
    start = build_model(ModelConfig(spec="logreg", init="normal"), (1,), 1).state_dict()
    saved = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in start.items())


def test_an_ensemble_with_a_diverged_member_exits_3_and_still_writes_every_summary(grad_csv, tmp_path):
    out = tmp_path / "ens"
    result = train(
        *("--data", str(grad_csv), "--target", "y", "--model", "logreg", "--standardize", "none"),
        *("--init", "normal", "--optimizer", "sgd", "--lr", "1e-30", "--epochs", "1", "--threads", "1"),
        *("--strategy", "online", "--set", "ensemble.members=2", "--out", str(out), "--json"),
    )
    assert result.exit_code == DIVERGED_EXIT, result.output
    assert "member-0" in result.stderr and "diverged" in result.stderr
    summary = json.loads((out / "ensemble.json").read_text())
    assert [m["stop_reason"] for m in summary["members"]] == ["diverged", "diverged"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_the_engine_is_shown_and_engine_autograd_forces_the_reference(tmp_path):
    result = train(*QUICK, "--strategy", "online", "--out", str(tmp_path / "a"))
    assert result.exit_code == 0, result.output
    assert "engine: c-kernel (cpu, 1 thread)" in result.output
    result = train(*QUICK, "--strategy", "online", "--engine", "autograd", "--out", str(tmp_path / "b"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["engine"], summary["engine_fallback"]) == ("autograd", "engine 'autograd' was asked for")
    refused = train(*QUICK, "--engine", "gpu")
    assert refused.exit_code == 2 and "'gpu' is not one of" in refused.output


def test_an_infinite_learning_rate_is_a_config_error(tmp_path):
    result = train(*QUICK, "--lr", "inf", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "'optimizer.lr' = inf: Input should be a finite number" in result.output
    assert not (tmp_path / "r").exists()


def _refused(result, tmp_path: Path, match: str) -> None:
    """Exit 2 with one error line, no progress drawn, nothing written."""
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and match in " ".join(result.output.split())
    assert "━" not in result.output and not list(tmp_path.rglob("summary.json"))
    assert not list(tmp_path.rglob("checkpoints"))


def test_out_naming_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "f").write_text("x")
    result = train(*QUICK, "--checkpoint-every", "5", "--out", str(tmp_path / "f"))
    _refused(result, tmp_path, f"--out {tmp_path / 'f'} is a file, not a folder")
    assert (tmp_path / "f").read_text() == "x"


def test_out_in_a_read_only_folder_is_refused_before_training(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    try:  # root may mount a read-only file system of its own; elsewhere os.access is made to say so
        mounted = (
            subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]).returncode == 0
        )
    except OSError:
        mounted = False
    if not mounted:
        real = os.access
        monkeypatch.setattr(run_plan.os, "access", lambda p, mode: False if Path(p) == folder else real(p, mode))
    try:
        result = train(*QUICK, "--checkpoint-every", "5", "--out", str(folder / "run"))
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=True)
    why = "a read-only file system" if mounted else "not writable by you"
    _refused(result, tmp_path, f"--out {folder / 'run'} cannot be written: {folder} is {why}")


def test_out_holding_another_run_needs_overwrite_which_replaces_that_run(tmp_path):
    out = str(tmp_path / "run")
    assert train(*QUICK, "--checkpoint-every", "10", "--out", out, "-q").exit_code == 0
    result = train(*QUICK, "--seed", "1", "--out", out)
    _refused_run = "holds another run (summary.json, config.yaml, model.safetensors, history.jsonl, checkpoints)"
    assert result.exit_code == 2 and _refused_run in " ".join(result.output.split())
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["seed"] == 0

    (tmp_path / "run" / "notes.txt").write_text("mine")
    assert train(*QUICK, "--seed", "1", "--out", out, "--overwrite", "-q").exit_code == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["seed"] == 1
    assert not (tmp_path / "run" / "checkpoints").exists()  # the old run's checkpoints went with it
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"  # what was not the run's stays


def test_resume_continues_in_its_own_folder_and_keeps_its_checkpoints(tmp_path):
    out = str(tmp_path / "run")
    assert train(*QUICK, "--checkpoint-every", "10", "--out", out, "-q").exit_code == 0
    result = train("--resume", out, "--allow-changes", "--max-updates", "30", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["updates"] == 30
    assert (tmp_path / "run" / "checkpoints").is_dir()
