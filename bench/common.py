"""What every benchmark shares: the model with its fixed initial weights, timing by median of repeats, the
machine's load, and writing bench/results/<claim>.json."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cadence.models.builders import MLP

RESULTS = Path(__file__).parent / "results"
WIDTHS = [128, 64]
REPEATS = int(os.environ.get("CADENCE_BENCH_REPEATS", "3"))
# FLOPs of one sample's update of the 784-128-64-10 MLP: forward 2*MACs, weight gradients 2*MACs, input
# gradients of the two upper layers, and 2 per parameter for the SGD update.
MACS = 784 * 128 + 128 * 64 + 64 * 10
PARAMS = MACS + 128 + 64 + 10
FLOPS_PER_SAMPLE = 2 * MACS + 2 * MACS + 2 * (128 * 64 + 64 * 10) + 2 * PARAMS


def initial_state() -> dict[str, torch.Tensor]:
    """The one set of initial weights every compared system starts from (seed 0, torch's default init)."""
    torch.manual_seed(0)
    return {k: v.clone() for k, v in MLP(784, WIDTHS, 10).state_dict().items()}


def fresh_model(state: dict[str, torch.Tensor]) -> MLP:
    model = MLP(784, WIDTHS, 10)
    model.load_state_dict(state)
    return model


def median_rate(measure: Callable[[], float], repeats: int = REPEATS) -> tuple[float, list[float]]:
    """Median of `repeats` calls of `measure` (each returns samples/s), and all of them."""
    rates = [measure() for _ in range(repeats)]
    return statistics.median(rates), rates


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "loadavg_1_5_15": list(os.getloadavg()),
    }


def write(claim: str, rows: list[dict], extra: dict | None = None) -> Path:
    """Write results/<claim>.json: the rows, the machine and its load before and after."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{claim}.json"
    payload = {"claim": claim, "repeats": REPEATS, "machine": machine(), "rows": rows, **(extra or {})}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


class threads:
    """Run a block with a given torch thread count, restoring the previous one."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.prev = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.prev)
