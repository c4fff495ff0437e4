"""Distributed search with real processes: two `cadence tune` workers on one journal file and two on a real
PostgreSQL server share the trial budget (none lost, none run twice), and a worker killed with SIGKILL in the
middle of a trial leaves a failed trial that the other worker runs again with the same parameters."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cadence.tuning.storage import OWNER, open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
CADENCE = [sys.executable, "-m", "cadence"]


def write_config(folder: Path, trials: int, epochs: int, **tune) -> Path:
    extra = "".join(f"  {k}: {v}\n" for k, v in tune.items())
    path = folder / "tune.yaml"
    path.write_text(
        f"""data: {{name: digits}}
model: {{spec: "mlp:32"}}
stop: {{max_epochs: {epochs}}}
tune:
  trials: {trials}
  pruner: none
  startup_trials: 2
{extra}  space:
    optimizer.lr: {{low: 1.0e-3, high: 0.5, log: true}}
    strategy.batch_size: [16, 32, 64]
"""
    )
    return path


def start_worker(config: Path, storage: str, study: str, out: Path) -> subprocess.Popen:
    cmd = [
        *CADENCE,
        "tune",
        str(config),
        "--storage",
        storage,
        "--study",
        study,
        "--no-final",
        "--quiet",
        "--out",
        str(out),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs: list[subprocess.Popen], timeout: float = 240) -> None:
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]


def trials_of(storage: str, study: str):
    handle = open_storage(storage, study)
    try:
        return optuna.load_study(study_name=study, storage=handle.storage).get_trials()
    finally:
        handle.close()


def assert_shared_budget(trials, n: int, workers: set[int]) -> None:
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == n, [(t.number, t.state) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    params = [tuple(sorted(t.params.items())) for t in counted]
    assert len(set(params)) == n  # no trial run twice
    ran = {t.user_attrs[OWNER]["pid"] for t in counted}
    assert ran == workers  # both workers took part


def test_two_workers_share_one_journal_study(tmp_path):
    config = write_config(tmp_path, trials=6, epochs=20)  # seconds per trial: both workers get some
    journal = str(tmp_path / "study.journal")
    procs = [start_worker(config, journal, "shared", tmp_path / f"w{i}") for i in range(2)]
    finish(procs)
    trials = trials_of(journal, "shared")
    assert_shared_budget(trials, 6, {p.pid for p in procs})
    assert not [t for t in trials if t.state == TrialState.FAIL]


def test_two_workers_share_one_postgresql_study(tmp_path, postgres_url):
    config = write_config(tmp_path, trials=6, epochs=20)  # seconds per trial: both workers get some
    procs = [start_worker(config, postgres_url, "shared", tmp_path / f"w{i}") for i in range(2)]
    finish(procs)
    trials = trials_of(postgres_url, "shared")
    assert_shared_budget(trials, 6, {p.pid for p in procs})
    assert not [t for t in trials if t.state == TrialState.FAIL]


def _wait_for_running_trial_of(pid: int, storage: str, study: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for t in trials_of(storage, study):
                mine = (t.user_attrs.get(OWNER) or {}).get("pid") == pid
                if t.state == TrialState.RUNNING and mine and t.params:  # its parameters drawn: it is training
                    return t
        except Exception:  # the study is not created yet
            pass
        time.sleep(0.2)
    pytest.fail(f"worker {pid} never started a trial")


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_a_worker_killed_mid_trial_is_retried_and_the_study_finishes(tmp_path, kind, request):
    # Trials of 30 epochs (seconds each) so the kill lands inside one. PostgreSQL: heartbeats every
    # second, stale after 3 s; the journal: the survivor sees the dead process at its next step.
    config = write_config(tmp_path, trials=3, epochs=30, heartbeat_interval=1, grace_period=3)
    storage = request.getfixturevalue("postgres_url") if kind == "postgresql" else str(tmp_path / "study.journal")
    victim = start_worker(config, storage, "kill", tmp_path / "victim")
    killed = _wait_for_running_trial_of(victim.pid, storage, "kill")
    survivor = start_worker(config, storage, "kill", tmp_path / "survivor")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    finish([survivor])

    trials = trials_of(storage, "kill")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [killed.number]
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.params == killed.params and retry.user_attrs["seed"] == killed.user_attrs["seed"]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs[OWNER]["pid"] == survivor.pid
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 3  # the study finished its budget: the killed trial was replaced, not lost
