"""`device`: auto | cpu | cuda | cuda:N | mps, honoured: the model and the resident data go there, the run
records where it ran, and a device this machine lacks is refused before anything happens."""

from __future__ import annotations

import pytest
import torch

import cadence
from cadence.errors import ConfigError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_auto_without_a_gpu_runs_on_the_cpu(digits):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto takes it (see test_cuda_runs_on_the_gpu)")
    run = cadence.train("mlp:16", digits, strategy="mini-batch", max_updates=5, device="auto", threads=1)
    assert run.device == run.summary()["device"] == "cpu"
    assert all(p.device.type == "cpu" for p in run.model.parameters())


def test_auto_keeps_runs_the_compiled_kernel_trains_on_the_cpu(digits):
    # One sample per update: the CPU kernel is faster than any GPU, so auto never moves these runs.
    run = cadence.train("mlp:16", digits, strategy="online", max_updates=5, device="auto", threads=1)
    assert (run.device, run.engine) == ("cpu", "c-kernel")


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_a_device_this_machine_lacks_is_refused_before_training(digits, device):
    have = {"cuda": torch.cuda.device_count() >= 1, "cuda:1": torch.cuda.device_count() >= 2}
    if have.get(device, device == "mps" and torch.backends.mps.is_available()):
        pytest.skip(f"this machine has {device}")
    model = cadence.models.build_model(cadence.RunConfig().model, digits.input_shape, digits.n_outputs)
    with pytest.raises(ConfigError, match=rf"device = '{device}', but .*Fix: set device to"):
        cadence.train(model, digits, device=device, max_updates=5)
    assert all(p.device.type == "cpu" for p in model.parameters())


@needs_cuda
@pytest.mark.parametrize("strategy", ["online", "mini-batch", "full-batch"])
def test_cuda_runs_on_the_gpu_and_learns_as_on_the_cpu(digits, strategy):
    settings = dict(strategy=strategy, optimizer="adam", lr=0.01, max_epochs=2 if strategy != "full-batch" else 40)
    gpu = cadence.train("mlp:32", digits, device="cuda", **settings)
    cpu = cadence.train("mlp:32", digits, device="cpu", engine="autograd", **settings)
    assert gpu.device.startswith("cuda") and gpu.engine == "autograd" and "CPU" in gpu.engine_fallback
    assert all(p.device.type == "cuda" for p in gpu.model.parameters())
    # Different kernels round differently; the runs learn the same (measured on CPU: 0.95-0.97).
    assert abs(gpu.test_metrics["test_accuracy"] - cpu.test_metrics["test_accuracy"]) < 0.03


@needs_cuda
def test_auto_takes_the_gpu_for_batches(digits):
    run = cadence.train("mlp:16", digits, strategy="mini-batch", max_updates=5, device="auto")
    assert run.device.startswith("cuda")
