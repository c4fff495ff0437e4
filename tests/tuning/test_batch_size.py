"""Batch-size advice: the gradient noise scale against its closed form on linear regression with Gaussian
noise, the time-to-target model, and the advice on real data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cadence.errors import ConfigError
from cadence.tuning.batch_size import advise_batch_size, gradient_noise_scale, time_to_target


def linear_problem(d: int, sigma: float, delta2: float, n: int = 50_000):
    """y = x.w* + eps, x ~ N(0, I_d), eps ~ N(0, sigma^2); a bias-free linear model at w = w* + delta.

    Closed form of B_simple = tr(Sigma) / |G|^2 for the per-sample loss (x.w - y)^2, with delta = w - w*:
    the per-sample gradient is g = 2x(x.delta - eps), so G = E[g] = 2 E[x x^T] delta = 2 delta and
    |G|^2 = 4|delta|^2. E|g|^2 = 4 (E[|x|^2 (x.delta)^2] + sigma^2 E|x|^2), and for Gaussian x
    E[x_i^2 (x.delta)^2] = |delta|^2 + 2 delta_i^2 (E x^4 = 3), summing to (d + 2)|delta|^2; E|x|^2 = d.
    So tr(Sigma) = E|g|^2 - |G|^2 = 4 ((d + 1)|delta|^2 + d sigma^2) and
        B_simple = d + 1 + d sigma^2 / |delta|^2.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen)
    w_star = torch.randn(d, generator=gen)
    y = x @ w_star + sigma * torch.randn(n, generator=gen)
    delta = torch.randn(d, generator=gen)
    delta *= delta2**0.5 / delta.norm()
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_((w_star + delta).reshape(1, d))
    return model, x, y, d + 1 + d * sigma**2 / delta2


@pytest.mark.parametrize("d, sigma, delta2", [(8, 1.0, 0.5), (8, 2.0, 0.25), (16, 0.5, 1.0)])
def test_noise_scale_matches_the_closed_form_on_linear_regression(one_thread, d, sigma, delta2):
    model, x, y, closed = linear_problem(d, sigma, delta2)
    for seed in range(3):
        # Measured over seeds 0-19 (b_small 32, b_big 1024, 200 draws): 0.89x to 1.22x of the closed form.
        est = gradient_noise_scale(model, x, y, "regression", seed=seed)
        assert closed / 1.5 < est.b_simple < closed * 1.5, (seed, est.b_simple, closed)
    assert est.g2 == pytest.approx(4 * delta2, rel=0.25)  # |G|^2 = 4 |delta|^2


def test_noise_scale_grows_with_the_label_noise(one_thread):
    quiet = gradient_noise_scale(*linear_problem(8, 0.5, 0.5)[:3], "regression")
    noisy = gradient_noise_scale(*linear_problem(8, 3.0, 0.5)[:3], "regression")
    assert noisy.b_simple > 5 * quiet.b_simple  # closed forms: 13 and 153


def test_noise_scale_leaves_the_weights_and_rng_alone(one_thread):
    model, x, y, _ = linear_problem(4, 1.0, 1.0, n=2000)
    before = model.weight.detach().clone()
    rng = torch.get_rng_state()
    gradient_noise_scale(model, x, y, "regression", draws=5)
    assert torch.equal(model.weight, before) and model.weight.grad is None
    assert torch.equal(torch.get_rng_state(), rng)


def test_noise_scale_refuses_batches_it_cannot_draw():
    model, x, y, _ = linear_problem(4, 1.0, 1.0, n=500)
    with pytest.raises(ConfigError, match="b_small < b_big"):
        gradient_noise_scale(model, x, y, "regression", b_small=64, b_big=64)
    with pytest.raises(ConfigError, match="larger than the 500 training samples"):
        gradient_noise_scale(model, x, y, "regression", b_small=8, b_big=1024)


def test_time_to_target_follows_the_updates_samples_trade_off():
    # Equal seconds per update: time follows updates, S/S_min = 1 + B_crit/B, so the largest batch wins.
    flat = [{"batch_size": b, "seconds_per_update": 0.01} for b in (16, 64, 256)]
    rows = time_to_target(flat, critical=64)
    assert [r["updates_rel"] for r in rows] == pytest.approx([5 / 1.25, 2 / 1.25, 1.0])
    assert [r["samples_rel"] for r in rows] == pytest.approx([1.0, 2 / 1.25, 5 / 1.25])
    assert min(rows, key=lambda r: r["time_rel"])["batch_size"] == 256
    # Seconds per update proportional to the batch (no parallel speed-up): time follows samples instead.
    linear = [{"batch_size": b, "seconds_per_update": b * 1e-4} for b in (16, 64, 256)]
    assert min(time_to_target(linear, critical=64), key=lambda r: r["time_rel"])["batch_size"] == 16


def test_advice_on_digits_measures_every_size_and_leaves_the_model_alone(digits, one_thread):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    advice = advise_batch_size(
        model, digits, sizes=[16, 64, 256], warmup_updates=30, draws=40, timing_updates=3, optimizer="sgd", lr=0.1
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [r["batch_size"] for r in advice.rows] == [16, 64, 256]
    assert all(r["samples_per_s"] > 0 for r in advice.rows)
    assert all(r["peak_memory_mib"] is None or r["peak_memory_mib"] > 1 for r in advice.rows)
    assert advice.best in (16, 64, 256)
    assert 1 < advice.critical < 10_000
    assert f"Use batch size {advice.best}" in advice.advice
    assert min(r["time_rel"] for r in advice.rows) == 1.0


def test_advice_refuses_sizes_beyond_the_data(digits):
    with pytest.raises(ConfigError, match=r"batch sizes must be in \[1, 1257\]"):
        advise_batch_size("mlp:16", digits, sizes=[16, 4096])
