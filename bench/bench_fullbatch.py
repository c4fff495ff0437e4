"""Claim 3: full-batch gradient descent on all 60,000 Fashion-MNIST samples: seconds per exact-gradient update.

Cadence's full-batch strategy (memory-bounded chunks, gradients summed) against the plain eager loop that
pushes the whole set through one forward/backward, interleaved round by round.
"""

from __future__ import annotations

import statistics

import torch

import bench_minibatch
import ceiling
import fashion
import references as ref
from bench_online import row
from cadence.engine import train
from common import RUN, flops_per_sample, fresh_model, initial_state, interleaved, threads, threads_seen

LR, UPDATES = 0.1, 3
THREADS = bench_minibatch.THREADS


def cadence_seconds(data, state, autograd: bool = False) -> tuple[float, int]:
    """Seconds per update of one run of UPDATES updates, and the threads it used (the default chooses them)."""
    run = train(
        fresh_model(state),
        data,
        strategy="full-batch",
        optimizer="gd",
        lr=LR,
        max_epochs=UPDATES,
        threads=THREADS,
        engine="autograd" if autograd else "auto",  # autograd: the general path, for comparison
        **RUN,
    )
    return run.train_seconds / run.updates, run.threads


def main() -> dict:
    data = fashion.cadence_dataset()
    state = initial_state()
    with threads(THREADS):
        return _measure(data, state)


def _measure(data, state) -> dict:
    used: dict[str, list[int]] = {}
    best = ceiling.Best(8192, THREADS)

    def cadence(name: str):
        def measure(_r: int) -> float:
            seconds, n = cadence_seconds(data, state, autograd=name == "autograd")
            used.setdefault(name, []).append(n)
            return seconds

        return measure

    def plain(_r: int) -> float:
        return statistics.median(ref.plain_full_batch(fresh_model(state), data.x_train, data.y_train, LR, UPDATES))

    measured = interleaved(
        {"fast": cadence("fast"), "autograd": cadence("autograd"), "plain": plain, "ceiling": best.measure}
    )
    unit = "seconds_per_update"
    rows = [
        row(
            "cadence full-batch",
            measured["fast"],
            threads_seen(used["fast"]),
            note=f"batch engine, {UPDATES} updates per round",
            unit=unit,
        ),
        row(
            "cadence full-batch, autograd path",
            measured["autograd"],
            threads_seen(used["autograd"]),
            note="autograd",
            unit=unit,
        ),
        row(
            "plain eager loop, whole set at once",
            measured["plain"],
            torch.get_num_threads(),
            note=f"median of {UPDATES} updates per round",
            unit=unit,
        ),
    ]
    summary, n = best.summary(), len(data.x_train)
    return {
        "rows": rows,
        **summary,
        "ceiling_seconds_per_update": n * flops_per_sample(n) / (summary["ceiling_gflops"] * 1e9),
        "reference": rows[2]["system"],
    }


if __name__ == "__main__":
    from common import write

    result = main()
    print(write("full-batch", result.pop("rows"), result))
