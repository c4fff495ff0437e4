"""Claim 6: data-parallel scaling: training samples/s of 1 process against 2 under torchrun (DDP), same global
batch, same run; scaling efficiency = rate(2) / (2 * rate(1)). On the GPU when one is present (it is printed).

Each measurement is one torchrun job (`--nproc-per-node 1` or 2, so both pay the same start-up, which is not
timed): 2 epochs of mini-batch 256 on synthetic 784-feature data (the 784-128-64-10 MLP of the other claims),
Adam, one thread per process, the autograd engine in both (a 1-process run on the CPU would otherwise take the
C kernel, another comparison: bench_minibatch.py). Rates are the run's training samples over its training
seconds (no evaluation, no start-up). Systems interleave 1 2 1 2 ...; medians of CADENCE_BENCH_REPEATS.

    .venv/bin/python bench/bench_ddp.py            # CADENCE_BENCH_REPEATS=5 for steadier medians
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from common import REPEATS, WIDTHS, write

N, FEATURES, CLASSES, BATCH, EPOCHS = 12_000, 784, 10, 256, 2


def worker(out: Path) -> None:
    """One process of a measured job: train, and rank 0 writes what it measured to `out`."""
    import cadence
    from cadence.data.datasets import from_arrays

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, FEATURES, generator=gen)
    y = (x[:, :CLASSES].argmax(1)).numpy()  # learnable labels: the class is the largest of the first 10 features
    data = from_arrays(x.numpy(), y)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    backend = "nccl" if device == "cuda" and torch.cuda.device_count() >= world else "gloo"
    run = cadence.train(
        f"mlp:{','.join(map(str, WIDTHS))}",
        data,
        strategy="mini-batch",
        batch_size=BATCH,
        optimizer="adam",
        lr=0.001,
        max_epochs=EPOCHS,
        eval_every=10**9,  # evaluation only at epoch ends; its time is not in train_seconds anyway
        seed=0,
        threads=1,
        device=device,
        engine="autograd",
        dist_backend=backend,
    )
    if run.rank == 0:
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        record = {
            "processes": run.processes,
            "samples": run.samples_seen,
            "train_seconds": run.train_seconds,
            "samples_per_s": run.samples_seen / run.train_seconds,
            "device": run.device,
            "device_name": name,
            "backend": backend if run.processes > 1 else None,
            "test_accuracy": run.test_metrics["test_accuracy"],
        }
        out.write_text(json.dumps(record))


def measure(nproc: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
        proc = subprocess.run(
            [*command, __file__, "--worker", str(out)], env=env, capture_output=True, text=True, timeout=900
        )
        if proc.returncode != 0:
            raise SystemExit(f"torchrun --nproc-per-node {nproc} failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def main() -> None:
    before = os.getloadavg()
    device = "cuda:0 " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (no GPU here)"
    print(f"device: {device}; load average before: {before[0]:.2f}; repeats: {REPEATS}", flush=True)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(REPEATS):
        for nproc in (1, 2):  # interleaved, so a change in the machine's load hits both
            result = measure(nproc)
            runs[nproc].append(result)
            print(
                f"  {nproc} process(es): {result['samples_per_s']:10,.0f} samples/s ({result['device']})",
                flush=True,
            )
    rate = {n: statistics.median(r["samples_per_s"] for r in rs) for n, rs in runs.items()}
    efficiency = rate[2] / (2 * rate[1])
    rows = [
        {
            "processes": n,
            "samples_per_s_median": rate[n],
            "samples_per_s": [r["samples_per_s"] for r in runs[n]],
            "test_accuracy": runs[n][-1]["test_accuracy"],
            "device": runs[n][-1]["device"],
            "device_name": runs[n][-1]["device_name"],
            "backend": runs[n][-1]["backend"],
        }
        for n in (1, 2)
    ]
    extra = {
        "setup": {"n": N, "features": FEATURES, "widths": WIDTHS, "batch": BATCH, "epochs": EPOCHS, "threads": 1},
        "speedup_2_over_1": rate[2] / rate[1],
        "scaling_efficiency": efficiency,
        "loadavg_before": list(before),
    }
    path = write("ddp", rows, extra)
    speedup = rate[2] / rate[1]
    print(
        f"1 process {rate[1]:,.0f} samples/s, 2 processes {rate[2]:,.0f} samples/s: speed-up {speedup:.2f}x, "
        f"scaling efficiency {efficiency:.0%} (device {device}; load average after: {os.getloadavg()[0]:.2f}) "
        f"-> {path}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]))
    else:
        main()
