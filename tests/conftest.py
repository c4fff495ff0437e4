"""Shared fixtures: the bundled digits data set, split once per session."""

from __future__ import annotations

import pytest
import torch

from cadence.config import DataConfig
from cadence.data.datasets import from_arrays, load_data


@pytest.fixture(scope="session")
def digits():
    """Digits, standardized, seed 0: 1257 train / 180 val / 360 test."""
    return load_data(DataConfig(name="digits"), seed=0)


@pytest.fixture
def blobs():
    """A small, easy 3-class problem: 300 samples, 4 features."""
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    y = torch.arange(300) % 3
    x = centers[y] + 0.5 * torch.randn(300, 4, generator=gen)
    return from_arrays(x.numpy(), y.numpy(), config=DataConfig(val_fraction=0.2, test_fraction=0.2))


@pytest.fixture
def make_comparison():
    """Build a CompareResult from constructed runs where the right answer is known.

    `groups` maps a label ("mini-batch 64 + adam") to one dict per seed: test_accuracy, and optionally
    curve [(samples, seconds, val_accuracy), ...], stop_reason, lr, updates.
    """
    from cadence.comparison import CompareResult
    from cadence.config import build_config

    def make(groups: dict[str, list[dict]], goal: float | None = None) -> CompareResult:
        runs = []
        for g, (label, seeds) in enumerate(groups.items()):
            for seed, spec in enumerate(seeds):
                curve = spec.get("curve", [])
                history = [
                    {
                        "updates": n,
                        "samples": n,
                        "seconds": t,
                        "lr": spec.get("lr", 0.1),
                        "val_accuracy": a,
                        "val_loss": 1.0 - a,
                    }
                    for n, t, a in curve
                ]
                last = curve[-1] if curve else (0, 0.0, 0.0)
                runs.append(
                    {
                        "index": len(runs),
                        "group": g,
                        "label": label,
                        "strategy": label.split(" ")[0],
                        "batch_size": None,
                        "optimizer": label.split("+ ")[-1],
                        "schedule": "constant",
                        "lr": spec.get("lr", 0.1),
                        "seed": seed,
                        "stop_reason": spec.get("stop_reason", "budget"),
                        "test_accuracy": spec["test_accuracy"],
                        "test_loss": 1.0 - spec["test_accuracy"],
                        "updates": spec.get("updates", last[0]),
                        "samples_seen": last[0],
                        "seconds": last[1],
                        "samples_per_s": last[0] / last[1] if last[1] else 0.0,
                        "history": history,
                    }
                )
        n_seeds = max(len(s) for s in groups.values())
        meta = {
            "data": {
                "name": "constructed",
                "task": "classification",
                "n_classes": 10,
                "description": "constructed",
            },
            "budget": {"mode": "samples", "amount": 1000, "description": "equal samples (1,000 per run)"},
            "compare": {"seeds": list(range(n_seeds)), **({"goal": goal} if goal is not None else {})},
            "config": build_config().model_dump(mode="json"),
        }
        return CompareResult(runs, meta)

    return make


@pytest.fixture
def one_thread():
    """One torch thread for the test (bitwise comparisons, and no oversubscription on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server for the session (tests use their own stream names)."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def stream_name(request):
    """A stream name of this test's own."""
    return "t-" + request.node.name.replace("[", "-").replace("]", "")
