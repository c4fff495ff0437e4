"""Builds, from the config and the data, what the loop needs beyond model and optimizer, checked before the
first update: the StepOptions of every update (penalties, clipping, bf16, augmentation), the lr schedule, the
device and the thread count."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

from cadence.config import RunConfig, Strategy
from cadence.data.augment import Augmenter
from cadence.data.datasets import Dataset
from cadence.engine import budget
from cadence.engine.budget import budget_updates, updates_per_epoch
from cadence.engine.evaluate import lower_is_better, metric_names
from cadence.engine.step import StepOptions
from cadence.errors import ConfigError
from cadence.optim import Schedule, build_schedule, penalized_parameters
from cadence.optim.schedules import ScheduleWarning, horizon_warnings


def step_options(config: RunConfig, model: nn.Module, data: Dataset) -> StepOptions:
    """StepOptions for `config`.

    Raises:
        ConfigError: augmentation on data that are not images or are standardized per feature.
    """
    reg = config.regularization
    augment = None
    if config.augment.enabled:
        if data.std is not None and data.std.numel() > 1:
            raise ConfigError(
                "augment moves pixels to other positions, but this data set is standardized per feature "
                "(each pixel by its own std, near 0 at the borders), so moved pixels land far out of range. "
                "Fix: set data.standardize to 'global' (or 'none') when augmenting."
            )
        augment = Augmenter(config.augment, data.input_shape, config.seed, data.mean, data.std)
    return StepOptions(
        penalized=tuple(penalized_parameters(model, reg.exclude)) if (reg.l1 or reg.l2) else (),
        l1=reg.l1,
        l2=reg.l2,
        clip_norm=config.optimizer.clip_norm,
        clip_value=config.optimizer.clip_value,
        autocast=torch.bfloat16 if config.precision == "bf16" else None,
        augment=augment,
    )


def run_schedule(config: RunConfig, optimizer: torch.optim.Optimizer, data: Dataset) -> Schedule:
    """The lr schedule of the run: per-epoch steps and cosine's default T_max come from the budget.

    Raises:
        ConfigError: a plateau metric the evaluations will not record, or cosine without any budget.
    """
    n = len(data.x_train)
    s = config.schedule
    mode = None
    if s.plateau is not None or s.name == "plateau":
        metric = s.plateau.metric if s.plateau else "val_loss"
        allowed = ["train_loss", *(metric_names(data.task) if len(data.x_val) else [])]
        if metric not in allowed:
            raise ConfigError(
                f"schedule.plateau.metric = {metric!r} is not recorded at evaluations of this {data.task} run"
                f"{' (no validation split)' if not len(data.x_val) else ''}. Allowed: {', '.join(allowed)}."
            )
        chosen = s.plateau.mode if s.plateau else "auto"
        mode = chosen if chosen != "auto" else ("min" if lower_is_better(metric) else "max")
    per_epoch, horizon = updates_per_epoch(config.strategy, n), budget_updates(config, n)
    for message in horizon_warnings(s, per_epoch, horizon):
        warnings.warn(message, ScheduleWarning, stacklevel=3)
    return build_schedule(optimizer, s, per_epoch, horizon, mode)


def device_for(config: RunConfig, model: nn.Module, optimizer, scheduler, data: Dataset, options) -> torch.device:
    """The run's device: `config.device`, checked to exist on this machine. `auto` takes cuda when present,
    except for a run the compiled one-sample kernel trains (CPU-only, and faster than a GPU at one sample
    per update).

    Raises:
        ConfigError: a cuda or mps device this machine (or this torch build) does not have.
    """
    from cadence.engine.fast import choose_engine  # fast/ is the engines' package; this module feeds the loop

    want = config.device
    if want == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        cpu_engine = choose_engine(
            model, optimizer, scheduler, config, data.x_train, data.y_train, data.task, options
        )
        return torch.device("cpu" if cpu_engine.name == "c-kernel" else "cuda")
    if want.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(want.partition(":")[2] or 0)
        if index >= count:
            have = f"{count} CUDA device(s)" if count else f"no CUDA device (torch {torch.__version__})"
            raise ConfigError(
                f"device = {want!r}, but this machine has {have}. Fix: set device to "
                f"{'cuda:0' if count else 'cpu'} or auto."
            )
    if want == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device = 'mps', but MPS is not available here. Fix: set device to cpu or auto.")
    return torch.device(want)


# Forward FLOPs of one chunk from which more torch threads may pay for themselves on idle cores (see
# threads_for): between digits' default run (mlp:128,64 at batch 64: 2.2 MFLOP, whose products are too small
# to split) and Fashion-MNIST at batch 100 (22 MFLOP, the README's mini-batch figure, taken on two threads).
PARALLEL_FLOPS = 10e6


def forward_flops(model: nn.Module, sample: torch.Tensor) -> float:
    """Multiply-add FLOPs of the model's forward pass on one sample: 2 per weight use of each Linear and
    convolution (counted on a probe pass, so a convolution counts once per output position), at least 2 per
    parameter. Hand-counted: torch's FlopCounterMode costs about a second at its first use in a process."""
    flops = [2.0 * sum(p.numel() for p in model.parameters())]

    def count(module: nn.Module, inputs, output) -> None:
        if isinstance(module, nn.Linear):
            flops.append(2.0 * module.weight.numel() * (output.numel() // module.out_features))
        else:  # a convolution: every output element is a dot product over in_channels/groups x kernel
            flops.append(2.0 * output.numel() * module.weight[0].numel())

    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, kinds)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(sample[:1])
    finally:
        model.train(was)
        for hook in hooks:
            hook.remove()
    return max(flops[0], sum(flops[1:]))


def threads_for(config: RunConfig, engine, model: nn.Module, data: Dataset) -> int:
    """Torch threads for the run, chosen from the work and the machine. `config.threads` wins.

    One thread where per-update products are small (a second one only hands work back and forth) and on a
    busy machine: there a second thread waits for a core at every parallel region, 75-410x slower in issue 9's
    measurements, even for full-batch products of 8192 rows (bench/bench_busy.py). More only where a chunk's
    forward pass reaches PARALLEL_FLOPS, and then no more than the cores other processes leave idle as the run
    starts (idle_cores, which watches them for WINDOW_SECONDS: only runs that pass PARALLEL_FLOPS pay it).
    """
    if config.threads:
        return config.threads
    if engine.name == "c-kernel" or data.x_train.device.type != "cpu":
        return 1  # the kernel runs on one thread; on a GPU the CPU only launches work
    s = config.strategy
    # The rows of one forward pass: a chunk (full-batch), a micro-batch (mini-batch, accumulated or not).
    rows = min(budget.samples_per_update(s, len(data.x_train)), s.chunk_size)
    if s.name != Strategy.FULL_BATCH:
        rows = min(rows, budget.micro_batch(s))
    if forward_flops(model, data.x_train) * rows < PARALLEL_FLOPS:
        return 1
    return max(1, min(torch.get_num_threads(), idle_cores()))


# How long idle_cores watches the other processes: 10 ticks of the 100 Hz clock (USER_HZ) that /proc/stat counts
# in. Each CPU's count can be a tick off at either end, so the figure is within ~0.1-0.2 core on 2 cores, well
# inside the half core that rounding to whole cores forgives; a longer window would cost every large run more.
WINDOW_SECONDS = 0.1


def idle_cores() -> int:
    """Usable cores that other processes leave idle now: the usable cores, less the larger of two looks at
    the others' work, taken over WINDOW_SECONDS (Linux /proc):

    - their CPU time on the usable cores: the busy ticks of those CPUs in /proc/stat, less this process's own
      CPU time over the window (its OpenMP workers may still spin after a parallel region), per second;
    - their tasks runnable at each of three looks across the window (procs_running less this process's
      running threads): the fewest, since one look can catch a task that runs for a moment (on the shared
      2-core machine one look in 20 saw 2 with no busy tick in the window); and only where this process
      may use every CPU, as procs_running counts them all.

    Not the load average: its 1-minute figure counts this process's own past work. In `make bench`, after
    Cadence and the plain loop had just run on two threads it stood near 2, so the next Cadence run took one
    thread on an otherwise idle 2-core machine, and lost ~10% on mini-batch and ~40% on full-batch against two
    threads. Where /proc is missing (macOS) the load average beyond this process is all there is to go on.
    """
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    usable = len(cpus) or os.cpu_count() or 1
    first = _cpu_sample(cpus)
    if first is None:
        others = max(0.0, os.getloadavg()[0] - 1.0) if hasattr(os, "getloadavg") else 0.0
        return max(0, round(usable - others))
    samples = [first]
    for _ in range(2):
        time.sleep(WINDOW_SECONDS / 2)
        samples.append(_cpu_sample(cpus) or samples[-1])
    last = samples[-1]
    seconds = last.seconds - first.seconds
    busy = (last.busy_ticks - first.busy_ticks) / os.sysconf("SC_CLK_TCK") - (last.own_cpu - first.own_cpu)
    others = busy / seconds if seconds > 0 else 0.0
    if usable == os.cpu_count():
        others = max(others, min(s.others_running for s in samples))
    return max(0, round(usable - others))


class CpuSample(NamedTuple):
    """One look at the machine for idle_cores."""

    seconds: float  # time.monotonic()
    busy_ticks: int  # user+nice+system+irq+softirq+steal of the usable CPUs, in USER_HZ ticks (/proc/stat)
    own_cpu: float  # this process's CPU time so far, every thread (time.process_time())
    others_running: int  # runnable tasks that are not this process's threads


def _cpu_sample(cpus: set[int]) -> CpuSample | None:
    """A look at /proc/stat for the CPUs in `cpus` (the aggregate line where empty), or None without it."""
    own_cpu, now = time.process_time(), time.monotonic()
    names = {f"cpu{c}".encode() for c in cpus} or {b"cpu"}
    busy, running = 0, None
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] in names:
                    # user nice system idle iowait irq softirq steal (guest time is inside user already)
                    user, nice, system, _, _, irq, softirq, steal = (int(v) for v in fields[1:9])
                    busy += user + nice + system + irq + softirq + steal
                elif line.startswith(b"procs_running "):
                    running = int(fields[1])
    except (OSError, ValueError):
        return None
    if running is None:
        return None
    return CpuSample(now, busy, own_cpu, max(0, running - _own_running_threads()))


def _own_running_threads() -> int:
    """This process's threads in state R (running or runnable), at least the one asking."""
    count = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended
        count += stat[stat.rindex(b")") + 2 :].startswith(b"R")  # the state follows the parenthesized name
    return max(1, count)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on `n` torch threads, restoring the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
