"""What every benchmark shares: the model with its fixed initial weights, interleaved repeats summarized by
median and range, the machine's load, and writing bench/results/<claim>.json."""

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
REPEATS = max(1, int(os.environ.get("CADENCE_BENCH_REPEATS", "5")))
# Every train() call of the benches: the run as the claim states it, not the library's defaults that learn
# (early stopping on a validation split the benches' data do not hold out).
RUN = dict(early_stopping_metric=None)
# FLOPs of the 784-128-64-10 MLP's updates: per sample, forward 2*MACs, weight gradients 2*MACs and the input
# gradients of the two upper layers; per update, 2 per parameter for the SGD step (once for all its samples).
MACS = 784 * 128 + 128 * 64 + 64 * 10
PARAMS = MACS + 128 + 64 + 10
FLOPS_PER_SAMPLE = 2 * MACS + 2 * MACS + 2 * (128 * 64 + 64 * 10)
FLOPS_PER_STEP = 2 * PARAMS


def flops_per_sample(batch: int) -> float:
    """FLOPs per trained sample at `batch` samples per update (the step's share included)."""
    return FLOPS_PER_SAMPLE + FLOPS_PER_STEP / batch


def initial_state() -> dict[str, torch.Tensor]:
    """The one set of initial weights every compared system starts from (seed 0, torch's default init)."""
    torch.manual_seed(0)
    return {k: v.clone() for k, v in MLP(784, WIDTHS, 10).state_dict().items()}


def fresh_model(state: dict[str, torch.Tensor]) -> MLP:
    model = MLP(784, WIDTHS, 10)
    model.load_state_dict(state)
    return model


def interleaved(systems: dict[str, Callable[[int], float]], repeats: int = REPEATS) -> dict[str, list[float]]:
    """Each system's measurements over `repeats` rounds; every round measures every system once (A B C,
    B C A, ...: the order turns each round), so a burst of load on a shared machine hits them all alike.
    `measure(round)` returns one figure (samples/s, or seconds per update)."""
    names = list(systems)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            out[name].append(systems[name](r))
    return out


def spread(values: list[float]) -> dict:
    """Median, min and max of a list of figures."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratios(ours: list[float], theirs: list[float], higher_is_better: bool = True) -> dict | None:
    """Speed-up of ours over theirs, round by round (each pair measured in the same round), as a spread."""
    if len(ours) != len(theirs) or not ours:
        return None
    per_round = [a / b if higher_is_better else b / a for a, b in zip(ours, theirs, strict=True)]
    return {**spread(per_round), "by_round": per_round}


def threads_seen(rounds: list[int]) -> int | str:
    """The threads a system ran on: the count when every round used the same, else every round's
    ("2,2,1,1,2": the default thread policy chose differently as the load changed)."""
    return rounds[0] if len(set(rounds)) == 1 else ",".join(map(str, rounds))


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
