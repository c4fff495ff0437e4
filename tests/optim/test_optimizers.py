"""Each optimizer against a NumPy reference written from its textbook rule, in float64, over N steps of a
fixed least-squares problem: parameter trajectories agree to 1e-6 relative. Where torch's form differs
(Nesterov's reparametrization, eps outside the square root) the tests show where the forms agree and
where they part, as the README states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cadence.config import OptimizerConfig
from cadence.optim import build_optimizer

STEPS = 60
RTOL = 1e-6

_rng = np.random.default_rng(0)
A = _rng.normal(size=(40, 5))
B = A @ np.array([1.0, -2.0, 0.5, 3.0, -1.0]) + 0.3 * _rng.normal(size=40)
THETA0 = _rng.normal(size=5)


def grad(theta: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Gradient of f(theta) = scale * ||A theta - b||^2 / (2n)."""
    return scale * A.T @ (A @ theta - B) / len(B)


def torch_trajectory(config: OptimizerConfig, scale: float = 1.0, lrs: list[float] | None = None) -> np.ndarray:
    """Parameters after each of STEPS steps of Cadence's optimizer on the same problem, in float64."""
    theta = torch.nn.Parameter(torch.tensor(THETA0))
    a, b = torch.tensor(A), torch.tensor(B)
    opt = build_optimizer([theta], config)
    out = [THETA0.copy()]
    for t in range(STEPS):
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[t]
        opt.zero_grad()
        (scale * (a @ theta - b).pow(2).sum() / (2 * len(B))).backward()
        opt.step()
        out.append(theta.detach().numpy().copy())
    return np.array(out)


def reference_trajectory(rule, scale: float = 1.0) -> np.ndarray:
    theta, state, out = THETA0.copy(), {}, [THETA0.copy()]
    for t in range(1, STEPS + 1):
        theta = rule(theta, state, t, lambda th: grad(th, scale))
        out.append(theta.copy())
    return np.array(out)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("name", ["gd", "sgd"])
def test_gd_and_sgd_take_theta_minus_lr_times_gradient(name):
    def rule(theta, s, t, g):
        return theta - 0.05 * g(theta)

    assert_same(torch_trajectory(OptimizerConfig(name=name, lr=0.05)), reference_trajectory(rule))


def momentum_rule(lr: float, gamma: float, lrs: list[float] | None = None):
    def rule(theta, s, t, g):  # v <- gamma*v + eta*g; theta <- theta - v
        eta = lr if lrs is None else lrs[t - 1]
        s["v"] = gamma * s.get("v", 0.0) + eta * g(theta)
        return theta - s["v"]

    return rule


def test_momentum_equals_textbook_velocity_rule_under_a_constant_lr():
    # torch keeps b <- m*b + g and steps lr*b; with a constant lr, v = lr*b is the textbook velocity.
    got = torch_trajectory(OptimizerConfig(name="momentum", lr=0.05, momentum=0.9))
    assert_same(got, reference_trajectory(momentum_rule(0.05, 0.9)))


def test_momentum_forms_part_when_the_lr_changes_mid_run():
    # The README's stated difference: torch rescales the whole velocity at once when lr changes; the
    # textbook velocity keeps the old lr on past gradients.
    lrs = [0.05] * 20 + [0.005] * (STEPS - 20)
    got = torch_trajectory(OptimizerConfig(name="momentum", lr=0.05, momentum=0.9), lrs=lrs)
    want = reference_trajectory(momentum_rule(0.05, 0.9, lrs))
    np.testing.assert_allclose(got[:21], want[:21], rtol=RTOL)
    assert np.max(np.abs(got[21:] - want[21:])) > 1e-3


def test_nesterov_equals_textbook_after_the_change_of_variables():
    # Textbook (Sutskever et al. 2013): v <- gamma*v + eta*grad(theta - gamma*v); theta <- theta - v.
    # torch steps the look-ahead point phi = theta - gamma*v: same iterates after that change of variables.
    lr, gamma = 0.05, 0.9

    def rule(theta, s, t, g):
        v = s.get("v", np.zeros_like(theta))
        s["v"] = gamma * v + lr * g(theta - gamma * v)
        return theta - s["v"]

    theta, state, phis = THETA0.copy(), {}, [THETA0.copy()]
    for t in range(1, STEPS + 1):
        theta = rule(theta, state, t, grad)
        phis.append(theta - gamma * state["v"])
    got = torch_trajectory(OptimizerConfig(name="nesterov", lr=lr, momentum=gamma))
    assert_same(got, np.array(phis))


def adaptive_rule(lr: float, eps: float, eps_inside: bool, rho: float | None):
    """Adagrad (rho None): G <- G + g^2; RMSprop: G <- rho*G + (1-rho)*g^2; theta <- theta - eta*g/denominator."""

    def rule(theta, s, t, g):
        gt = g(theta)
        G = s.get("G", 0.0)
        s["G"] = G + gt * gt if rho is None else rho * G + (1 - rho) * gt * gt
        denom = np.sqrt(s["G"] + eps) if eps_inside else np.sqrt(s["G"]) + eps
        return theta - lr * gt / denom

    return rule


ADAPTIVE = [
    ("adagrad", OptimizerConfig(name="adagrad", lr=0.1), None),
    ("rmsprop", OptimizerConfig(name="rmsprop", lr=0.01, alpha=0.9), 0.9),
]


@pytest.mark.parametrize(("name", "config", "rho"), ADAPTIVE, ids=[a[0] for a in ADAPTIVE])
def test_adaptive_rule_with_eps_outside_the_root_is_torchs_form(name, config, rho):
    got = torch_trajectory(config)
    assert_same(got, reference_trajectory(adaptive_rule(config.lr, config.eps, False, rho)))


@pytest.mark.parametrize(("name", "config", "rho"), ADAPTIVE, ids=[a[0] for a in ADAPTIVE])
def test_adaptive_textbook_rule_with_eps_inside_agrees_while_eps_is_negligible(name, config, rho):
    # sqrt(G + eps) and sqrt(G) + eps differ by O(eps / sqrt(G)): below 1e-6 of the parameter vector when
    # gradients are O(1) (measured per step on the vector: a coordinate crossing zero has no relative scale).
    got = torch_trajectory(config)
    want = reference_trajectory(adaptive_rule(config.lr, config.eps, True, rho))
    assert np.all(np.linalg.norm(got - want, axis=1) <= RTOL * np.linalg.norm(want, axis=1))


@pytest.mark.parametrize(("name", "config", "rho"), ADAPTIVE, ids=[a[0] for a in ADAPTIVE])
def test_adaptive_eps_placement_matters_when_gradients_are_as_small_as_eps(name, config, rho):
    # The README's stated difference: with gradients ~1e-8 the two denominators differ by a large factor.
    scale = 1e-8
    got = torch_trajectory(config, scale=scale)
    inside = reference_trajectory(adaptive_rule(config.lr, config.eps, True, rho), scale=scale)
    outside = reference_trajectory(adaptive_rule(config.lr, config.eps, False, rho), scale=scale)
    assert_same(got, outside)
    assert np.max(np.abs(got - inside)) > 1e-3


def adam_rule(lr: float, b1: float, b2: float, eps: float, decoupled_wd: float = 0.0):
    def rule(theta, s, t, g):
        gt = g(theta)
        theta = theta * (1 - lr * decoupled_wd)  # AdamW: decay first, scaled by lr (torch's form)
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * gt
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * gt * gt
        m_hat = s["m"] / (1 - b1**t)
        v_hat = s["v"] / (1 - b2**t)
        return theta - lr * m_hat / (np.sqrt(v_hat) + eps)

    return rule


def test_adam_follows_the_bias_corrected_moment_rule():
    config = OptimizerConfig(name="adam", lr=0.05, betas=(0.8, 0.95))
    assert_same(torch_trajectory(config), reference_trajectory(adam_rule(0.05, 0.8, 0.95, 1e-8)))


def test_adamw_decays_weights_decoupled_from_the_gradient():
    config = OptimizerConfig(name="adamw", lr=0.05, weight_decay=0.1)
    got = torch_trajectory(config)
    assert_same(got, reference_trajectory(adam_rule(0.05, 0.9, 0.999, 1e-8, decoupled_wd=0.1)))
    # and it is not Adam with the same coefficient as coupled L2
    coupled = torch_trajectory(OptimizerConfig(name="adam", lr=0.05, weight_decay=0.1))
    assert np.max(np.abs(got - coupled)) > 1e-3


def test_adamw_defaults_to_weight_decay_0_01():
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], OptimizerConfig(name="adamw"))
    assert opt.param_groups[0]["weight_decay"] == 0.01
