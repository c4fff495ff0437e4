"""Every run ends with a stated reason; each reason is reached where and why it should be."""

from __future__ import annotations

import pytest
import torch

import cadence
from cadence import StopReason
from cadence.config import StopConfig
from cadence.engine.stopping import Stopping


def test_budget_stops_on_each_kind_of_budget(digits):
    assert cadence.train("logreg", digits, max_epochs=2).epochs == 2.0
    assert cadence.train("logreg", digits, max_updates=7, max_epochs=None).updates == 7
    run = cadence.train("logreg", digits, strategy="online", max_samples=123, max_epochs=None)
    assert run.samples_seen == 123 and run.stop_reason == StopReason.BUDGET
    run = cadence.train(
        "logreg", digits, strategy="online", max_seconds=0.3, max_epochs=None, early_stopping_metric=None
    )
    # Time is the only budget left (and nothing else stops), so only it can have ended the run. (How many
    # samples fit in 0.3 s is the machine's speed, not behaviour: the kernel trains 60 digits epochs in
    # that time when idle, enough for early stopping's patience to run out.)
    assert run.config.stop.max_epochs is None and run.stop_reason == StopReason.BUDGET and run.seconds >= 0.3


def test_a_budget_is_required():
    with pytest.raises(cadence.ConfigError, match="set at least one budget"):
        cadence.build_config({"stop": {"max_epochs": None, "max_seconds": None}})


@pytest.mark.parametrize(
    ("losses", "tol", "patience", "stops_at"),
    [
        ([1.0, 0.5, 0.25, 0.2499, 0.2498, 0.2497], 1e-3, 3, 5),  # three flat checks in a row
        ([1.0, 0.5, 0.4999, 0.3, 0.2999, 0.2998, 0.2997], 1e-3, 3, 6),  # a real drop resets the count
        ([1.0, 0.9, 0.8, 0.7], 1e-3, 2, None),
    ],
)
def test_convergence_on_scripted_losses(losses, tol, patience, stops_at):
    stopping = Stopping(StopConfig(tol=tol, convergence_patience=patience))
    reasons = [stopping.converged(loss) for loss in losses]
    first = next((i for i, r in enumerate(reasons) if r), None)
    assert first == stops_at
    if stops_at is not None:
        assert reasons[stops_at] == StopReason.CONVERGED


def test_target_loss_converges_the_run(digits):
    run = cadence.train("mlp:32", digits, lr=0.1, target_loss=0.5, max_epochs=50)
    assert run.stop_reason == StopReason.CONVERGED
    assert run.history[-1]["train_loss"] <= 0.5 < run.history[0]["train_loss"]
    assert run.epochs < 50


def test_tol_converges_full_batch_gradient_descent(blobs):
    run = cadence.train("logreg", blobs, strategy="full-batch", optimizer="gd", lr=0.5, tol=1e-3, max_epochs=5000)
    assert run.stop_reason == StopReason.CONVERGED and run.epochs < 5000


def test_early_stopping_on_scripted_metric_restores_the_best_weights():
    stopping = Stopping(StopConfig(early_stopping_metric="val_loss", early_stopping_patience=2))
    model = torch.nn.Linear(2, 2)
    reasons = []
    for i, loss in enumerate([1.0, 0.8, 0.9, 0.85]):
        with torch.no_grad():
            model.weight.fill_(i)
        reasons.append(stopping.early_stopped({"val_loss": loss}, model))
    assert reasons == [None, None, None, StopReason.EARLY_STOPPED]
    stopping.restore_best(model)  # best was the 2nd evaluation (val_loss 0.8), weights filled with 1
    assert torch.all(model.weight == 1)


def test_early_stopping_maximizes_accuracy_metrics():
    stopping = Stopping(StopConfig(early_stopping_metric="val_accuracy", early_stopping_patience=1))
    model = torch.nn.Linear(1, 1)
    assert stopping.early_stopped({"val_accuracy": 0.5}, model) is None
    assert stopping.early_stopped({"val_accuracy": 0.6}, model) is None
    assert stopping.early_stopped({"val_accuracy": 0.55}, model) == StopReason.EARLY_STOPPED


def test_early_stopping_ends_an_overfitting_run_with_its_best_validation_weights(digits):
    run = cadence.train(
        "mlp:256,256",
        digits,
        optimizer="adam",
        lr=0.01,
        batch_size=32,
        max_epochs=100,
        early_stopping="val_loss",
        patience=3,
    )
    assert run.stop_reason == StopReason.EARLY_STOPPED and run.restored_best
    best = min(r["val_loss"] for r in run.history)
    assert run.val_metrics["val_loss"] == pytest.approx(best, rel=1e-5)
    assert run.history[-1]["val_loss"] > best


def test_early_stopping_on_an_unknown_metric_is_refused(digits):
    with pytest.raises(cadence.ConfigError, match="'val_acc' is not a validation metric.*val_accuracy"):
        cadence.train("logreg", digits, early_stopping="val_acc")


def test_divergence_stops_before_the_bad_update_and_keeps_the_last_good_weights(digits):
    run = cadence.train("mlp:32", digits, strategy="online", optimizer="sgd", lr=50.0, max_epochs=1)
    assert run.stop_reason == StopReason.DIVERGED
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert run.updates < len(digits.x_train) and "non-finite" in run.message


def test_keyboard_interrupt_ends_the_run_as_interrupted(digits):
    class Interrupt(cadence.Callback):
        def on_update_end(self, state):
            if state.updates == 5:
                raise KeyboardInterrupt

    run = cadence.train("logreg", digits, callbacks=[Interrupt()], max_epochs=3)
    assert run.stop_reason == StopReason.INTERRUPTED and run.updates == 5


def test_a_callback_can_ask_to_stop_with_a_reason(digits):
    class StopAtTen(cadence.Callback):
        def on_update_end(self, state):
            return StopReason.CONVERGED if state.updates == 10 else None

    run = cadence.train("logreg", digits, callbacks=[StopAtTen()], max_epochs=3)
    assert run.stop_reason == StopReason.CONVERGED and run.updates == 10
