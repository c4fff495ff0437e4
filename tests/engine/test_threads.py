"""The thread policy: one torch thread for small products or a busy machine, more only for large products on
idle cores, `threads` always wins, and the caller's thread count comes back after the run."""

from __future__ import annotations

import pytest
import torch

import cadence
from cadence.config import DataConfig
from cadence.engine import Callback, options


@pytest.fixture(scope="module")
def wide():
    """Inputs wide enough that a chunk's forward pass passes PARALLEL_FLOPS: 400 x 2048 features."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2048, generator=gen)
    return cadence.from_arrays(x.numpy(), (torch.arange(400) % 3).numpy(), config=DataConfig(standardize="none"))


class Threads(Callback):
    def on_run_start(self, state):
        self.seen = torch.get_num_threads()


def _threads(data, **settings) -> int:
    seen = Threads()
    run = cadence.train("mlp:512", data, callbacks=[seen], max_updates=2, **settings)
    assert run.threads == seen.seen == run.summary()["threads"]
    return run.threads


@pytest.fixture
def two_cores(monkeypatch):
    """A process allowed two torch threads, with the idle cores under the test's control."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield lambda n: monkeypatch.setattr(options, "idle_cores", lambda: n)
    torch.set_num_threads(before)


def test_small_products_run_on_one_thread_and_the_count_comes_back(digits, two_cores):
    two_cores(2)
    assert _threads(digits, strategy="mini-batch") == 1  # digits' default run: 64 x 64 -> 512 products
    assert torch.get_num_threads() == 2


def test_large_products_use_the_idle_cores_and_a_busy_machine_gets_one_thread(wide, two_cores):
    two_cores(2)
    assert _threads(wide, strategy="full-batch") == 2
    two_cores(0)  # every core busy with other work
    assert _threads(wide, strategy="full-batch") == 1


def test_one_sample_updates_on_the_kernel_use_one_thread(digits, two_cores):
    two_cores(2)
    assert _threads(digits, strategy="online") == 1


def test_threads_wins_over_the_policy(digits, two_cores):
    two_cores(0)
    assert _threads(digits, strategy="mini-batch", threads=2) == 2


def test_the_forward_flops_count_convolutions_per_output_position():
    model = cadence.models.build_model(
        cadence.RunConfig().model.model_copy(update={"spec": "cnn"}), (1, 28, 28), 10
    )
    params = sum(p.numel() for p in model.parameters())
    assert options.forward_flops(model, torch.zeros(1, 1, 28, 28)) > 10 * 2 * params
    mlp = cadence.models.build_model(cadence.RunConfig().model, (64,), 10)  # 64-128-64-10: each weight once
    assert options.forward_flops(mlp, torch.zeros(1, 64)) == 2 * sum(p.numel() for p in mlp.parameters())
