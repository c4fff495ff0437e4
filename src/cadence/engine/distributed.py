"""Data-parallel training on torchrun and DistributedDataParallel: joining the process group, the DDP-wrapped
autograd engine, each process's slice of every update, and the few agreements (when to stop, evaluation, RNG
in checkpoints) that keep the processes in step. torchrun starts and restarts the processes (cli/launch.py),
DDP all-reduces the gradients; nothing here is a launcher or a collective of our own.

How one update is computed by W processes: the strategy yields the same updates in every process (the order
of epoch e depends only on (seed, e)); each process takes its slice of every chunk (`Group.shard`); the loss
of each slice is summed and divided by the update's sample count over all processes, and DDP *sums* the
gradients (a comm hook) instead of averaging them, so the all-reduced gradient is exactly the mean over the
update, however unevenly the samples split: a batch of B over W processes gives the first B mod W processes
one sample more.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cadence.config import RunConfig, Strategy
from cadence.engine.budget import micro_batch
from cadence.engine.evaluate import predict
from cadence.engine.step import Applied, AutogradEngine, StepOptions
from cadence.engine.stopping import StopReason
from cadence.engine.strategies import Update
from cadence.errors import ConfigError, DistributedError

_REASONS = list(StopReason)  # a stop reason travels as its index + 1 (0: go on) in one all-reduce (MAX)


def process_env() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, processes on this machine) from torchrun's environment; (0, 1, 0, 1)
    outside it."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    return int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")), local_size


def process_rank() -> int:
    """This process's rank under torchrun (0 outside it): the one that writes is rank 0."""
    return process_env()[0]


def check(config: RunConfig, size: int, model: nn.Module | None = None) -> None:
    """Refuse, before any state changes, a run that W = `size` processes cannot train as one process would.

    Raises:
        ConfigError: online (or stream) training, a mini-batch or chunk smaller than W, batch norm on the CPU.
    """
    if size <= 1:
        return
    s = config.strategy
    one = "1 process (drop --nproc)"
    if s.name in (Strategy.ONLINE, Strategy.STREAM):
        raise ConfigError(
            f"strategy {s.name.value!r} trains one sample per update, and data parallelism splits the samples of "
            f"each update across processes: with {size} processes, {size - 1} of them would have nothing to "
            "compute and every update would wait on an all-reduce, so it is refused. Fix: use mini-batch "
            f"(--strategy mini-batch --batch-size 64, the batch split across the processes) or {one}."
        )
    rows = min(s.chunk_size, micro_batch(s)) if s.name == Strategy.MINI_BATCH else s.chunk_size
    if rows < size:
        knob = "batch_size" if s.name == Strategy.MINI_BATCH and s.batch_size <= s.chunk_size else "chunk_size"
        raise ConfigError(
            f"{knob}={rows} is smaller than the {size} processes: some would get no sample of a batch. "
            f"Fix: set {knob} to at least {size} (it is the global batch, split across the processes), or {one}."
        )
    if model is not None and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        device = config.device
        if not device.startswith("cuda") and not (device == "auto" and torch.cuda.is_available()):
            raise ConfigError(
                f"the model has batch norm: {size} processes would each normalize by the statistics of their "
                "own slice (not the batch's), and torch's SyncBatchNorm runs on GPUs only. Fix: train on cuda, "
                f"drop batch norm (model.batch_norm=false), or {one}."
            )


def local_device(device: torch.device, config: RunConfig) -> torch.device:
    """The device of this process: `cuda` (no index) under torchrun is `cuda:LOCAL_RANK`.

    Raises:
        ConfigError: nccl with more processes on this machine than GPUs (nccl needs one GPU per process).
    """
    _, size, local, local_size = process_env()
    if size <= 1 or device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if _backend(config, device) == "nccl" and local_size > count:
        raise ConfigError(
            f"backend nccl needs one GPU per process: {local_size} processes on this machine, {count} GPU(s). "
            f"Fix: --nproc {count}, or distributed.backend=gloo (slower) to share GPUs."
        )
    return device if device.index is not None else torch.device("cuda", local % count)


def _backend(config: RunConfig, device: torch.device) -> str:
    chosen = config.distributed.backend
    return chosen if chosen != "auto" else ("nccl" if device.type == "cuda" else "gloo")


def process_seed(seed: int) -> int:
    """The torch seed of this process's training RNG (dropout): the run's seed in rank 0 (and alone), another
    per rank, so processes do not draw the same dropout masks."""
    rank = process_rank()
    return seed if rank == 0 else seed * 1_000_003 + rank


@dataclass(frozen=True)
class Group:
    """This process's place in the job: rank, world size, the device collectives' tensors live on."""

    rank: int
    size: int
    device: torch.device
    backend: str
    timeout_seconds: float

    # --- the samples of each process -----------------------------------------------------------------

    def bounds(self, n: int) -> tuple[int, int]:
        """[start, stop) of this process's share of n samples: contiguous, the first n mod W one longer
        (as torch.tensor_split)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def shard(self, update: Update) -> Update:
        """This process's slice of every chunk of `update`; n_samples stays the whole update's, and `offsets`
        place each slice among its samples (augmentation draws per sample of the whole update)."""
        chunks, offsets, at = [], [], 0
        for chunk in update.chunks:
            start, stop = self.bounds(len(chunk))
            chunks.append(chunk[start:stop])
            offsets.append(at + start)
            at += len(chunk)
        return dataclasses.replace(update, chunks=tuple(chunks), offsets=tuple(offsets))

    # --- agreements --------------------------------------------------------------------------------------

    def agree(self, reason: StopReason | None, updates: int) -> StopReason | None:
        """The stop reason of the job: any process's (budget in seconds, a signal, a callback) stops all of
        them after the same update. Ties go to the later member of StopReason."""
        code = torch.tensor([0 if reason is None else _REASONS.index(reason) + 1], device=self.device)
        with self.collective(f"agreeing whether to stop after update {updates}"):
            dist.all_reduce(code, op=dist.ReduceOp.MAX)
        return None if int(code) == 0 else _REASONS[int(code) - 1]

    def decide(self, flag: bool, what: str) -> bool:
        """Rank 0's `flag` in every process (a decision that reads a clock or the file system)."""
        value = torch.tensor([int(flag)], device=self.device)
        with self.collective(what):
            dist.broadcast(value, src=0)
        return bool(value)

    def barrier(self, what: str) -> None:
        """Wait until every process is here (rank 0 has finished writing what the others may read next)."""
        with self.collective(what):
            dist.barrier()

    def gather_object(self, obj: Any, what: str) -> list:
        """`obj` of every process, by rank (picklable objects: RNG states)."""
        out: list = [None] * self.size
        with self.collective(what):
            dist.all_gather_object(out, obj)
        return out

    def predict(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        """The model's outputs for all of `x`, each process computing its slice: every process gets every row
        exactly once, in order (slices are padded to one length for all_gather and cut back, so no sample is
        counted twice, as DistributedSampler's padding would)."""
        if len(x) < self.size:
            return predict(model, x, batch_size)
        start, stop = self.bounds(len(x))
        local = predict(model, x[start:stop], batch_size)
        longest = self._share(len(x), 0)  # rank 0's share is the longest
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        with self.collective("gathering the evaluation's outputs"):
            dist.all_gather(parts, padded)
        sizes = [self._share(len(x), r) for r in range(self.size)]
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    def _share(self, n: int, rank: int) -> int:
        base, extra = divmod(n, self.size)
        return base + (rank < extra)

    @contextmanager
    def collective(self, what: str) -> Iterator[None]:
        """Turn a failed collective (a process died, or did not answer within the timeout) into a
        DistributedError naming this process and what it was waiting for."""
        try:
            yield
        except (dist.DistError, RuntimeError) as err:
            if not isinstance(err, dist.DistError) and not _from_transport(err):
                raise
            raise DistributedError(
                f"process rank {self.rank} of {self.size} ({self.backend}) failed {what}: {_first_line(err)}. "
                "Another process died or did not answer within distributed.timeout_seconds="
                f"{self.timeout_seconds:g} (torchrun names the process that failed). Fix: see that process's "
                "error; resume with --resume RUN_DIR, or pass --max-restarts N to restart from the last "
                "checkpoint."
            ) from err


def _from_transport(err: RuntimeError) -> bool:
    """Whether a RuntimeError comes from the collectives' transport: gloo raises its I/O errors (a peer gone:
    "Connection reset by peer", "Connection closed by peer") as plain RuntimeErrors, not DistErrors."""
    text = str(err)
    return any(word in text for word in ("gloo", "Gloo", "NCCL", "Connection", "Timed out", "timed out"))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def join(config: RunConfig, device: torch.device) -> Group | None:
    """Join torchrun's process group (WORLD_SIZE > 1), or use the one already initialized; None for one
    process. The backend and timeout are `config.distributed`'s.

    Raises:
        ConfigError: nccl without a cuda device, or a group of another size than WORLD_SIZE.
    """
    rank, size, _, _ = process_env()
    if size <= 1 and not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    backend = _backend(config, device)
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError(
            f"backend nccl runs on cuda devices; this run is on {device}. Fix: distributed.backend=gloo (or auto)."
        )
    timeout = config.distributed.timeout_seconds
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        try:
            dist.init_process_group(
                backend, timeout=timedelta(seconds=timeout), device_id=device if device.type == "cuda" else None
            )
        except dist.DistError as err:
            raise DistributedError(
                f"process rank {rank} of {size} could not join the process group ({backend}) within "
                f"distributed.timeout_seconds={timeout:g}: {_first_line(err)}. Fix: start every process "
                "(torchrun --nproc-per-node/--nnodes), and check --rdzv-endpoint is reachable."
            ) from err
        atexit.register(_leave)
    else:
        backend = str(dist.get_backend())
    if dist.get_world_size() != max(size, 1) and "WORLD_SIZE" in os.environ:
        raise ConfigError(
            f"the process group has {dist.get_world_size()} processes but WORLD_SIZE is {size}. "
            "Fix: initialize the group with torchrun's environment (init_method env://), or let cadence do it."
        )
    return Group(dist.get_rank(), dist.get_world_size(), device, backend, timeout)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _sum_gradients(state, bucket):  # no annotations: DDP compares them with dist.GradBucket, and ours are strings
    """DDP comm hook: all-reduce a gradient bucket by SUM (DDP's own hook divides by the world size). Each
    process's loss is already divided by the whole update's sample count, so the sum is the exact mean."""
    work = dist.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


class DataParallelEngine(AutogradEngine):
    """The autograd engine over a DistributedDataParallel-wrapped model, each update cut to this process's
    slice (`Group.shard`). The model's parameters are the caller's: the optimizer, the checkpoints and the
    evaluation keep using the plain module; only the forward/backward of `step` goes through the wrapper."""

    def __init__(
        self,
        group: Group,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        x: torch.Tensor,
        y: torch.Tensor,
        task: str,
        options: StepOptions | None = None,
    ):
        if group.device.type == "cuda":  # batch statistics over the whole batch, as one process computes them
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        with group.collective("wrapping the model in DistributedDataParallel (it sends rank 0's weights)"):
            wrapped = DistributedDataParallel(
                model, device_ids=[group.device] if group.device.type == "cuda" else None
            )
        wrapped.register_comm_hook(None, _sum_gradients)
        why = f"data-parallel over {group.size} processes: DistributedDataParallel runs on the autograd engine"
        super().__init__(wrapped, optimizer, scheduler, x, y, task, options, fallback=why)
        self.group = group

    def apply(self, updates: Sequence[Update]) -> Applied:
        with self.group.collective("all-reducing an update's gradients"):
            return super().apply([self.group.shard(u) for u in updates])


def agree(group: Group | None, reason: StopReason | None, updates: int) -> StopReason | None:
    """`reason`, agreed by every process of `group` (itself for one process)."""
    return reason if group is None else group.agree(reason, updates)
