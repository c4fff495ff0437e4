"""Fashion-MNIST: the seed MLP (784-128-64-10), 10 epochs of mini-batch 100, one run per optimizer.

    PYTHONPATH=src python bench/optimizers_fashion.py [--epochs 10] [--out bench/results/optimizers_fashion.json]

Loads the data with the library (cadence.data.idx, standardize=auto: one mean/std over all pixels): 54k train /
6k validation (seeded split) / 10k test. Writes the JSON and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cadence import load_data, train
from cadence.config import DataConfig

# Step sizes: torch's defaults for the adaptive methods; plain SGD 0.1; momentum methods 0.01 with
# momentum 0.9 (the same effective step lr/(1-m) = 0.1 as plain SGD).
LRS = {
    "sgd": 0.1,
    "momentum": 0.01,
    "nesterov": 0.01,
    "adagrad": 0.01,
    "rmsprop": 0.001,
    "adam": 0.001,
    "adamw": 0.001,
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, default=None, help="default: found by cadence.data.idx")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--optimizers", default=",".join(LRS))
    p.add_argument("--out", type=Path, default=Path("bench/results/optimizers_fashion.json"))
    args = p.parse_args()

    data = load_data(DataConfig(name="fashion-mnist", data_dir=args.data_dir), seed=0)
    print(data.describe(), flush=True)

    rows = []
    for name in args.optimizers.split(","):
        t0 = time.perf_counter()
        run = train(
            None,
            data,
            {"model": {"spec": "mlp:128,64"}},
            strategy="mini-batch",
            batch_size=args.batch_size,
            optimizer=name,
            lr=LRS[name],
            max_epochs=args.epochs,
            threads=args.threads,
            seed=0,
        )
        row = {
            "optimizer": name,
            "lr": LRS[name],
            "final_train_loss": run.history[-1]["train_loss"],
            "val_accuracy": run.val_metrics["val_accuracy"],
            "test_loss": run.test_metrics["test_loss"],
            "test_accuracy": run.test_metrics["test_accuracy"],
            "train_seconds": round(run.train_seconds, 1),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "val_accuracy_per_epoch": [round(r["val_accuracy"], 4) for r in run.history],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"epochs": args.epochs, "batch_size": args.batch_size, "runs": rows}, indent=2))
    print("\n| optimizer | lr | train loss (last epoch) | val acc | test loss | test acc | train s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['optimizer']} | {r['lr']} | {r['final_train_loss']:.4f} | {r['val_accuracy']:.4f} | "
            f"{r['test_loss']:.4f} | {r['test_accuracy']:.4f} | {r['train_seconds']} |"
        )


if __name__ == "__main__":
    main()
