"""The arithmetic ceiling: the measured matrix-product rate on this machine for the model's own shapes,
turned into samples/s at FLOPS_PER_SAMPLE. Batch 1 uses matrix-vector products on one thread; batches use
matrix-matrix products on the threads the strategy uses."""

from __future__ import annotations

import time

import torch

from common import FLOPS_PER_SAMPLE, MACS, threads

SHAPES = [(128, 784), (64, 128), (10, 64)]


def gflops(batch: int, n_threads: int | None, seconds: float = 0.5) -> float:
    """Median GFLOP/s of forward products (batch x in) @ (in x out) over the model's layers."""
    with threads(n_threads):
        weights = [torch.randn(o, i) for o, i in SHAPES]
        xs = [torch.randn(batch, i) for _, i in SHAPES]
        outs = [torch.empty(batch, o) for o, _ in SHAPES]
        rates = []
        for _ in range(5):
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 5:
                for w, x, out in zip(weights, xs, outs, strict=True):
                    if batch == 1:
                        torch.mv(w, x[0], out=out[0])
                    else:
                        torch.mm(x, w.t(), out=out)
                reps += 1
            rates.append(2 * MACS * batch * reps / (time.perf_counter() - t0) / 1e9)
        return sorted(rates)[len(rates) // 2]


def samples_per_s(batch: int, n_threads: int | None) -> tuple[float, float]:
    """(ceiling samples/s, measured GFLOP/s) for updates of `batch` samples."""
    rate = gflops(batch, n_threads)
    return rate * 1e9 / FLOPS_PER_SAMPLE, rate
