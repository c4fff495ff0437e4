"""Worker processes run exactly the jobs the grid describes; Ctrl-C keeps what is finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cadence.comparison import build_compare_config, compare
from cadence.config import build_config

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_worker_processes_give_the_same_runs_as_one_process(blobs):
    base = build_config({"model": {"spec": "mlp:8"}, "threads": 1})
    grid = {"strategies": ["mini-batch:16", "online"], "optimizers": ["sgd", "adam"], "seeds": 1}
    grid["budget"] = {"epochs": 2}
    here = compare(base, build_compare_config({**grid, "workers": 1}), data=blobs)
    there = compare(base, build_compare_config({**grid, "workers": 2}), data=blobs)
    assert there.meta["workers"] == 2 and len(there.runs) == 4
    assert len({r["pid"] for r in there.runs} - {os.getpid()}) >= 1  # trained elsewhere
    for a, b in zip(here.runs, there.runs, strict=True):
        assert (a["label"], a["seed"]) == (b["label"], b["seed"])
        assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]


def test_ctrl_c_stops_the_grid_and_keeps_finished_runs_in_results_and_report(tmp_path):
    out = tmp_path / "cmp"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # 12 online runs of ~1 s each on 2 workers: Ctrl-C arrives while most are still to come
    args = ["compare", "--model", "mlp:16", "--limit", "500", "--strategies", "online", "--optimizers", "sgd"]
    args += ["--seeds", "12", "--epochs", "4", "--workers", "2", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cadence", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = out / "results.json"
    deadline = time.monotonic() + 120
    while not results.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert results.exists(), proc.stderr.read() if proc.poll() is not None else "no run finished in 120 s"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    tree = json.loads(results.read_text())
    assert tree["interrupted"] is True and tree["n_runs"] == 12
    finished = [r for r in tree["runs"] if r["stop_reason"] == "budget"]
    assert 1 <= len(finished) < 12
    assert all(r["samples_seen"] == 4 * tree["data"]["n_train"] for r in finished)
    assert {r["stop_reason"] for r in tree["runs"]} <= {"budget", "interrupted"}
    assert "Interrupted (Ctrl-C)" in (out / "report.html").read_text()
    assert f"interrupted: kept {len(tree['runs'])} of 12 runs" in stderr
    assert stdout.strip().endswith(f"report: {out / 'report.html'}")


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_while_a_result_is_saved_ends_the_grid_as_interrupted(blobs, workers):
    """The signal can land inside on_result (saving results.json): compare() must still return."""
    base = build_config({"model": {"spec": "mlp:8"}, "threads": 1})
    # Runs long enough (~0.5 s) that the runs after the first are still training when the signal lands.
    grid = {"strategies": ["online"], "optimizers": ["sgd"], "seeds": 4, "budget": {"epochs": 100}}
    calls = []

    def save(partial):
        calls.append(len(partial.runs))
        if len(calls) == 1:
            raise KeyboardInterrupt  # as if Ctrl-C arrived while the first result was being written

    result = compare(base, build_compare_config({**grid, "workers": workers}), data=blobs, on_result=save)
    assert result.meta["interrupted"] is True
    reasons = [r["stop_reason"] for r in result.runs]  # runs stopped by the signal are kept, as interrupted
    assert 1 <= len(reasons) <= 4 and set(reasons) <= {"budget", "interrupted"}
    assert reasons.count("budget") < 4  # the grid did not run to its end
