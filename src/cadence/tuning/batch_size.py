"""Batch-size advice from measurements: the gradient noise scale B_simple (McCandlish et al. 2018, "An Empirical
Model of Large-Batch Training", appendix A.1) and, per batch size, throughput and peak memory on this machine.

Hand-written (STYLE.md): no library estimates the noise scale. Plots are reports/tuning.py's.
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from cadence.config import RunConfig
from cadence.data.datasets import Dataset
from cadence.engine import train
from cadence.engine.fast import choose_engine
from cadence.engine.loop import prepare, resolve_config
from cadence.engine.options import step_options, threads_for, torch_threads
from cadence.engine.step import loss_sum
from cadence.engine.strategies import updates as strategy_updates
from cadence.errors import ConfigError
from cadence.optim import build_optimizer


@dataclass(frozen=True)
class NoiseScale:
    """The estimate and its two parts, each a bias-corrected moving average over `draws` batch pairs."""

    b_simple: float  # tr(Sigma) / |G|^2, in samples
    g2: float  # |G|^2, the squared norm of the true (full-data) gradient
    trace: float  # tr(Sigma), the summed per-sample gradient variance
    b_small: int
    b_big: int
    draws: int


def _flat_grad(model: nn.Module, params: list[nn.Parameter], x, y, task: str) -> torch.Tensor:
    loss = loss_sum(task, model(x), y) / len(x)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def gradient_noise_scale(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    *,
    b_small: int = 32,
    b_big: int = 1024,
    draws: int = 200,
    beta: float = 0.99,
    seed: int = 0,
) -> NoiseScale:
    """Estimate B_simple = tr(Sigma) / |G|^2 at the model's current weights (which it leaves alone).

    The mean gradient G_B of a batch of B samples drawn with replacement has E|G_B|^2 = |G|^2 + tr(Sigma)/B,
    so one small and one big batch give unbiased estimates of both terms (appendix A.1):

        |G|^2    ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
        tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

    Each is very noisy per draw, so each is averaged first (a moving average with bias correction,
    m_t = beta*m_{t-1} + (1-beta)*v_t, m_t / (1 - beta^t)) and the ratio taken last. The small batch is the
    first B_small samples of the big one, so a draw costs one big batch of backward passes. Batches are
    drawn with replacement because the identity above holds exactly for that (without replacement it
    carries a finite-population factor). Dropout, if any, is active, as in training.

    Raises:
        ConfigError: b_small >= b_big, or a batch larger than the data.
    """
    n = len(x)
    if not 0 < b_small < b_big:
        raise ConfigError(f"the noise scale needs 0 < b_small < b_big; got {b_small} and {b_big}.")
    if b_big > n:
        raise ConfigError(f"b_big={b_big} is larger than the {n} training samples. Fix: lower b_big.")
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    g2_avg = trace_avg = 0.0
    was = model.training
    model.train()
    rng = torch.get_rng_state()  # dropout draws; handed back so the caller's RNG stream is unchanged
    try:
        for _ in range(draws):
            idx = torch.randint(n, (b_big,), generator=gen)
            small = _flat_grad(model, params, x[idx[:b_small]], y[idx[:b_small]], task)
            rest = _flat_grad(model, params, x[idx[b_small:]], y[idx[b_small:]], task)
            big = (b_small * small + (b_big - b_small) * rest) / b_big
            s2, b2 = float(small.square().sum()), float(big.square().sum())
            g2 = (b_big * b2 - b_small * s2) / (b_big - b_small)
            trace = (s2 - b2) / (1.0 / b_small - 1.0 / b_big)
            g2_avg = beta * g2_avg + (1 - beta) * g2
            trace_avg = beta * trace_avg + (1 - beta) * trace
    finally:
        torch.set_rng_state(rng)
        model.train(was)
    correction = 1.0 - beta**draws
    g2_hat, trace_hat = g2_avg / correction, trace_avg / correction
    b_simple = trace_hat / g2_hat if g2_hat > 0 else math.inf
    return NoiseScale(b_simple, g2_hat, trace_hat, b_small, b_big, draws)


def _peak_rss_reset() -> bool:
    """Reset this process's peak resident set size (Linux: /proc/self/clear_refs, value 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) / 1024 if found else None


def measure_throughput(
    model: nn.Module, data: Dataset, config: RunConfig, batch_size: int, updates: int = 20
) -> dict:
    """Seconds per update and peak memory of mini-batch updates of `batch_size` on a copy of `model`, with
    the engine and thread count a run of that batch size would get (engine.fast.choose_engine,
    engine.options.threads_for).

    Peak memory: on CUDA torch's max_memory_allocated; on the CPU the process's peak resident set size
    (reset before the measurement, so it is this batch size's peak, data and interpreter included).
    """
    model = copy.deepcopy(model)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    config = config.with_overrides({"strategy.name": "mini-batch", "strategy.batch_size": batch_size})
    options = step_options(config, model, data)
    # The engine a run of this config would use (the fast batch engine where it computes the same).
    engine = choose_engine(model, optimizer, None, config, data.x_train, data.y_train, data.task, options)
    pending = strategy_updates(config.strategy, len(data.x_train), config.seed)
    cuda = data.x_train.is_cuda
    with torch_threads(threads_for(config, engine, model, data)):  # the threads such a run would use
        engine.apply([next(pending)])  # the first update allocates optimizer state and warms caches
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        reset = _peak_rss_reset()
        t0 = time.perf_counter()
        for _ in range(updates):
            engine.apply([next(pending)])
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / updates
    rss = _peak_rss_mib() if reset else None
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss
    return {
        "batch_size": batch_size,
        "engine": engine.name,
        "seconds_per_update": seconds,
        "samples_per_s": batch_size / seconds,
        "peak_memory_mib": peak,
    }


@dataclass
class BatchSizeAdvice:
    """Measured rows per batch size, the noise scale, and the advice in one sentence."""

    noise: NoiseScale
    rows: list[dict]
    critical: float
    best: int
    advice: str
    memory: str  # what peak_memory_mib measures
    warmup_updates: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        tree = asdict(self)
        tree["noise"] = asdict(self.noise)
        return tree


def time_to_target(rows: list[dict], critical: float) -> list[dict]:
    """Add the relative updates, samples and time each batch size needs to reach the same loss.

    McCandlish et al. (eq. 2.11): updates S and samples E trade off as (S/S_min - 1)(E/E_min - 1) = 1 with
    B_crit ~ B_noise, so at batch B: S = S_min (1 + B_crit/B) and E = E_min (1 + B/B_crit). Time is S times
    the measured seconds per update; each column is divided by its smallest value.
    """
    out = [
        {
            **r,
            "updates_rel": 1 + critical / r["batch_size"],
            "samples_rel": 1 + r["batch_size"] / critical,
            "time_rel": (1 + critical / r["batch_size"]) * r["seconds_per_update"],
        }
        for r in rows
    ]
    for key in ("updates_rel", "samples_rel", "time_rel"):
        low = min(r[key] for r in out)
        for r in out:
            r[key] /= low
    return out


def advise_batch_size(
    model: nn.Module | str | None = None,
    data: Dataset | tuple | None = None,
    config: RunConfig | dict | None = None,
    *,
    sizes: list[int] | None = None,
    warmup_updates: int = 200,
    draws: int = 200,
    timing_updates: int = 20,
    b_small: int | None = None,
    b_big: int | None = None,
    **overrides,
) -> BatchSizeAdvice:
    """Measure the noise scale and each batch size's throughput and memory; say which batch size to use.

    A copy of the model first trains `warmup_updates` updates under `config` (the noise scale of random
    initial weights says little about the run); the caller's model is not touched. The critical batch size
    is taken as B_simple (the paper's approximation of B_crit). The advice is the measured size with the
    least estimated time to a given loss (`time_to_target`).

    Raises:
        ConfigError, DataError: bad settings or data, before anything is measured.
    """
    if isinstance(model, str):
        overrides = {**overrides, "model.spec": model}
        model = None
    config = resolve_config(config, overrides)
    model, data = prepare(model, data, config)
    n = len(data.x_train)
    sizes = sorted(set(sizes or [2**k for k in range(3, 13) if 2**k <= n]))
    if not sizes or sizes[0] < 1 or sizes[-1] > n:
        raise ConfigError(f"batch sizes must be in [1, {n}] (the training samples); got {sizes}.")
    b_big = b_big or min(n, max(1024, sizes[-1]))
    b_small = b_small or max(1, min(32, b_big // 16))
    model = copy.deepcopy(model)
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    try:
        if warmup_updates:
            warm = {"stop.max_updates": warmup_updates, "stop.max_epochs": None, "stop.max_samples": None}
            train(model, data, config.with_overrides({**warm, "stop.max_seconds": None}))
        torch.set_num_threads(config.threads or 1)  # the noise scale: small products, one thread
        noise = gradient_noise_scale(
            model,
            data.x_train,
            data.y_train,
            data.task,
            b_small=b_small,
            b_big=b_big,
            draws=draws,
            seed=config.seed,
        )
        rows = [measure_throughput(model, data, config, b, timing_updates) for b in sizes]
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
    critical = noise.b_simple
    notes = []
    if not (math.isfinite(critical) and critical > 0):
        notes.append(
            f"the noise-scale estimate is not positive (tr(Sigma) {noise.trace:.3g}, |G|^2 {noise.g2:.3g}): "
            "the gradient is dominated by noise or already near zero; more draws may help"
        )
        critical = float(sizes[-1])
    rows = time_to_target(rows, critical)
    best = min(rows, key=lambda r: r["time_rel"])["batch_size"]
    on_cuda = data.x_train.is_cuda
    return BatchSizeAdvice(
        noise=noise,
        rows=rows,
        critical=critical,
        best=best,
        advice=_advice(best, critical, rows),
        memory="peak CUDA memory allocated by torch" if on_cuda else "peak resident memory of the process",
        warmup_updates=warmup_updates,
        notes=notes,
    )


def _advice(best: int, critical: float, rows: list[dict]) -> str:
    row = next(r for r in rows if r["batch_size"] == best)
    if best < critical / 2:
        why = (
            "below the critical size, so each sample still counts almost fully, and larger batches did not "
            "run faster per sample here"
        )
    elif best > 2 * critical:
        why = (
            f"above the critical size: it needs about {row['samples_rel']:.1f}x the samples of the most "
            "sample-efficient size, but this machine processes large batches fast enough to make up for it"
        )
    else:
        why = "close to the critical size, where neither updates nor samples are wasted"
    return (
        f"Use batch size {best}: of the sizes measured it should reach a given loss soonest on this machine. "
        f"The critical batch size is about {critical:.0f}; {best} is {why}."
    )


__all__ = [
    "BatchSizeAdvice",
    "NoiseScale",
    "advise_batch_size",
    "gradient_noise_scale",
    "measure_throughput",
    "time_to_target",
]
