"""Claim 1: online (one sample per update) on Fashion-MNIST, MLP 784-128-64-10, SGD lr=0.001.

Cadence's online strategy against the tutorial DataLoader loop, deep-river's learn_one and the plain eager
loop over preloaded tensors, all from the same initial weights; plus the test accuracy after one epoch.
"""

from __future__ import annotations

import os
import statistics

import ceiling
import fashion
import references as ref
from cadence.engine import train
from cadence.engine.fast import kernel
from common import REPEATS, fresh_model, initial_state, threads, write

LR = 0.001
QUICK = os.environ.get("CADENCE_BENCH_QUICK") == "1"  # smaller slices, for trying the suite out


def cadence_runs(data, state, autograd: bool = False, max_samples: int | None = None) -> tuple[list[float], float]:
    """samples/s of REPEATS runs (Run.samples_per_s: training updates only) and the last run's accuracy."""
    rates, acc = [], float("nan")
    for _ in range(REPEATS):
        run = train(
            fresh_model(state),
            data,
            strategy="online",
            optimizer="sgd",
            lr=LR,
            max_epochs=1,
            max_samples=max_samples,
            seed=0,
            engine="autograd" if autograd else "auto",  # autograd: the general path, for comparison
        )
        rates.append(run.samples_per_s)
        acc = run.test_metrics["test_accuracy"]
    return rates, acc


def row(system: str, rates: list[float], n_threads, accuracy=None, note: str = "") -> dict:
    return {
        "system": system,
        "samples_per_s": statistics.median(rates),
        "rates": rates,
        "threads": n_threads,
        "test_accuracy": accuracy,
        "note": note,
    }


def main() -> dict:
    images, labels, test_images, test_labels = fashion.load()
    data = fashion.cadence_dataset()
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    state = initial_state()
    epoch = 6000 if QUICK else len(x)
    rows = []

    rates, acc = cadence_runs(data, state, max_samples=epoch if QUICK else None)
    rows.append(
        row(
            "cadence online",
            rates,
            1,
            acc,
            "c-kernel engine" if kernel() else "batch engine (no compiled kernel)",
        )
    )
    rates, _ = cadence_runs(data, state, autograd=True, max_samples=3000 if QUICK else 10000)
    rows.append(row("cadence online, autograd path", rates, 1, note="fast engine off"))

    # Every system on one thread: the fastest setting at batch 1 for each of them (a second thread only adds
    # hand-offs), so no reference is slowed by a setting its users might not pick.
    with threads(1):
        model = fresh_model(state)
        rates = ref.plain(model, x, y, batch_size=1, n_samples=epoch, lr=LR)
        rows.append(
            row("plain eager loop, preloaded", rates, 1, ref.accuracy(model, xt, yt), "one epoch in 3 timed parts")
        )
        model = fresh_model(state)
        tut_samples = 3000 if QUICK else int(os.environ.get("CADENCE_BENCH_TUTORIAL_SAMPLES", len(x)))
        rates = ref.tutorial(model, images, labels, batch_size=1, n_samples=tut_samples, lr=LR)
        full = tut_samples >= len(x)
        note = f"{tut_samples} samples in 3 timed parts, 2 workers"
        rows.append(row("tutorial DataLoader loop", rates, 1, ref.accuracy(model, xt, yt) if full else None, note))
        try:
            n = 1500 if QUICK else 6000
            rates = ref.deep_river(fresh_model(state), fashion.normalized(images), labels, n, LR)
            rows.append(row("deep-river learn_one", rates, 1, note="learn_one timed alone"))
        except ImportError as err:
            rows.append({"system": "deep-river learn_one", "samples_per_s": None, "note": f"not installed: {err}"})

    # One epoch's accuracy depends on the sample order by about a point: Cadence over several orders, so the
    # tutorial's single order (its DataLoader's) can be judged against that spread.
    seeds = range(1, 2 if QUICK else 6)
    by_seed = [
        train(
            fresh_model(state), data, strategy="online", lr=LR, max_epochs=1, max_samples=epoch, seed=s
        ).test_metrics["test_accuracy"]
        for s in seeds
    ]
    ceil, rate = ceiling.samples_per_s(1, 1)
    return {
        "rows": rows,
        "cadence_accuracy_by_seed": dict(zip([0, *seeds], [rows[0]["test_accuracy"], *by_seed], strict=True)),
        "ceiling_samples_per_s": ceil,
        "ceiling_gflops": rate,
        "reference": "plain eager loop, preloaded",
    }


if __name__ == "__main__":
    result = main()
    print(write("online", result.pop("rows"), result))
