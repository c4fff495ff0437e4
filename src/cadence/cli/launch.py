"""`cadence train --nproc N`: the run started in N processes through torch.distributed.run (torchrun's API, no
launcher of our own), torchrun's failures as one DistributedError naming the rank, and what changes in the
processes it starts: a restarted one (--max-restarts) resumes from the run's last checkpoint, and only rank 0
prints and writes. Imports torch only when a launch needs it."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cadence.errors import ConfigError, DistributedError

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
    """The torchrun launch the flags ask for (`Launch`), or None: no --nproc, or this process is
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
    run_torchrun(launch, args)


def on_restart(out: Path | None, resume: Path | None, from_run: Path | None, overwrite: bool):
    """(resume, from_run, overwrite) for this process: as given, except in a process torchrun restarted after
    a failure (--max-restarts), which continues the run from its newest checkpoint in --out."""
    if not (_under_torchrun() and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0) or out is None:
        return resume, from_run, overwrite
    from cadence.engine import checkpoint

    if not checkpoint.checkpoint_names(checkpoint.checkpoints_dir(out)):
        return resume, from_run, overwrite  # failed before its first checkpoint: start again as first started
    return Path(out), None, False


SHUTDOWN_SECONDS = 5


@dataclass(frozen=True)
class Launch:
    """How `cadence ... --nproc N` starts its processes: torchrun's options, passed through."""

    nproc: int
    nnodes: str = "1"
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    max_restarts: int = 0

    def torchrun_args(self) -> list[str]:
        """torchrun's command-line options for this launch: `--standalone` on one machine."""
        args = [f"--nproc-per-node={self.nproc}", f"--max-restarts={self.max_restarts}"]
        # After a process fails the others can do nothing useful (their collectives fail too): when torchrun
        # itself stops (a signal, the end), it kills them SHUTDOWN_SECONDS after its SIGTERM, not 30. (When a
        # process fails, torch's process poller waits a fixed 30 s before killing one that ignores SIGTERM.)
        args.append(f"--shutdown-timeout={SHUTDOWN_SECONDS}")
        if self.nnodes == "1" and self.rdzv_endpoint is None:
            return ["--standalone", *args]
        args.append(f"--nnodes={self.nnodes}")
        if self.node_rank is not None:
            args.append(f"--node-rank={self.node_rank}")
        if self.rdzv_endpoint is not None:
            args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={self.rdzv_endpoint}"]
        if self.rdzv_id is not None:
            args.append(f"--rdzv-id={self.rdzv_id}")
        return args


def run_torchrun(settings: Launch, args: Sequence[str]) -> None:
    """Run this program again with `args` in `settings.nproc` processes on this machine through
    torch.distributed.run (torchrun), and wait for them: `python -m cadence` (or the `cadence` script, or
    whichever module or script is running) under torchrun, where each process joins the group by itself.

    Raises:
        DistributedError: a process failed (the message names its rank, exit code or signal, and the first
            line of its error); `exit_codes` on the error holds each failed rank's exit code.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default for several processes, without its banner
    # Restarts (--max-restarts): a process group sharing torchrun's rendezvous store reads the previous attempt's
    # addresses and cannot connect ("Gloo connectFullMesh failed ... Connection refused"; pytorch#135712).
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    options = get_args_parser().parse_args([*settings.torchrun_args(), *_this_program()])
    options.training_script_args = list(args)  # not parsed: argparse would read `--nproc` as its own option
    try:
        run(options)
    except ChildFailedError as err:
        raise _failed(err) from None
    except SignalException as err:  # torchrun got SIGINT/SIGTERM and passed it on to every process
        name = signal.Signals(err.sigval).name
        error = DistributedError(
            f"interrupted by {name}: every process was given {name}, to finish its update and write a checkpoint "
            f"(with --checkpoint-every/--checkpoint-seconds) within {SHUTDOWN_SECONDS} s. Fix: continue with "
            "--resume RUN_DIR."
        )
        error.exit_code = 130
        raise error from None


def _this_program() -> list[str]:
    """torchrun's program arguments that start what is running now: `--module NAME` for `python -m NAME`, the
    script for a script (the `cadence` entry point is one), `--module cadence` otherwise (python -c)."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name:
        return ["--module", spec.name.removesuffix(".__main__")]
    script = sys.argv[0] if sys.argv else ""
    return [script] if script and os.path.isfile(script) else ["--module", "cadence"]


def _failed(err) -> DistributedError:
    """One DistributedError for torchrun's ChildFailedError: the first process that failed, then the others."""
    rank, first = err.get_first_failure()
    failures = sorted(err.failures.items())
    lines = [_describe(r, f) for r, f in failures if r != rank]
    others = f"; then {'; '.join(lines)}" if lines else ""
    error = DistributedError(
        f"{_describe(rank, first)}{others}. Fix: see the first process's error above; resume with --resume "
        "RUN_DIR "
        "(with --checkpoint-every N), or pass --max-restarts N to restart the job from its last checkpoint."
    )
    error.exit_codes = {r: f.exitcode for r, f in failures}
    codes = set(error.exit_codes.values())
    code = next(iter(codes)) if len(codes) == 1 else 1
    error.exit_code = code if 1 < code < 128 else 1  # the processes' own when they agree (2: config, 3: diverged)
    return error


def _describe(rank: int, failure) -> str:
    code = failure.exitcode
    if code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    message = failure.message if isinstance(failure.message, str) else ""
    noise = ("To enable traceback", "Signal ")  # torchrun's placeholder, and a repeat of the signal named here
    first = message.strip().splitlines()[0] if message.strip() else ""
    detail = f" ({first})" if first and not message.startswith(noise) else ""
    return f"process rank {rank} (pid {failure.pid}) {how}{detail}"
