"""Faults inside a run: non-finite updates under stop | skip | rollback, SIGINT/SIGTERM, a full disk."""

from __future__ import annotations

import dataclasses
import errno
import os
import signal

import pytest
import torch
from torch import nn

import cadence
import cadence.engine.loop as loop
from cadence.callbacks import Checkpointing
from cadence.engine import checkpoint
from cadence.engine.step import step
from cadence.engine.strategies import Update, epoch_order
from cadence.errors import CheckpointError, ConfigError

BASE = dict(
    strategy={"name": "online"},
    model={"spec": "logreg"},
    optimizer={"name": "sgd", "lr": 0.05},
    stop={"max_updates": 120},
)


pytestmark = pytest.mark.usefixtures("one_thread")


class NanGradient(torch.autograd.Function):
    """Identity forward (the loss stays finite), NaN backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class Poisoned(nn.Module):
    """A linear model that breaks on chosen samples: a NaN loss, or a finite loss with NaN gradients."""

    def __init__(self, poison: torch.Tensor, kind: str = "loss"):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(poison.shape[1], 10)
        self.poison, self.kind = poison, kind

    def forward(self, x):
        out = self.linear(x)
        if self.training and (x[:, None, :] == self.poison[None]).all(-1).any():
            out = out * float("nan") if self.kind == "loss" else NanGradient.apply(out)
        return out


def _poison_at(digits, positions):
    """Rows of the samples that online training meets at these positions of epoch 0."""
    order = epoch_order(len(digits.x_train), 0, 0)
    return digits.x_train[order[list(positions)]]


def _train(monkeypatch, *args, **kwargs):
    """train() recording the trained samples; asserts every update not applied left the weights bitwise."""
    trained: list[int] = []
    choose = loop.choose_engine

    def checked(*engine_args, **engine_kwargs):
        engine = choose(*engine_args, **engine_kwargs)
        apply, params = engine.apply, list(engine_args[0].parameters())

        def apply_checked(updates):
            before = [p.detach().clone() for p in params]
            applied = apply(updates)
            for update in updates[: applied.n]:
                trained.extend(torch.cat(update.chunks).tolist())
            if applied.n == 0:
                assert all(torch.equal(a, p) for a, p in zip(before, params, strict=True))
            return applied

        engine.apply = apply_checked
        return engine

    monkeypatch.setattr(loop, "choose_engine", checked)
    return cadence.train(*args, **kwargs), trained


def test_a_finite_loss_with_non_finite_gradients_is_not_applied(digits):
    model = Poisoned(digits.x_train[:1], kind="gradient")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    update = Update((torch.tensor([0, 1]),), 2, 0, 2, False)
    loss, applied = step(model, optimizer, digits.x_train, digits.y_train, update, "classification")
    assert torch.isfinite(loss) and not applied
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    update = Update((torch.tensor([2, 3]),), 2, 0, 4, False)  # a clean batch is applied
    assert step(model, optimizer, digits.x_train, digits.y_train, update, "classification")[1]


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_policy_stop_ends_diverged_keeping_the_last_good_weights(digits, kind):
    model = Poisoned(_poison_at(digits, [50]), kind)
    run = cadence.train(model, digits, BASE)
    clean = cadence.train(Poisoned(_poison_at(digits, [50]), kind), digits, {**BASE, "stop": {"max_updates": 50}})
    assert (run.stop_reason, run.updates) == ("diverged", 50)
    assert torch.equal(run.model.linear.weight, clean.model.linear.weight)
    assert "non-finite" in run.message and "Fix" in run.message


def test_policy_skip_drops_the_update_unchanged_counts_it_and_trains_on(digits, monkeypatch):
    config = {**BASE, "stop": {"max_updates": 120, "on_nonfinite": "skip"}}
    run, trained = _train(monkeypatch, Poisoned(_poison_at(digits, [50, 80]), "gradient"), digits, config)
    order = epoch_order(len(digits.x_train), 0, 0).tolist()
    assert run.stop_reason == "budget" and run.skipped_updates == 2 and run.updates == 120
    assert trained == order[:50] + order[51:80] + order[81:122]
    assert run.summary()["skipped_updates"] == 2


def test_policy_skip_on_the_compiled_kernel_trains_the_rest_of_its_run(digits, monkeypatch):
    """The kernel applies thousands of one-sample updates per call: after the one it skips, the rest of
    that call's run is trained too, none dropped."""
    x = digits.x_train.clone()
    order = epoch_order(len(x), 0, 0).tolist()
    x[order[50]] = torch.finfo(torch.float32).max  # finite, but its forward pass overflows
    data = dataclasses.replace(digits, x_train=x)
    model = cadence.models.build_model(cadence.RunConfig().model.model_copy(update={"spec": "mlp:32"}), (64,), 10)
    with torch.no_grad():
        model[1].weight.abs_()  # every first-layer sum of that sample is +inf
    config = {**BASE, "model": {"spec": "mlp:32"}, "stop": {"max_epochs": 1, "on_nonfinite": "skip"}}
    run, trained = _train(monkeypatch, model, data, config)
    assert run.engine == "c-kernel"
    assert (run.stop_reason, run.skipped_updates, run.updates) == ("budget", 1, len(x) - 1)
    assert trained == order[:50] + order[51:]


def test_policy_skip_diverges_after_max_skips_in_a_row(digits, monkeypatch):
    config = {**BASE, "stop": {"max_updates": 120, "on_nonfinite": "skip", "max_skips": 3}}
    run, _ = _train(monkeypatch, Poisoned(_poison_at(digits, [50, 51, 52])), digits, config)
    assert (run.stop_reason, run.updates, run.skipped_updates) == ("diverged", 50, 3)
    assert "3 non-finite updates in a row" in run.message
    config["stop"]["max_skips"] = 4  # three in a row are tolerated by a larger K
    run, _ = _train(monkeypatch, Poisoned(_poison_at(digits, [50, 51, 52])), digits, config)
    assert (run.stop_reason, run.updates, run.skipped_updates) == ("budget", 120, 3)


def test_policy_rollback_restores_the_checkpoint_halves_the_lr_and_skips_the_batch(digits, tmp_path, monkeypatch):
    config = {**BASE, "stop": {"max_updates": 120, "on_nonfinite": "rollback"}}
    saver = Checkpointing(tmp_path, every_updates=20)
    run, trained = _train(monkeypatch, Poisoned(_poison_at(digits, [50])), digits, config, callbacks=[saver])
    order = epoch_order(len(digits.x_train), 0, 0).tolist()
    assert run.stop_reason == "budget" and run.updates == 120 and run.skipped_updates == 1
    # Trained up to the bad sample, went back to the checkpoint at update 40, replayed, skipped it.
    assert trained == order[:50] + order[40:50] + order[51:121]
    assert run.history[-1]["lr"] == pytest.approx(0.025)
    # The rollback survives a restart: the newest checkpoint knows the skipped sample and the new lr.
    ckpt = checkpoint.latest(checkpoint.checkpoints_dir(tmp_path))
    assert ckpt.meta["state"]["skipped_positions"] == [[0, 51]]
    assert ckpt.meta["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.025)


def test_policy_rollback_diverges_when_rolling_back_keeps_failing(digits, tmp_path):
    config = {**BASE, "stop": {"max_updates": 120, "on_nonfinite": "rollback", "max_skips": 2}}
    model = Poisoned(_poison_at(digits, range(45, 60)), "gradient")
    run = cadence.train(model, digits, config, callbacks=[Checkpointing(tmp_path, every_updates=40)])
    assert run.stop_reason == "diverged" and run.updates == 45
    assert "rolled back to" in run.message and "2 times" in run.message


def test_policy_rollback_without_checkpoints_is_refused_before_training(digits):
    config = {**BASE, "stop": {"max_updates": 5, "on_nonfinite": "rollback"}}
    with pytest.raises(ConfigError, match=r"on_nonfinite = 'rollback' needs checkpoints.*--checkpoint-every"):
        cadence.train(data=digits, config=config)


class RaiseSignal(cadence.Callback):
    def __init__(self, sig, at):
        self.sig, self.at = sig, at

    def on_update_end(self, state):
        if state.updates == self.at:
            signal.raise_signal(self.sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_finishes_the_update_checkpoints_and_stops_interrupted(digits, tmp_path, sig):
    handler = signal.getsignal(sig)
    ref = cadence.train(data=digits, config=BASE)
    saver = Checkpointing(tmp_path)
    cut = cadence.train(data=digits, config=BASE, callbacks=[RaiseSignal(sig, 30), saver])
    assert (cut.stop_reason, cut.updates) == ("interrupted", 31)  # the update in progress was finished
    assert signal.Signals(sig).name in cut.message
    assert signal.getsignal(sig) is handler  # train() put the previous handler back
    assert checkpoint.read(saver.written[-1]).updates == 31
    rest = cadence.train(data=digits, resume_from=tmp_path)
    assert torch.equal(rest.model[1].weight, ref.model[1].weight)


def test_a_full_disk_during_a_run_stops_it_with_the_path_and_keeps_the_last_checkpoint(
    digits, tmp_path, monkeypatch
):
    real_write = os.write

    class DiskFillsUp(cadence.Callback):
        def on_update_end(self, state):
            if state.updates == 25:
                monkeypatch.setattr(checkpoint.os, "write", full)

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*ckpt-\d+: No space left on device"):
        cadence.train(
            data=digits, config=BASE, callbacks=[DiskFillsUp(), Checkpointing(tmp_path, every_updates=10)]
        )
    monkeypatch.setattr(checkpoint.os, "write", real_write)
    assert checkpoint.latest(checkpoint.checkpoints_dir(tmp_path)).updates == 20
    assert not any(p.name.startswith(checkpoint.TEMP) for p in checkpoint.checkpoints_dir(tmp_path).iterdir())
    run = cadence.train(data=digits, resume_from=tmp_path)  # and the run carries on from there
    assert run.updates == 120 and run.stop_reason == "budget"
