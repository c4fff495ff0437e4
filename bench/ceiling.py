"""The arithmetic ceiling: the FLOPs per sample (common.flops_per_sample) at the machine's best measured rate
for the model's own matrix shapes, so that no system's figure can pass 100%.

The rate is the best of every way this machine computes the first layer's product (128 x 784, 92% of the
model's FLOPs) on one thread and on the claim's threads: torch's matrix-vector product, torch's matrix-matrix
product at the claim's batch and at 1,024 rows (MKL near its peak), and the compiled kernel's own four-row
products. A batch
of one cannot reach the matrix-matrix rate (it reads every weight once per sample), so an online figure is a
share of what the arithmetic units could do, not of what memory allows (README, "Speed", gives the memory
bound too). Each round of a claim measures the rate again and the claim keeps the best.
"""

from __future__ import annotations

import ctypes
import time

import torch

from common import flops_per_sample, threads

SHAPE = (128, 784)


def _best_gflops(product, flops: float, seconds: float) -> float:
    """Best GFLOP/s of `product()` over five timed slices of `seconds` / 5 each."""
    product()  # first touch: pages, MKL's packing buffers
    best = 0.0
    for _ in range(5):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            for _ in range(20):
                product()
            reps += 20
        best = max(best, flops * reps / (time.perf_counter() - t0) / 1e9)
    return best


def _kernel_gflops(seconds: float) -> float | None:
    """The compiled kernel's forward product (cadence_mlp_rows_dot), looped inside C; None when not built."""
    from cadence.engine.fast import kernel

    lib = kernel()
    if lib is None or not hasattr(lib, "cadence_mlp_rows_dot"):
        return None
    fn = lib.cadence_mlp_rows_dot
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_void_p, ctypes.c_int64]
    out, inn = SHAPE
    w, b, a, z = torch.randn(out, inn), torch.randn(out), torch.randn(inn), torch.empty(out)
    reps = 200
    return _best_gflops(
        lambda: fn(w.data_ptr(), b.data_ptr(), a.data_ptr(), out, inn, z.data_ptr(), reps),
        2.0 * out * inn * reps,
        seconds,
    )


def rates(batch: int, n_threads: int | None, seconds: float = 1.0) -> dict[str, float]:
    """GFLOP/s of each way of computing the first layer's product, on `n_threads` (None: torch's default)."""
    out, inn = SHAPE
    found = {}
    with threads(n_threads):
        w, x1 = torch.randn(out, inn), torch.randn(inn)
        z1 = torch.empty(out)
        found["torch mv"] = _best_gflops(lambda: torch.mv(w, x1, out=z1), 2.0 * out * inn, seconds / 4)
        for rows in sorted({batch, 1024} - {1}):
            x, z = torch.randn(rows, inn), torch.empty(rows, out)
            found[f"torch mm, {rows} rows"] = _best_gflops(
                lambda x=x, z=z: torch.mm(x, w.t(), out=z), 2.0 * out * inn * len(x), seconds / 4
            )
    kernel = _kernel_gflops(seconds / 4)  # one thread, as the kernel runs
    if kernel is not None:
        found["kernel rows_dot"] = kernel
    return found


def samples_per_s(gflops: float, batch: int) -> float:
    """Ceiling samples/s at `gflops` for updates of `batch` samples of the 784-128-64-10 MLP."""
    return gflops * 1e9 / flops_per_sample(batch)


class Best:
    """The best rates seen over a claim's rounds (one measurement per round, interleaved with the systems)."""

    def __init__(self, batch: int, n_threads: int | None):
        self.batch, self.n_threads, self.best = batch, n_threads, {}

    def measure(self, _round: int = 0) -> float:
        # One thread too: on a busy machine the default threads' rate can fall below one thread's, and a
        # system the thread policy ran on one thread must not pass the ceiling.
        for n in sorted({1, self.n_threads or torch.get_num_threads()}):
            for name, rate in rates(self.batch, n).items():
                key = f"{name}, {n} thread{'s' * (n > 1)}"
                self.best[key] = max(rate, self.best.get(key, 0.0))
        return max(self.best.values())

    @property
    def gflops(self) -> float:
        return max(self.best.values())

    def summary(self) -> dict:
        return {
            "ceiling_gflops": self.gflops,
            "ceiling_samples_per_s": samples_per_s(self.gflops, self.batch),
            "ceiling_rates_gflops": self.best,
        }
