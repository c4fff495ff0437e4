"""What one update does beyond forward/backward/step: gradient accumulation (k micro-batches equal one batch of
k times the size), clipping by norm and by value, bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cadence
from cadence.config import DataConfig, StrategyConfig, build_config
from cadence.engine.options import step_options
from cadence.engine.step import step
from cadence.engine.strategies import Update, updates
from cadence.errors import ConfigError


@pytest.fixture(scope="module")
def small_digits():
    return cadence.load_data(DataConfig(limit=600))


def test_accumulated_update_holds_k_micro_batches_of_one_k_times_larger_batch():
    acc = updates(StrategyConfig(batch_size=8, accumulate=4), 100, seed=3)
    big = updates(StrategyConfig(batch_size=32), 100, seed=3)
    for _ in range(8):  # two epochs: 32, 32, 32, 4 samples each
        a, b = next(acc), next(big)
        assert torch.equal(torch.cat(a.chunks), torch.cat(b.chunks))
        assert (a.n_samples, a.epoch, a.position, a.epoch_end) == (b.n_samples, b.epoch, b.position, b.epoch_end)
        assert [len(c) for c in a.chunks] == ([8, 8, 8, 8] if a.n_samples == 32 else [4])


def test_training_with_k_accumulated_micro_batches_equals_training_with_batches_k_times_larger(small_digits):
    common = dict(threads=1, optimizer="momentum", lr=0.05, max_epochs=2, seed=1)
    accumulated = cadence.train(None, small_digits, batch_size=10, accumulate=4, **common)
    large = cadence.train(None, small_digits, batch_size=40, **common)
    assert accumulated.updates == large.updates
    for a, b in zip(accumulated.model.parameters(), large.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_accumulation_with_full_batch_is_a_config_error():
    with pytest.raises(ConfigError, match="accumulate=3 has no effect with full-batch"):
        cadence.build_config({"strategy": {"name": "full-batch", "accumulate": 3}})


def gradient_used(small_digits, overrides: dict, model: nn.Module | None = None) -> list[torch.Tensor]:
    """The gradient one update applied (SGD with lr=1 subtracts exactly the gradient)."""
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    config = build_config().with_overrides(overrides)
    before = [p.detach().clone() for p in model.parameters()]
    n = 200
    update = Update(torch.arange(n).split(64), n, 0, n, False)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = small_digits.x_train * 10, small_digits.y_train  # scaled inputs: a large gradient
    step(model, opt, x, y, update, small_digits.task, step_options(config, model, small_digits))
    return [b - p.detach() for b, p in zip(before, model.parameters(), strict=True)]


def global_norm(grads: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((g**2).sum() for g in grads)))


def test_clip_norm_rescales_the_gradient_to_the_given_global_norm(small_digits):
    raw = gradient_used(small_digits, {})
    clipped = gradient_used(small_digits, {"optimizer.clip_norm": 0.5})
    assert global_norm(raw) > 1.0
    assert global_norm(clipped) == pytest.approx(0.5, rel=1e-4)
    scale = 0.5 / global_norm(raw)
    for r, c in zip(raw, clipped, strict=True):
        torch.testing.assert_close(c, r * scale, rtol=1e-4, atol=1e-7)  # same direction


def test_clip_value_caps_each_entry_and_leaves_small_ones(small_digits):
    raw = gradient_used(small_digits, {})
    clipped = gradient_used(small_digits, {"optimizer.clip_value": 0.01})
    for r, c in zip(raw, clipped, strict=True):
        torch.testing.assert_close(c, r.clamp(-0.01, 0.01), rtol=1e-5, atol=1e-7)
    assert any((r.abs() > 0.01).any() for r in raw)


def test_bf16_autocast_runs_the_forward_in_bfloat16_and_keeps_fp32_weights(small_digits):
    fp32 = gradient_used(small_digits, {})
    bf16 = gradient_used(small_digits, {"precision": "bf16"})
    assert all(g.dtype == torch.float32 for g in bf16)
    differs = max(float((a - b).abs().max()) for a, b in zip(fp32, bf16, strict=True))
    assert 0 < differs < 0.05 * max(float(g.abs().max()) for g in fp32)


def test_bf16_training_reaches_fp32_accuracy_on_digits(small_digits):
    # Measured on 600 digits, mlp:128,64, adam 1e-3, 10 epochs (seed 0): fp32 0.908, bf16 0.908.
    common = dict(threads=1, optimizer="adam", lr=1e-3, max_epochs=10)
    fp32 = cadence.train(None, small_digits, **common)
    bf16 = cadence.train(None, small_digits, precision="bf16", **common)
    assert bf16.test_metrics["test_accuracy"] >= fp32.test_metrics["test_accuracy"] - 0.03
