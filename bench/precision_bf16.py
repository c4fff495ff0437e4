"""bf16 autocast vs fp32 on CPU: training throughput and test accuracy, same seed and settings.

    PYTHONPATH=src python bench/precision_bf16.py [--out bench/results/precision_bf16.json]

Digits (mlp:128,64, 20 epochs) and Fashion-MNIST (mlp:128,64 for 3 epochs; cnn for 1 epoch), mini-batch 100,
adam 1e-3, one thread. Prints samples/s (updates only, evaluation excluded) and the bf16/fp32 ratios.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cadence import load_data, train
from cadence.config import DataConfig

CASES = [
    ("digits", "mlp:128,64", 20),
    ("fashion-mnist", "mlp:128,64", 3),
    ("fashion-mnist", "cnn", 1),
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/results/precision_bf16.json"))
    args = p.parse_args()
    rows = []
    cache = {}
    for name, spec, epochs in CASES:
        data = cache.setdefault(name, load_data(DataConfig(name=name), seed=0))
        result = {"data": name, "model": spec, "epochs": epochs}
        for precision in ("fp32", "bf16"):
            run = train(
                spec, data, threads=args.threads, optimizer="adam", lr=1e-3, batch_size=100,
                max_epochs=epochs, precision=precision,
            )  # fmt: skip
            result[precision] = {
                "samples_per_s": round(run.samples_per_s, 1),
                "test_accuracy": round(run.test_metrics["test_accuracy"], 4),
                "test_loss": round(run.test_metrics["test_loss"], 4),
            }
        result["speed_ratio_bf16_over_fp32"] = round(
            result["bf16"]["samples_per_s"] / result["fp32"]["samples_per_s"], 2
        )
        rows.append(result)
        print(json.dumps(result), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": args.threads, "runs": rows}
    args.out.write_text(json.dumps(meta, indent=2) + "\n")
    print(
        "\n| data | model | epochs | fp32 samples/s | bf16 samples/s | bf16/fp32 | fp32 test acc | bf16 test acc |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['data']} | {r['model']} | {r['epochs']} | {r['fp32']['samples_per_s']} | "
            f"{r['bf16']['samples_per_s']} | {r['speed_ratio_bf16_over_fp32']} | "
            f"{r['fp32']['test_accuracy']} | {r['bf16']['test_accuracy']} |"
        )


if __name__ == "__main__":
    main()
