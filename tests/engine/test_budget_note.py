"""A run that ends on its budget while the watched metric still improves says so, with the flag to raise."""

from __future__ import annotations

import cadence
from cadence.config import StopConfig
from cadence.engine.stopping import Stopping, budget_note


def history(metric: str, values: list[float]) -> list[dict]:
    return [{metric: v} for v in values]


def test_budget_stop_with_patience_left_is_still_improving():
    config = StopConfig(max_epochs=5, early_stopping_metric="val_loss", early_stopping_patience=3)
    stopping = Stopping(config)
    stopping.bad_checks = 1
    note = budget_note(config, history("val_loss", [1.0, 0.8, 0.7, 0.75]), stopping)
    assert note.startswith("val_loss was still improving (best 1 evaluation before the end)")
    assert "(max_epochs=5, max_seconds=600)" in note and "--max-epochs/--max-seconds" in note


def test_no_note_when_patience_ran_out_or_without_a_trend():
    config = StopConfig(max_epochs=5, early_stopping_metric="val_loss", early_stopping_patience=2)
    stopping = Stopping(config)
    stopping.bad_checks = 2
    assert budget_note(config, history("val_loss", [1.0, 0.5, 0.6, 0.7]), stopping) == ""
    flat = StopConfig(max_epochs=5, early_stopping_metric=None)
    assert budget_note(flat, history("train_loss", [1.0, 1.0, 1.0, 1.0, 1.0]), Stopping(flat)) == ""
    falling = budget_note(flat, history("train_loss", [1.0, 0.9, 0.8, 0.7, 0.6]), Stopping(flat))
    assert falling.startswith("train_loss was still improving (best at the last evaluation)")


def test_a_short_run_says_it_stopped_while_improving_and_an_early_stopped_one_does_not(blobs):
    short = cadence.train(data=blobs, model="logreg", max_epochs=2, threads=1)
    assert short.stop_reason == "budget" and "still improving" in short.message
    long = cadence.train(data=blobs, model="logreg", lr=0.3, early_stopping="val_loss", patience=2, threads=1)
    assert long.stop_reason == "early-stopped" and "still improving" not in long.message
