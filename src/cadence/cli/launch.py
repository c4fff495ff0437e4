"""`cadence train --nproc N`: the run started in N processes by torchrun (engine/distributed.launch), and what
changes in the processes it starts: a restarted one (--max-restarts) resumes from the run's last checkpoint, and
only rank 0 prints and writes. Imports torch only when a launch or a process of one needs it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cadence.errors import ConfigError

NPROC_HELP = (
    "train data-parallel in N processes on this machine (torchrun --standalone; gloo on cpu, nccl on cuda); "
    "--batch-size stays the global batch. A `cadence train` that torchrun starts joins the job by itself"
)


def _under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ  # as engine/distributed.under_torchrun


def rank() -> int:
    """This process's rank in a data-parallel job (0 alone): only rank 0 prints."""
    return int(os.environ.get("RANK", "0")) if _under_torchrun() else 0


def options(
    nproc: int | None,
    nnodes: str | None,
    node_rank: int | None,
    rdzv_endpoint: str | None,
    rdzv_id: str | None,
    max_restarts: int,
):
    """The torchrun launch the flags ask for (`distributed.Launch`), or None: no --nproc, or this process is
    one that torchrun started (it trains; the flags were its launcher's).

    Raises:
        ConfigError: a torchrun flag without --nproc.
    """
    given = {"--nnodes": nnodes, "--node-rank": node_rank, "--rdzv-endpoint": rdzv_endpoint, "--rdzv-id": rdzv_id}
    if nproc is None:
        extra = [flag for flag, value in given.items() if value is not None] + (
            ["--max-restarts"] * bool(max_restarts)
        )
        if extra and not _under_torchrun():
            raise ConfigError(
                f"{', '.join(extra)}: option(s) of a data-parallel job, which --nproc starts. Fix: add --nproc N "
                "(processes on this machine), or drop them."
            )
        return None
    if _under_torchrun():
        return None
    from cadence.engine.distributed import Launch

    return Launch(nproc, nnodes or "1", node_rank, rdzv_endpoint, rdzv_id, max_restarts)


def start(plan, launch, out_given: bool) -> None:
    """Check the plan against the job, then run this same command in every process through torchrun.

    Each process plans the run again, so the run directory is fixed here (`--out`) for all of them.

    Raises:
        ConfigError: a run the processes cannot split (distributed.check: online, a batch smaller than the
            processes), or --max-restarts without checkpoints to restart from.
        DistributedError: a process failed (named by rank).
    """
    from cadence.callbacks import Checkpointing
    from cadence.engine import distributed

    world = launch.nproc * int(str(launch.nnodes).split(":")[0])
    distributed.check(plan.config, world)
    if plan.config.ensemble.members > 1:
        raise ConfigError(
            f"--nproc trains one model data-parallel; ensemble.members = {plan.config.ensemble.members}. "
            "Fix: drop --nproc (members train one after another), or set --ensemble 1."
        )
    if launch.max_restarts and not any(isinstance(cb, Checkpointing) for cb in plan.callbacks):
        raise ConfigError(
            f"--max-restarts {launch.max_restarts} restarts the job from its last checkpoint, and this run writes "
            "none. Fix: add --checkpoint-every N (updates) or --checkpoint-seconds S."
        )
    args = sys.argv[1:] + ([] if out_given else ["--out", str(plan.run_dir)])
    distributed.launch(launch, args)


def on_restart(out: Path | None, resume: Path | None, from_run: Path | None, overwrite: bool):
    """(resume, from_run, overwrite) for this process: as given, except in a process torchrun restarted after
    a failure (--max-restarts), which continues the run from its newest checkpoint in --out."""
    if not (_under_torchrun() and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0) or out is None:
        return resume, from_run, overwrite
    from cadence.engine import checkpoint

    if not checkpoint.checkpoint_names(checkpoint.checkpoints_dir(out)):
        return resume, from_run, overwrite  # failed before its first checkpoint: start again as first started
    return Path(out), None, False
