"""Fashion-MNIST: the seed MLP (784-128-64-10), 10 epochs of mini-batch 100, one run per optimizer.

    PYTHONPATH=src python bench/optimizers_fashion.py [--epochs 10] [--out bench/results/optimizers_fashion.json]

Reads the gz IDX files with numpy (cadence.data.idx is the library's loader; this script only needs the four
arrays) and builds the Dataset with `from_arrays`: 54k train / 6k validation (seeded split) / 10k test.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np

from cadence import from_arrays, train
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


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--optimizers", default=",".join(LRS))
    p.add_argument("--out", type=Path, default=Path("bench/results/optimizers_fashion.json"))
    args = p.parse_args()

    d = args.data_dir
    x = read_idx(d / "train-images-idx3-ubyte.gz").reshape(60000, -1)
    y = read_idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64)
    xt = read_idx(d / "t10k-images-idx3-ubyte.gz").reshape(10000, -1)
    yt = read_idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    data = from_arrays(
        x, y, x_test=xt, y_test=yt, config=DataConfig(test_fraction=0.0), n_classes=10, name="fashion-mnist"
    )
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
