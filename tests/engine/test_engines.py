"""Every engine behind the one interface: an update whose loss is finite but whose gradient is not is never
applied, on every engine, strategy and optimizer (issue 9's case: weights, optimizer state and schedule
exactly as they were before it), and the schedule steps once per applied update."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cadence import StopReason, train
from cadence.callbacks import Checkpointing
from cadence.config import ModelConfig
from cadence.data.datasets import Dataset
from cadence.engine import Callback, fast
from cadence.engine.fast import choose_engine
from cadence.engine.loop import resolve_config
from cadence.engine.strategies import Update
from cadence.models import build_model
from cadence.optim import build_optimizer, build_schedule

BAD = 12  # the training row (of 16) whose update has a finite loss and an infinite gradient (shuffle is off)
# Its feature and target, for weights near w = 0.01: (w*a - y)^2 ~ 1.7e38 is finite (online, per batch of 8
# and over all 16), its gradient 2*(w*a - y)*a/n ~ 1e39 is not, for every one of those n (as issue 9's CSV).
A, Y = 4e20, 1.7e19

# (engine the run must take, strategy): the kernel serves one-sample updates; the batch engine serves all
# three when asked to (for online, with the kernel taken away); autograd serves all three.
CASES = [
    ("c-kernel", "online"),
    ("batch", "online"),
    ("batch", "mini-batch"),
    ("batch", "full-batch"),
    ("autograd", "online"),
    ("autograd", "mini-batch"),
    ("autograd", "full-batch"),
]
UPDATES_BEFORE = {"online": BAD, "mini-batch": BAD // 8, "full-batch": 0}  # applied before the bad one


@pytest.fixture(scope="module")
def poisoned() -> Dataset:
    """Regression on one feature, y = 0.01 x + noise (so the weight stays near 0.01), and the row (A, Y)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, generator=gen)
    y = 0.01 * x[:, 0] + 0.01 * torch.randn(32, generator=gen)
    x[BAD], y[BAD] = A, Y
    return Dataset(x[:16], y[:16], x[16:24], y[16:24], x[24:], y[24:], task="regression", name="poisoned")


def _model() -> nn.Module:
    model = build_model(ModelConfig(spec="logreg"), (1,), 1)
    with torch.no_grad():
        model[1].weight.fill_(0.01)
        model[1].bias.zero_()
    return model


class Snapshot(Callback):
    """Weights at run start; weights, optimizer state and schedule steps at run end."""

    def on_run_start(self, state):
        self.start = [p.detach().clone() for p in state.model.parameters()]

    def on_run_end(self, state, run):
        self.weights = [p.detach().clone() for p in state.model.parameters()]
        self.optimizer = state.optimizer.state_dict()["state"]
        self.schedule_steps = state.scheduler.t


def _train(data, engine: str, strategy: str, optimizer: str, **stop):
    snapshot = Snapshot()
    run = train(
        _model(),
        data,
        {"model": {"spec": "logreg"}, "strategy": {"shuffle": False}},
        callbacks=[snapshot],
        strategy=strategy,
        batch_size=8,
        optimizer=optimizer,
        lr=0.01,
        threads=1,
        engine="autograd" if engine == "autograd" else "auto",
        **stop,
    )
    assert run.engine == engine
    return run, snapshot


def _same_state(a: dict, b: dict) -> bool:
    """Optimizer states equal bitwise; a state the kernel created at zero counts as a fresh one."""

    def nonzero(state):
        return {
            k: {n: v for n, v in s.items() if torch.count_nonzero(torch.as_tensor(v))} for k, s in state.items()
        }

    a, b = nonzero(a), nonzero(b)
    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys()
        and all(torch.equal(torch.as_tensor(v), torch.as_tensor(b[k][n])) for n, v in a[k].items())
        for k in a
    )


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize(("engine", "strategy"), CASES)
def test_a_finite_loss_with_an_infinite_gradient_is_never_applied(
    monkeypatch, poisoned, engine, strategy, optimizer
):
    if (engine, strategy) == ("batch", "online"):
        monkeypatch.setattr(fast, "kernel", lambda: None)  # one-sample updates on the batch engine
    run, after = _train(poisoned, engine, strategy, optimizer, max_epochs=1)
    k = UPDATES_BEFORE[strategy]

    assert run.stop_reason == StopReason.DIVERGED
    assert run.updates == k and "non-finite at update" in run.message
    assert all(torch.isfinite(w).all() for w in after.weights)
    if k:  # the weights, optimizer state and schedule of the same run stopped just before that update
        _, before = _train(poisoned, engine, strategy, optimizer, max_updates=k)
    else:
        before = after
        before.weights, before.optimizer, before.schedule_steps = after.start, {}, 0
    assert all(torch.equal(a, b) for a, b in zip(after.weights, before.weights, strict=True))
    assert _same_state(after.optimizer, before.optimizer)
    assert after.schedule_steps == before.schedule_steps == k

    # The case is the issue's: at the weights it stopped with, that update's loss is finite, its gradient not.
    w, b = (t.clone().requires_grad_() for t in after.weights)
    rows = {"online": [BAD], "mini-batch": list(range(8, 16)), "full-batch": list(range(16))}[strategy]
    loss = F.mse_loss(poisoned.x_train[rows] @ w.t() + b, poisoned.y_train[rows, None], reduction="sum")
    (grad,) = torch.autograd.grad(loss / len(rows), [w])
    assert torch.isfinite(loss) and not torch.isfinite(grad).all()


@pytest.mark.parametrize(
    ("strategy", "engine"), [("online", "c-kernel"), ("mini-batch", "batch"), ("online", "autograd")]
)
def test_every_engine_steps_the_schedule_once_per_applied_update(digits, strategy, engine):
    config = resolve_config(None, dict(strategy=strategy, engine="autograd" if engine == "autograd" else "auto"))
    size = 1 if strategy == "online" else 4
    updates = [Update((torch.arange(size * i, size * (i + 1)),), size, 0, size * (i + 1), False) for i in range(5)]
    torch.manual_seed(0)
    model = build_model(config.model, digits.input_shape, digits.n_outputs)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    schedule = build_schedule(optimizer, config.schedule)
    chosen = choose_engine(model, optimizer, schedule, config, digits.x_train, digits.y_train, digits.task)
    assert chosen.name == engine
    applied = chosen.apply(updates[: chosen.max_run])
    assert applied.n == len(applied.losses) == min(5, chosen.max_run)
    assert schedule.t == applied.n


def test_after_a_rollback_the_kernel_trains_the_restored_optimizer_state(digits, tmp_path):
    # A rollback loads new momentum buffers into the optimizer: the kernel must write those, not the old ones.
    x = digits.x_train.clone()
    x[110] = float("inf")  # shuffle off: update 111 is not finite; the newest checkpoint is at update 100
    data = dataclasses.replace(digits, x_train=x)
    settings = dict(strategy="online", optimizer="momentum", momentum=0.9, lr=0.01, max_updates=115, threads=1)
    settings |= {"strategy.shuffle": False, "stop.on_nonfinite": "rollback", "model.spec": "logreg"}
    runs = []
    for engine in ("auto", "autograd"):
        checkpoints = Checkpointing(tmp_path / engine, every_updates=50)
        runs.append(train(None, data, callbacks=[checkpoints, Snapshot()], engine=engine, **settings))
    kernel, reference = runs
    assert (kernel.engine, kernel.skipped_updates, kernel.updates) == ("c-kernel", 1, 115)
    assert reference.skipped_updates == 1
    for a, b in zip(kernel.model.parameters(), reference.model.parameters(), strict=True):
        assert float((a - b).abs().max()) < 1e-5
