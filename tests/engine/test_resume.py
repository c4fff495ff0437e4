"""Resume parity: a run stopped mid-epoch and resumed from a checkpoint ends with the same weights,
optimizer state, history and trained sample sequence as an uninterrupted run, bitwise on CPU."""

from __future__ import annotations

import pytest
import torch

import cadence
import cadence.engine.loop as loop
from cadence.callbacks import Checkpointing
from cadence.config import DataConfig
from cadence.data.datasets import from_arrays
from cadence.engine import checkpoint, resume
from cadence.errors import CheckpointError, ConfigError

# Three cadences, each with something that breaks a naive resume: online with Adam moments mid-epoch;
# mini-batch with dropout (RNG) and 4 chunks per update (gradient accumulation) under momentum;
# full-batch under RMSprop with early stopping's memory (best metric, bad evaluations, best weights).
CONFIGS = {
    "online": dict(
        strategy={"name": "online"},
        model={"spec": "logreg"},
        optimizer={"name": "adam", "lr": 0.01},
        stop={"max_updates": 900},
        eval={"every_updates": 250},
    ),
    "mini-batch": dict(
        strategy={"name": "mini-batch", "batch_size": 32, "chunk_size": 8},
        model={"spec": "mlp:16", "dropout": 0.3},
        optimizer={"name": "momentum", "lr": 0.05},
        stop={"max_epochs": 3},
    ),
    "full-batch": dict(
        strategy={"name": "full-batch", "chunk_size": 500},
        model={"spec": "mlp:8"},
        optimizer={"name": "rmsprop", "lr": 0.03},
        stop={"max_epochs": 60, "early_stopping_metric": "val_accuracy", "early_stopping_patience": 4},
    ),
}
# Online and mini-batch stop mid-epoch and between evaluations; full-batch (every update is an epoch)
# stops 2 evaluations after the best (update 18); it early-stops at update 22 and restores the best weights.
STOP_AT = {"online": 433, "mini-batch": 57, "full-batch": 20}


pytestmark = pytest.mark.usefixtures("one_thread")


class StopAt(cadence.Callback):
    """Stops the run at an update, as a crash would (the checkpoint comes from Checkpointing)."""

    def __init__(self, at: int):
        self.at = at

    def on_update_end(self, state):
        return cadence.StopReason.INTERRUPTED if state.updates == self.at else None


class KeepOptimizer(cadence.Callback):
    def on_run_end(self, state, run):
        run.optimizer_state = state.optimizer.state_dict()


def recording_engines(monkeypatch, trained: list[int]):
    """Make every engine the loop chooses append the sample indices of each update it applies to `trained`."""
    choose = loop.choose_engine

    def choose_recording(*args, **kwargs):
        engine = choose(*args, **kwargs)
        apply = engine.apply

        def recorded(updates):
            applied = apply(updates)
            for update in updates[: applied.n]:
                trained.extend(torch.cat(update.chunks).tolist())
            return applied

        engine.apply = recorded
        return engine

    monkeypatch.setattr(loop, "choose_engine", choose_recording)


def _train(monkeypatch, *args, callbacks=(), **kwargs):
    """train() that also returns the sample indices of every update it trained, in order."""
    trained: list[int] = []
    with monkeypatch.context() as patch:
        recording_engines(patch, trained)
        run = cadence.train(*args, callbacks=[*callbacks, KeepOptimizer()], **kwargs)
    return run, trained


def _no_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def _assert_same_run(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "weights differ"
    oa, ob = a.optimizer_state, b.optimizer_state
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for key in oa["state"]:
        assert all(torch.equal(v, ob["state"][key][name]) for name, v in oa["state"][key].items()), key
    assert _no_seconds(a.history) == _no_seconds(b.history)
    assert (a.updates, a.samples_seen, a.stop_reason) == (b.updates, b.samples_seen, b.stop_reason)


@pytest.mark.parametrize("strategy", list(CONFIGS))
def test_resuming_mid_epoch_equals_the_uninterrupted_run_bitwise(strategy, digits, tmp_path, monkeypatch):
    config = CONFIGS[strategy]
    ref, ref_trained = _train(monkeypatch, data=digits, config=config)
    stop = [StopAt(STOP_AT[strategy]), Checkpointing(tmp_path)]
    cut, cut_trained = _train(monkeypatch, data=digits, config=config, callbacks=stop)
    assert cut.updates == STOP_AT[strategy] < ref.updates
    rest, rest_trained = _train(monkeypatch, data=digits, resume_from=tmp_path)
    _assert_same_run(ref, rest)
    # The ordered list of trained samples: no repeats and no gaps across the cut.
    assert cut_trained + rest_trained == ref_trained


def test_resuming_from_an_older_checkpoint_than_the_last_still_equals_the_uninterrupted_run(
    digits, tmp_path, monkeypatch
):
    """A crash leaves the last periodic checkpoint, not a run-end one: resume from it."""
    config = CONFIGS["mini-batch"]
    ref, _ = _train(monkeypatch, data=digits, config=config)
    saver = Checkpointing(tmp_path, every_updates=10, keep=10)
    cadence.train(data=digits, config=config, callbacks=[StopAt(57), saver])
    at_50 = [p for p in saver.written if checkpoint.read(p).updates == 50]
    assert len(at_50) == 1
    rest, _ = _train(monkeypatch, data=digits, resume_from=at_50[0])
    _assert_same_run(ref, rest)


def test_resuming_a_finished_run_trains_nothing_more(digits, tmp_path):
    config = CONFIGS["mini-batch"]
    done = cadence.train(data=digits, config=config, callbacks=[Checkpointing(tmp_path), KeepOptimizer()])
    again = cadence.train(data=digits, resume_from=tmp_path, callbacks=[KeepOptimizer()])
    _assert_same_run(done, again)
    assert again.stop_reason == "budget"


def test_resume_refuses_a_changed_config_naming_the_keys_and_trains_nothing(digits, tmp_path):
    config = CONFIGS["mini-batch"]
    cadence.train(data=digits, config=config, callbacks=[StopAt(20), Checkpointing(tmp_path)])
    changed = {**config, "optimizer": {"name": "momentum", "lr": 0.1}, "seed": 3}
    model = cadence.engine.loop.build_model(
        cadence.build_config(changed).model, digits.input_shape, digits.n_outputs
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"optimizer\.lr: 0\.05 -> 0\.1; seed: 0 -> 3.*--allow-changes"):
        cadence.train(model, data=digits, config=changed, resume_from=tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_resume_refuses_different_training_data(digits, tmp_path):
    config = CONFIGS["mini-batch"]
    cadence.train(data=digits, config=config, callbacks=[StopAt(20), Checkpointing(tmp_path)])
    other = from_arrays(
        digits.x_train.numpy()[::-1].copy(),
        digits.y_train.numpy()[::-1].copy(),
        config=DataConfig(val_fraction=0.1, test_fraction=0.0),
    )
    with pytest.raises(ConfigError, match=r"training data differ"):
        cadence.train(data=other, config=config, resume_from=tmp_path)


def test_allow_changes_continues_with_the_new_settings(digits, tmp_path):
    config = CONFIGS["mini-batch"]
    cadence.train(data=digits, config=config, callbacks=[StopAt(20), Checkpointing(tmp_path)])
    changed = {**config, "optimizer": {"name": "momentum", "lr": 0.01}, "stop": {"max_epochs": 4}}
    run = cadence.train(data=digits, config=changed, resume_from=tmp_path, allow_changes=True)
    assert run.updates == 4 * 40 and run.history[0]["updates"] == 40  # history kept from before
    assert run.history[-1]["lr"] == 0.01


def test_a_new_run_from_old_weights_starts_from_them(digits, tmp_path):
    config = CONFIGS["mini-batch"]
    old = cadence.train(data=digits, config=config, callbacks=[Checkpointing(tmp_path)])
    new_config = cadence.build_config({**config, "data": {"limit": 600}})
    model = resume.start_from(tmp_path, new_config, digits.input_shape, digits.n_outputs)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), old.model.state_dict().values(), strict=True)
    )
    wrong = cadence.build_config({**config, "model": {"spec": "mlp:32", "dropout": 0.3}})
    with pytest.raises(ConfigError, match=r"1\.weight: \(16, 64\) in the checkpoint, \(32, 64\) in the model"):
        resume.start_from(tmp_path, wrong, digits.input_shape, digits.n_outputs)


def test_resume_with_no_checkpoint_raises_and_never_starts_from_scratch(digits, tmp_path):
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        cadence.train(data=digits, config=CONFIGS["online"], resume_from=tmp_path)
