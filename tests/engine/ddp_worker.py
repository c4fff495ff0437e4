"""Programs the data-parallel tests start under torchrun (tests/engine/test_data_parallel.py,
tests/cli/test_nproc.py).

`python ddp_worker.py parity OUT`: trains each PARITY case through cadence.train() (in every process it joins
the job by itself) and writes, from each process, what it trained and wrote. The tests run the same cases
in one process to compare.
`python -m tests.engine.ddp_worker train ...`: `cadence train ...`, where env KILL_AT=RANK:UPDATE kills that
process with SIGKILL (or KILL_SIGNAL: SIGSTOP hangs it) after that update, on the first attempt only
(torchrun's restarts run it to the end).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

import cadence
from cadence.callbacks import Checkpointing
from cadence.callbacks.loggers import CSVLogger
from cadence.config import DataConfig
from cadence.data.datasets import load_data

# Adam with a schedule, global batch 100. Full-batch runs in float64: a float32 full-batch gradient of digits
# has entries that cancel to 1% relative error (measured: float32 vs float64 sums over 1257 samples), and Adam
# divides by |g|, so any other summation order (DDP's) moves those weights by 1e-4 relative; float64 shows the
# two computations are the same sum. Batch 99 with 3 micro-batches splits 17/16 across 2 processes: a mean
# over processes instead of the sample-weighted sum would be off by ~3%.
PARITY = {
    "mini-batch": dict(
        dtype="float32",
        strategy={"name": "mini-batch", "batch_size": 100},
        schedule={"name": "cosine", "T_max": 20},
        stop={"max_updates": 20},  # 13 updates an epoch (the last of 57 samples): into the second epoch
    ),
    "full-batch": dict(
        dtype="float64",
        strategy={"name": "full-batch", "chunk_size": 300},  # chunks 300 x4 and 57
        schedule={"name": "step", "step_size": 3, "gamma": 0.5},
        stop={"max_updates": 8},
    ),
    "uneven": dict(
        dtype="float64",
        strategy={"name": "mini-batch", "batch_size": 99, "accumulate": 3},
        schedule={"name": "cosine", "warmup_updates": 3, "T_max": 13},
        stop={"max_updates": 16},
    ),
    # 1257 = 157 * 8 + 1: the epoch's last batch holds one sample, and rank 1's slice of it is empty.
    "one-sample-tail": dict(
        dtype="float64",
        strategy={"name": "mini-batch", "batch_size": 8},
        schedule={"name": "cosine"},
        stop={"max_updates": 159},
    ),
}


def parity_run(case: str, out: Path) -> dict:
    """Train one PARITY case; return its final weights and the names of the checkpoints this process wrote."""
    spec = dict(PARITY[case])
    dtype = getattr(torch, spec.pop("dtype"))
    data = load_data(DataConfig(name="digits"), seed=0)
    if dtype == torch.float64:
        splits = ("x_train", "x_val", "x_test")
        data = dataclasses.replace(data, **{k: getattr(data, k).double() for k in splits})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).to(dtype)
    saver = Checkpointing(out / f"{case}-checkpoints", every_updates=5, keep=10)
    rank = os.environ.get("RANK", "0")
    logger = CSVLogger(out / f"{case}-metrics-rank{rank}.csv")  # each process its own path: who wrote?
    config = {"seed": 0, "optimizer": {"name": "adam", "lr": 0.01}, **spec}
    run = cadence.train(model, data, config, callbacks=[saver, logger], threads=1)
    run.save(out / f"{case}-run-rank{rank}")
    return {
        "weights": {k: v.detach().clone() for k, v in run.model.state_dict().items()},
        "written": [p.name for p in saver.written],
        "val_accuracy": run.val_metrics["val_accuracy"],
        "val_loss": run.val_metrics["val_loss"],
        "history_updates": [r["updates"] for r in run.history],
        "processes": run.processes,
    }


class StopAt(cadence.Callback):
    """Stops the run after an update, as an interruption would (the checkpoint comes from Checkpointing)."""

    def __init__(self, at: int):
        self.at = at

    def on_update_end(self, state):
        return cadence.StopReason.INTERRUPTED if state.updates == self.at else None


def resume_run(out: Path) -> dict:
    """Dropout (each process draws its own masks) stopped after update 5 and resumed from its checkpoint, and the
    same run uninterrupted: their final weights, which match only if every process's RNG came back."""
    config = {
        "seed": 0,
        "model": {"spec": "mlp:32", "dropout": 0.3},
        "optimizer": {"name": "adam", "lr": 0.01},
        "strategy": {"name": "mini-batch", "batch_size": 50},
        "stop": {"max_updates": 10},
        "threads": 1,
    }
    whole = cadence.train(data="digits", config=config)
    run_dir = out / "resumed"
    cadence.train(data="digits", config=config, callbacks=[Checkpointing(run_dir), StopAt(5)])
    resumed = cadence.train(config=config, resume_from=run_dir)
    return {"whole": whole.model.state_dict(), "resumed": resumed.model.state_dict(), "from": resumed.history[0]}


class KillAt(cadence.Callback):
    """Signal this process (SIGKILL, or env KILL_SIGNAL) after update `update` if its rank is `rank`, on
    torchrun's first attempt only."""

    def __init__(self, rank: int, update: int):
        self.rank, self.update = rank, update

    def on_update_end(self, state) -> None:
        first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first and state.updates == self.update and int(os.environ.get("RANK", "0")) == self.rank:
            os.kill(os.getpid(), getattr(signal, os.environ.get("KILL_SIGNAL", "SIGKILL")))


def _cli_with_kill() -> None:
    import cadence.engine as engine
    from cadence.cli.app import main

    if "KILL_AT" not in os.environ:
        main()
        return
    rank, update = (int(v) for v in os.environ["KILL_AT"].split(":"))
    train = engine.train

    def train_and_kill(*args, callbacks=(), **kwargs):
        return train(*args, callbacks=[*callbacks, KillAt(rank, update)], **kwargs)

    engine.train = train_and_kill  # cadence train imports engine.train when it runs
    main()


def run_job(command: list[str], env: dict, timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a torchrun job in its own session; on a timeout kill all of it (the processes torchrun started too,
    which outlive a killed torchrun), then fail."""
    with subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"{command[3:6]} ran past {timeout} s:\n{err[-4000:]}") from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


if __name__ == "__main__":
    if sys.argv[1] == "parity":
        out = Path(sys.argv[2])
        results = {case: parity_run(case, out) for case in PARITY}
        results["resume"] = resume_run(out)
        torch.save(results, out / f"rank{os.environ['RANK']}.pt")
    else:
        _cli_with_kill()
