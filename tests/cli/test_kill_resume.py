"""SIGKILL a real `cadence train` process again and again; each restart resumes from the newest complete
checkpoint, and the final weights equal an uninterrupted run's, bitwise.

Each kill costs a process start (~3 s, mostly importing torch and sklearn), so the suite holds 20 kills:
7 online, 7 mini-batch, 6 full-batch; the online chain starts with a SIGTERM. Half the kills land at a
random moment after the process has made progress, half as soon as a checkpoint write is seen in flight
(a temp directory exists), to hit the write itself. The last restart of each chain runs in-process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cadence
from cadence.callbacks import Checkpointing
from cadence.config import DataConfig
from cadence.data.datasets import load_data
from cadence.engine import checkpoint

SRC = str(Path(__file__).resolve().parents[2] / "src")
# --early-stopping none: the settings these runs were written with (no early stopping was the default then)
COMMON = ["--data", "digits", "--threads", "1", "--seed", "0", "--keep", "2", "-q", "--early-stopping", "none"]
FLAGS = {
    "online": ["--strategy", "online", "--model", "logreg", "--optimizer", "adam", "--lr", "0.01",
               "--epochs", "3", "--eval-every", "500", "--checkpoint-every", "40"],
    "mini-batch": ["--strategy", "mini-batch", "--batch-size", "16", "--model", "mlp:16", "--dropout", "0.2",
                   "--optimizer", "momentum", "--lr", "0.02", "--epochs", "30", "--checkpoint-every", "30"],
    "full-batch": ["--strategy", "full-batch", "--model", "mlp:16", "--optimizer", "adam", "--lr", "0.003",
                   "--epochs", "600", "--checkpoint-every", "20"],
}  # fmt: skip
KILLS = {"online": 7, "mini-batch": 7, "full-batch": 6}
DEADLINE = 120.0  # seconds any one process may take to make progress before the test gives up


def _config(strategy: str) -> dict:
    """The same run as FLAGS[strategy], as a config for an in-process reference run."""
    flags = dict(zip(FLAGS[strategy][::2], FLAGS[strategy][1::2], strict=True))
    model = {"spec": flags["--model"], "dropout": float(flags.get("--dropout", 0.0))}
    eval_every = int(flags["--eval-every"]) if "--eval-every" in flags else None
    return dict(
        strategy={"name": strategy, "batch_size": int(flags.get("--batch-size", 64))},
        model=model,
        optimizer={"name": flags["--optimizer"], "lr": float(flags["--lr"])},
        stop={"max_epochs": int(flags["--epochs"]), "early_stopping_metric": None},
        eval={"every_updates": eval_every},
        threads=1,
    )


def _start(run_dir: Path, strategy: str, resume: bool, log: Path) -> subprocess.Popen:
    args = ["--resume", str(run_dir)] if resume else [*FLAGS[strategy], "--out", str(run_dir)]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log, "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "cadence", "train", *COMMON, *args],
            stdout=subprocess.DEVNULL, stderr=err, env=env,
        )  # fmt: skip


def _names(run_dir: Path) -> list[str]:
    return [p.name for p in checkpoint.checkpoint_names(checkpoint.checkpoints_dir(run_dir))]


def _temp(run_dir: Path) -> list[str]:
    directory = checkpoint.checkpoints_dir(run_dir)
    return (
        [p.name for p in directory.iterdir() if p.name.startswith(checkpoint.TEMP)] if directory.is_dir() else []
    )


def _wait_for_progress(proc: subprocess.Popen, run_dir: Path, newest_before: str | None) -> bool:
    """Wait until the process has written a checkpoint newer than `newest_before`; False if it exited."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        names = _names(run_dir)
        if names and names[0] != newest_before:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"no progress within {DEADLINE} s in {run_dir}")


def _kill_during_a_write(proc: subprocess.Popen, run_dir: Path) -> bool:
    """SIGKILL as soon as a checkpoint write is in flight (or after 2 s). Returns whether one was."""
    end = time.monotonic() + 2.0
    while time.monotonic() < end and proc.poll() is None:
        if _temp(run_dir):
            proc.kill()
            return True
    proc.kill()
    return False


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits"), seed=0)


def _restart(run_dir: Path, strategy: str, log: Path) -> subprocess.Popen:
    """Restart with --resume; check it resumes from the newest valid checkpoint on disk."""
    newest = checkpoint.latest(checkpoint.checkpoints_dir(run_dir))
    proc = _start(run_dir, strategy, resume=True, log=log)
    end = time.monotonic() + DEADLINE
    while "resuming from" not in log.read_text() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.01)
    assert f"resuming from {newest.path} (update {newest.updates}," in log.read_text()
    return proc


def _sigterm(proc: subprocess.Popen, run_dir: Path, log: Path) -> None:
    """SIGTERM: the process finishes its update, writes a checkpoint and the run, and exits with 130."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130, log.read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted"
    final = checkpoint.latest(checkpoint.checkpoints_dir(run_dir))
    assert final.updates == summary["updates"] and final.meta["stop_reason"] == "interrupted"
    assert "stopped by SIGTERM" in log.read_text() and f"--resume {run_dir}" in log.read_text()


@pytest.mark.parametrize("strategy", list(FLAGS))
def test_killed_runs_resume_from_the_newest_checkpoint_and_end_equal_to_an_uninterrupted_run(
    strategy, digits, tmp_path
):
    rng = random.Random(f"kill-{strategy}")
    run_dir, log = tmp_path / "run", tmp_path / "stderr.txt"
    kills = in_flight = 0
    proc = _start(run_dir, strategy, resume=False, log=log)
    if strategy == "online":  # one graceful stop first, saving a process start for the SIGTERM test
        assert _wait_for_progress(proc, run_dir, None)
        assert _wait_for_progress(proc, run_dir, _names(run_dir)[0])  # past the run-start checkpoint
        _sigterm(proc, run_dir, log)
        proc = _restart(run_dir, strategy, log)
    while True:
        if not _wait_for_progress(proc, run_dir, (_names(run_dir) or [None])[0]):
            pytest.fail(f"the run finished after {kills} kills; make it longer: {log.read_text()}")
        if kills % 2:
            in_flight += _kill_during_a_write(proc, run_dir)
        else:
            time.sleep(rng.uniform(0.0, 0.1))
            proc.kill()
        assert proc.wait() == -signal.SIGKILL, log.read_text()  # killed, not finished
        kills += 1
        if kills == KILLS[strategy]:
            break
        proc = _restart(run_dir, strategy, log)

    # The last restart runs in-process (one process start less), as `cadence train --resume` would.
    newest = checkpoint.latest(checkpoint.checkpoints_dir(run_dir))
    threads = torch.get_num_threads()
    try:
        saver = Checkpointing(run_dir)
        resumed = cadence.train(data=digits, resume_from=run_dir, callbacks=[saver])
        ref = cadence.train(data=digits, config=_config(strategy))
    finally:
        torch.set_num_threads(threads)
    assert checkpoint.read(saver.written[-1]).updates == resumed.updates > newest.updates
    assert not [p for p in run_dir.rglob("*") if p.name.startswith(checkpoint.TEMP)]  # nothing left over
    assert all(torch.equal(resumed.model.state_dict()[k], v) for k, v in ref.model.state_dict().items())
    print(f"{strategy}: {kills} kills survived, {in_flight} of them during a checkpoint write")
