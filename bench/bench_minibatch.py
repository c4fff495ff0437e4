"""Claim 2: mini-batch of 100 on Fashion-MNIST, MLP 784-128-64-10, SGD lr=0.01, torch's default threads.

Cadence's mini-batch strategy against the tutorial DataLoader loop, the plain eager loop over preloaded
tensors and Lightning's Trainer, all from the same initial weights; plus the test accuracy after one epoch.
"""

from __future__ import annotations

import os

import torch

import ceiling
import fashion
import references as ref
from bench_online import row
from cadence.engine import train
from common import REPEATS, fresh_model, initial_state, threads

LR, BATCH = 0.01, 100
QUICK = os.environ.get("CADENCE_BENCH_QUICK") == "1"
# Threads for every system in this claim (default: torch's). On a busy shared machine a second thread mostly
# waits, so CADENCE_BENCH_THREADS=1 gives steadier ratios.
THREADS = int(os.environ.get("CADENCE_BENCH_THREADS", "0")) or None


def cadence_run(data, state, n_threads: int | None, autograd: bool = False):
    """One epoch of Cadence's mini-batch strategy: (samples/s over training updates, test accuracy)."""
    run = train(
        fresh_model(state),
        data,
        strategy="mini-batch",
        batch_size=BATCH,
        lr=LR,
        max_epochs=1,
        seed=0,
        threads=n_threads,
        engine="autograd" if autograd else "auto",  # autograd: the general path, for comparison
    )
    return run.samples_per_s, run.test_metrics["test_accuracy"], run.threads


def main() -> dict:
    images, labels, _, _ = fashion.load()
    data = fashion.cadence_dataset()
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    state = initial_state()
    n_threads = THREADS or torch.get_num_threads()
    rates: dict[str, list[float]] = {"fast": [], "autograd": [], "plain": []}
    acc: dict[str, float] = {}
    used: dict[str, int] = {}  # threads each Cadence run chose (the default chooses from the work and the load)
    # Round-robin repeats, one epoch each: a burst of load on a shared machine hits all three alike.
    with threads(THREADS):
        for _ in range(REPEATS):
            for name in ("fast", "autograd"):
                rate, acc[name], used[name] = cadence_run(data, state, THREADS, autograd=name == "autograd")
                rates[name].append(rate)
            model = fresh_model(state)
            rates["plain"] += ref.plain(model, x, y, batch_size=BATCH, n_samples=len(x), lr=LR, segments=1)
            acc["plain"] = ref.accuracy(model, xt, yt)
    rows = [
        row("cadence mini-batch", rates["fast"], used["fast"], acc["fast"], "batch engine (torch ops, fused SGD)"),
        row("cadence mini-batch, autograd path", rates["autograd"], used["autograd"], acc["autograd"], "autograd"),
        row("plain eager loop, preloaded", rates["plain"], n_threads, acc["plain"], "one epoch per repeat"),
    ]

    model = fresh_model(state)
    n = 6000 if QUICK else len(x)
    with threads(THREADS):
        rates = ref.tutorial(model, images, labels, batch_size=BATCH, n_samples=n, lr=LR)
    rows.append(
        row(
            "tutorial DataLoader loop",
            rates,
            n_threads,
            ref.accuracy(model, xt, yt) if n >= len(x) else None,
            f"{n} samples in 3 timed parts, 2 workers",
        )
    )
    try:
        with threads(THREADS):
            rates = ref.lightning(fresh_model(state), x, y, batch_size=BATCH, lr=LR, epochs=REPEATS)
        rows.append(row("Lightning Trainer.fit", rates, n_threads, note="one epoch per repeat, set-up excluded"))
    except ImportError as err:
        rows.append({"system": "Lightning Trainer.fit", "samples_per_s": None, "note": f"not installed: {err}"})

    ceil, rate = ceiling.samples_per_s(BATCH, THREADS)
    return {
        "rows": rows,
        "ceiling_samples_per_s": ceil,
        "ceiling_gflops": rate,
        "reference": "plain eager loop, preloaded",
    }


if __name__ == "__main__":
    from common import write

    result = main()
    print(write("mini-batch", result.pop("rows"), result))
