"""Claim 3: full-batch gradient descent on all 60,000 Fashion-MNIST samples: seconds per exact-gradient update.

Cadence's full-batch strategy (chunks of 8192 samples, gradients summed) against the plain eager loop that
pushes the whole set through one forward/backward.
"""

from __future__ import annotations

import statistics

import torch

import bench_minibatch
import ceiling
import fashion
import references as ref
from cadence.engine import train
from common import FLOPS_PER_SAMPLE, REPEATS, fresh_model, initial_state, threads

LR, UPDATES = 0.1, 3
THREADS = bench_minibatch.THREADS


def cadence_seconds(data, state, autograd: bool = False) -> tuple[list[float], int]:
    """Seconds per update of REPEATS runs, and the threads the runs used (the default chooses them)."""
    out = []
    for _ in range(REPEATS):
        run = train(
            fresh_model(state),
            data,
            strategy="full-batch",
            optimizer="gd",
            lr=LR,
            max_epochs=UPDATES,
            threads=THREADS,
            engine="autograd" if autograd else "auto",  # autograd: the general path, for comparison
        )
        out.append(run.train_seconds / run.updates)
    return out, run.threads


def row(system: str, seconds: list[float], note: str = "", n_threads: int | None = None) -> dict:
    return {
        "system": system,
        "seconds_per_update": statistics.median(seconds),
        "seconds": seconds,
        "threads": n_threads or torch.get_num_threads(),
        "note": note,
    }


def main() -> dict:
    data = fashion.cadence_dataset()
    state = initial_state()
    with threads(THREADS):
        return _measure(data, state)


def _measure(data, state) -> dict:
    fast, fast_threads = cadence_seconds(data, state)
    slow, slow_threads = cadence_seconds(data, state, autograd=True)
    rows = [
        row("cadence full-batch", fast, "batch engine, chunks of 8192", fast_threads),
        row("cadence full-batch, autograd path", slow, "autograd", slow_threads),
    ]
    plain = ref.plain_full_batch(fresh_model(state), data.x_train, data.y_train, LR, REPEATS * UPDATES)
    rows.append(row("plain eager loop, whole set at once", plain))
    _, rate = ceiling.samples_per_s(8192, THREADS)
    best = len(data.x_train) * FLOPS_PER_SAMPLE / (rate * 1e9)
    return {
        "rows": rows,
        "ceiling_seconds_per_update": best,
        "ceiling_gflops": rate,
        "reference": rows[2]["system"],
    }


if __name__ == "__main__":
    from common import write

    result = main()
    print(write("full-batch", result.pop("rows"), result))
