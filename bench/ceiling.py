"""The arithmetic ceiling: the measured matrix-product rate on this machine for the model's own shapes,
turned into samples/s at FLOPS_PER_SAMPLE. Batch 1 uses matrix-vector products on one thread; batches use
matrix-matrix products on the threads the strategy uses."""

from __future__ import annotations

import time

import torch

from common import FLOPS_PER_SAMPLE, threads


def gflops(batch: int, n_threads: int | None, seconds: float = 1.0) -> float:
    """Median GFLOP/s of the first layer's forward product (the model's largest: 128 x 784) on `batch` rows:
    matrix-vector at batch 1, matrix-matrix otherwise; enough repetitions that call overhead is noise."""
    with threads(n_threads):
        w, x = torch.randn(128, 784), torch.randn(batch, 784)
        out = torch.empty(batch, 128)
        rates = []
        for _ in range(5):
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 5:
                for _ in range(50):
                    if batch == 1:
                        torch.mv(w, x[0], out=out[0])
                    else:
                        torch.mm(x, w.t(), out=out)
                reps += 50
            rates.append(2 * 128 * 784 * batch * reps / (time.perf_counter() - t0) / 1e9)
        return sorted(rates)[len(rates) // 2]


def samples_per_s(batch: int, n_threads: int | None) -> tuple[float, float]:
    """(ceiling samples/s, measured GFLOP/s) for updates of `batch` samples."""
    rate = gflops(batch, n_threads)
    return rate * 1e9 / FLOPS_PER_SAMPLE, rate
