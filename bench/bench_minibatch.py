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
from cadence.engine import fast, train
from common import REPEATS, fresh_model, initial_state

LR, BATCH = 0.01, 100
QUICK = os.environ.get("CADENCE_BENCH_QUICK") == "1"


def cadence_runs(data, state, autograd: bool = False) -> tuple[list[float], float]:
    rates, acc = [], float("nan")
    engine_for = fast.engine_for
    if autograd:
        fast.engine_for = lambda *args: None
    try:
        for _ in range(REPEATS):
            run = train(
                fresh_model(state), data, strategy="mini-batch", batch_size=BATCH, lr=LR, max_epochs=1, seed=0
            )
            rates.append(run.samples_per_s)
            acc = run.test_metrics["test_accuracy"]
    finally:
        fast.engine_for = engine_for
    return rates, acc


def main() -> dict:
    images, labels, _, _ = fashion.load()
    data = fashion.cadence_dataset()
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    state = initial_state()
    n_threads = torch.get_num_threads()
    rows = []

    rates, acc = cadence_runs(data, state)
    rows.append(row("cadence mini-batch", rates, n_threads, acc, "fast engine (torch ops, fused SGD)"))
    rates, acc = cadence_runs(data, state, autograd=True)
    rows.append(row("cadence mini-batch, autograd path", rates, n_threads, acc, "fast engine off"))

    rates, model = [], None
    for _ in range(REPEATS):  # one epoch per repeat, from the same weights
        model = fresh_model(state)
        rates += ref.plain(model, x, y, batch_size=BATCH, n_samples=len(x), lr=LR, segments=1)
    rows.append(
        row("plain eager loop, preloaded", rates, n_threads, ref.accuracy(model, xt, yt), "one epoch per repeat")
    )

    model = fresh_model(state)
    n = 6000 if QUICK else len(x)
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
        rates = ref.lightning(fresh_model(state), x, y, batch_size=BATCH, lr=LR, epochs=REPEATS)
        rows.append(row("Lightning Trainer.fit", rates, n_threads, note="one epoch per repeat, set-up excluded"))
    except ImportError as err:
        rows.append({"system": "Lightning Trainer.fit", "samples_per_s": None, "note": f"not installed: {err}"})

    ceil, rate = ceiling.samples_per_s(BATCH, None)
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
