"""Claim 2: mini-batch of 100 on Fashion-MNIST, MLP 784-128-64-10, SGD lr=0.01, torch's default threads.

Cadence's mini-batch strategy against the tutorial DataLoader loop, the plain eager loop over preloaded
tensors and Lightning's Trainer, all from the same initial weights, interleaved round by round (one epoch
each, the tutorial loop a slice); plus the test accuracy after one epoch.
"""

from __future__ import annotations

import importlib.util
import os

import torch

import ceiling
import fashion
import references as ref
from bench_online import row
from cadence.engine import train
from common import RUN, fresh_model, initial_state, interleaved, threads, threads_seen

LR, BATCH = 0.01, 100
QUICK = os.environ.get("CADENCE_BENCH_QUICK") == "1"
# Threads for every system in this claim (default: torch's). On a busy shared machine a second thread mostly
# waits, so CADENCE_BENCH_THREADS=1 gives steadier ratios.
THREADS = int(os.environ.get("CADENCE_BENCH_THREADS", "0")) or None


def cadence_run(data, state, n_threads: int | None, autograd: bool = False):
    """One epoch of Cadence's mini-batch strategy: (samples/s over training updates, test accuracy, threads)."""
    run = train(
        fresh_model(state),
        data,
        strategy="mini-batch",
        batch_size=BATCH,
        optimizer="sgd",
        lr=LR,
        max_epochs=1,
        seed=0,
        threads=n_threads,
        engine="autograd" if autograd else "auto",  # autograd: the general path, for comparison
        **RUN,
    )
    return run.samples_per_s, run.test_metrics["test_accuracy"], run.threads


def main() -> dict:
    images, labels, _, _ = fashion.load()
    data = fashion.cadence_dataset()
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    state = initial_state()
    n_threads = THREADS or torch.get_num_threads()
    acc: dict[str, float] = {}
    used: dict[str, list[int]] = {}  # threads each Cadence round chose (the default: from the work and the load)
    best = ceiling.Best(BATCH, THREADS)
    n_tutorial = 6000 if QUICK else 20000

    def cadence(name: str):
        def measure(_r: int) -> float:
            rate, acc[name], n = cadence_run(data, state, THREADS, autograd=name == "autograd")
            used.setdefault(name, []).append(n)
            return rate

        return measure

    def plain(_r: int) -> float:
        model = fresh_model(state)
        rate = ref.plain(model, x, y, batch_size=BATCH, n_samples=len(x), lr=LR, segments=1)[0]
        acc["plain"] = ref.accuracy(model, xt, yt)
        return rate

    def tutorial(_r: int) -> float:
        return ref.tutorial(fresh_model(state), images, labels, BATCH, n_tutorial, LR, segments=1)[0]

    def lightning(_r: int) -> float:
        return ref.lightning(fresh_model(state), x, y, batch_size=BATCH, lr=LR, epochs=1)[0]

    systems = {
        "fast": cadence("fast"),
        "autograd": cadence("autograd"),
        "plain": plain,
        "tutorial": tutorial,
        "ceiling": best.measure,
    }
    if importlib.util.find_spec("lightning") is not None:
        systems["lightning"] = lightning
        lightning_note = "one epoch per round, set-up excluded"
    else:
        lightning_note = "not installed (make bench installs it)"
    with threads(THREADS):
        measured = interleaved(systems)
    rows = [
        row(
            "cadence mini-batch",
            measured["fast"],
            threads_seen(used["fast"]),
            acc["fast"],
            "batch engine, one epoch per round",
        ),
        row(
            "cadence mini-batch, autograd path",
            measured["autograd"],
            threads_seen(used["autograd"]),
            acc["autograd"],
            "autograd",
        ),
        row("plain eager loop, preloaded", measured["plain"], n_threads, acc["plain"], "one epoch per round"),
        row(
            "tutorial DataLoader loop",
            measured["tutorial"],
            n_threads,
            note=f"{n_tutorial} samples per round, 2 workers",
        ),
    ]
    if "lightning" in measured:
        rows.append(row("Lightning Trainer.fit", measured["lightning"], n_threads, note=lightning_note))
    else:
        rows.append({"system": "Lightning Trainer.fit", "samples_per_s": None, "note": lightning_note})
    return {"rows": rows, **best.summary(), "reference": "plain eager loop, preloaded"}


if __name__ == "__main__":
    from common import write

    result = main()
    print(write("mini-batch", result.pop("rows"), result))
