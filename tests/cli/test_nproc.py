"""`cadence train --nproc 2`: torchrun starts the processes; the run ends with one process's weights; a killed
process ends the job with an error naming it, within the configured timeout; --max-restarts recovers from
the last checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cadence.cli.app import app

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "engine"))
from ddp_worker import run_job  # noqa: E402

# One run, small: 2 epochs of digits at global batch 100 (13 updates an epoch), Adam with a cosine schedule.
FLAGS = ["--data", "digits", "--model", "mlp:32", "--batch-size", "100", "--optimizer", "adam", "--lr", "0.01",
         "--schedule", "cosine", "--max-updates", "26", "--seed", "0", "--threads", "1", "--quiet"]  # fmt: skip
TIMEOUT = 20  # --dist-timeout-seconds of the killed runs


def cadence_nproc(*args: str, kill_at: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`cadence train --nproc 2 ARGS` (tests/engine/ddp_worker.py: cadence, and KILL_AT=RANK:UPDATE kills one
    process with SIGKILL after that update, on torchrun's first attempt)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    env.pop("KILL_AT", None)
    if kill_at:
        env["KILL_AT"] = kill_at
    command = [sys.executable, "-m", "tests.engine.ddp_worker", "train", "--nproc", "2", *FLAGS, *args]
    return run_job(command, env, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The weights of the same run in one process, uninterrupted."""
    out = tmp_path_factory.mktemp("one") / "run"
    result = CliRunner().invoke(app, ["train", *FLAGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return load_file(out / "model.safetensors")


def assert_weights_close(run_dir: Path, reference: dict[str, torch.Tensor]) -> None:
    weights = load_file(run_dir / "model.safetensors")
    assert weights.keys() == reference.keys()
    for name, value in reference.items():
        # float32, summed in another order: weights near 0 differ by rounding (tests/engine/test_data_parallel.py)
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-7, msg=name)


def test_nproc_2_ends_with_the_weights_of_one_process(one_process, tmp_path):
    out = tmp_path / "run"
    proc = cadence_nproc("--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])  # rank 0 alone prints
    assert (summary["processes"], summary["updates"]) == (2, 26)
    assert_weights_close(out, one_process)


def test_a_killed_process_ends_the_job_within_the_timeout_naming_it(tmp_path):
    begin = time.monotonic()
    proc = cadence_nproc("--out", str(tmp_path / "run"), "--dist-timeout-seconds", str(TIMEOUT), kill_at="1:7")
    seconds = time.monotonic() - begin
    assert proc.returncode == 1
    assert "error: process rank 1" in proc.stderr and "killed by SIGKILL" in proc.stderr, proc.stderr[-4000:]
    assert "--max-restarts" in proc.stderr  # the fix
    assert seconds < TIMEOUT + 60  # the timeout, plus starting 2 processes (importing torch) on a busy machine


def test_a_hung_process_ends_the_job_after_the_timeout(tmp_path):
    begin = time.monotonic()
    flags = ["--out", str(tmp_path / "run"), "--dist-timeout-seconds", "5"]
    proc = cadence_nproc(*flags, kill_at="1:7", env={"KILL_SIGNAL": "SIGSTOP"})  # stopped, not dead
    seconds = time.monotonic() - begin
    assert proc.returncode == 1
    text = " ".join(proc.stderr.split())
    assert "error: process rank 0 of 2 (gloo) failed agreeing whether to stop after update 7" in text, text[-4000:]
    assert "did not answer within distributed.timeout_seconds=5" in text
    # The timeout; torchrun's fixed 30 s before it SIGKILLs the stopped process; starting 2 processes.
    assert seconds < 5 + 30 + 60


def test_max_restarts_recovers_from_the_last_checkpoint(one_process, tmp_path):
    out = tmp_path / "run"
    proc = cadence_nproc("--out", str(out), "--checkpoint-every", "3", "--max-restarts", "1", kill_at="1:7")
    assert proc.returncode == 0, proc.stderr[-4000:]
    # rank 1 died after update 7; torchrun restarted both processes, which resumed from update 6's checkpoint
    assert "(update 6, epoch 0, position 600)" in proc.stderr.split("resuming from", 1)[1], proc.stderr[-4000:]
    assert_weights_close(out, one_process)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["updates"] == 26


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--nproc", "2", "--strategy", "online"], r"online.*refused.*mini-batch"),
        (["--nproc", "2", "--max-restarts", "1"], r"--max-restarts 1 restarts the job.*--checkpoint-every"),
        (["--max-restarts", "1"], r"--max-restarts.*Fix: add --nproc"),
        (["--nproc", "2", "--batch-size", "1"], r"batch_size=1 is smaller than the 2 processes"),
    ],
)
def test_a_job_that_cannot_run_is_refused_before_any_process_starts(args, match, tmp_path):
    result = CliRunner().invoke(app, ["train", "--data", "digits", "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    assert pytest.importorskip("re").search(match, " ".join(result.output.split()))
    assert not (tmp_path / "run").exists()
