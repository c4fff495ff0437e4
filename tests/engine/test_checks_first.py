"""Every bad setting, bad data or unusable resume is refused before anything happens: no callback has run
(no progress drawn, no checkpoint written), no file exists, threads, RNG and the model are as they were."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from rich.console import Console

import cadence
from cadence.callbacks import Checkpointing, Progress
from cadence.errors import ConfigError, DataError
from cadence.models import MLP


def _nan_data():
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    x[7, 1] = np.nan
    return (x, np.arange(40) % 2)


CASES = {
    "lr=inf": (dict(lr=float("inf")), ConfigError, r"'optimizer\.lr' = inf: Input should be a finite number"),
    "tol=nan": (dict(tol=float("nan")), ConfigError, r"'stop\.tol' = nan: Input should be a finite number"),
    "NaN in the data": (dict(data=_nan_data()), DataError, r"not finite|NaN"),
    "drop_last, batch > data": (
        dict(batch_size=5000, drop_last=True),
        ConfigError,
        r"batch_size=5000 is larger than the 1257 training samples, and drop_last is set",
    ),
    "batch > data": (
        dict(batch_size=5000),
        ConfigError,
        r"batch_size=5000 is larger than the 1257 .* that is full-batch\. Fix: lower batch_size \(at most 1257\)",
    ),
    "stream in memory": (dict(strategy="stream"), ConfigError, r"strategy 'stream' reads from a Stream source"),
    "unknown early-stopping metric": (dict(early_stopping="val_mse"), ConfigError, r"not a validation metric"),
    "plateau metric never recorded": (
        {"schedule.plateau.metric": "val_mse"},
        ConfigError,
        r"schedule\.plateau\.metric = 'val_mse' is not recorded",
    ),
    "cosine without a budget": (
        {"schedule": "cosine", "max_epochs": None, "max_updates": None, "max_seconds": 5},
        ConfigError,
        r"schedule 'cosine' anneals over T_max",
    ),
    "augment on per-feature scaling": ({"augment.shift": 1}, ConfigError, r"augment moves pixels"),
    "model output too small": (dict(model=MLP(64, [8], 3)), ConfigError, r"outputs shape \(3,\) per sample"),
    "a GPU that is not there": (dict(device="cuda:3"), ConfigError, r"device = 'cuda:3', but this machine has"),
    "rollback without checkpoints": (
        {"stop.on_nonfinite": "rollback"},
        ConfigError,
        r"'rollback' needs checkpoints",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_refused_before_any_callback_runs_or_any_file_is_written(digits, tmp_path, case):
    overrides, error, match = CASES[case]
    overrides = dict(overrides)
    data = overrides.pop("data", digits)
    model = overrides.pop("model", None)
    before_model = None if model is None else [p.detach().clone() for p in model.parameters()]
    shown = io.StringIO()
    callbacks = [Progress("training", Console(file=shown, force_terminal=True))]
    if case != "rollback without checkpoints":  # a checkpointing callback is what makes rollback valid
        callbacks.append(Checkpointing(tmp_path / "run", every_updates=1))
    threads, rng = torch.get_num_threads(), torch.get_rng_state()

    with pytest.raises(error, match=match):
        cadence.train(model, data, callbacks=callbacks, **{"max_updates": 10, **overrides})
    assert shown.getvalue() == ""  # no progress bar was started
    assert not (tmp_path / "run").exists()  # no checkpoint, no folder
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)
    if model is not None:
        assert all(torch.equal(a, b) for a, b in zip(before_model, model.parameters(), strict=True))


def test_a_resume_that_cannot_continue_is_refused_before_any_callback_runs(digits, tmp_path):
    old = tmp_path / "old"
    cadence.train("logreg", digits, callbacks=[Checkpointing(old)], max_updates=5)
    written = sorted(p.name for p in (old / "checkpoints").iterdir())
    shown = io.StringIO()
    callbacks = [Progress("training", Console(file=shown, force_terminal=True)), Checkpointing(tmp_path / "run")]
    with pytest.raises(ConfigError, match=r"cannot resume from .*optimizer\.lr: [0-9.]+ -> 0\.5"):
        cadence.train(data=digits, resume_from=old, callbacks=callbacks, lr=0.5)
    assert shown.getvalue() == "" and not (tmp_path / "run").exists()
    assert sorted(p.name for p in (old / "checkpoints").iterdir()) == written
