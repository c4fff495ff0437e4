"""The progress bar counts updates, shows the running training loss and the latest validation metric, and
its last line is the run's last history record."""

from __future__ import annotations

import io
import itertools

import torch
from rich.console import Console
from rich.text import Text

import cadence.callbacks.progress as progress_module
from cadence.callbacks import Progress
from cadence.config import build_config
from cadence.engine import TrainState, train


def test_the_last_line_shows_the_last_history_record_not_the_first(digits):
    buf = io.StringIO()  # not a terminal: rich prints only the final line
    config = {
        "strategy": {"name": "mini-batch"},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "stop": {"max_epochs": 4, "early_stopping_metric": None},  # else the bar shows the stopping metric
    }
    run = train("mlp:16", digits, config, callbacks=[Progress("mini-batch", console=Console(file=buf, width=200))])
    first, last = run.history[0], run.history[-1]
    assert f"{first['val_accuracy']:.4f}" != f"{last['val_accuracy']:.4f}"  # else the test proves nothing
    (line,) = buf.getvalue().strip().splitlines()
    assert line.startswith("mini-batch ━")
    assert f" {run.updates:,}/{run.updates:,} updates · {run.samples_seen:,} samples · " in line
    assert f"train_loss {last['train_loss']:.4f} · val_accuracy {last['val_accuracy']:.4f} " in line


def _state(**counters) -> TrainState:
    model = torch.nn.Linear(2, 2)
    config = build_config({"stop": {"max_epochs": 2}})
    return TrainState(config, model, torch.optim.SGD(model.parameters(), lr=0.1), None, 640, 10, **counters)


def test_while_running_it_shows_the_mean_loss_since_the_last_evaluation(monkeypatch):
    clock = itertools.count(step=1.0)  # every redraw is due
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    buf = io.StringIO()
    bar = Progress("mini-batch", console=Console(file=buf, width=120, force_terminal=True, color_system=None))
    state = _state(updates=3, samples=192)
    state.history = [{"updates": 2, "train_loss": 0.9, "val_accuracy": 0.5}]
    state.losses = [torch.tensor([0.2, 0.4]), torch.tensor([0.6])]
    bar.on_run_start(state)
    bar.on_update_end(state)
    state.losses.append(torch.tensor([1.0]))  # the same list grows: (0.2 + 0.4 + 0.6 + 1.0) / 4
    state.updates, state.samples = 4, 256
    bar.on_update_end(state)
    frames = [Text.from_ansi(f).plain.strip() for f in buf.getvalue().split("\r")]
    assert any(" 3/20 updates · 192 samples · train_loss 0.4000 · val_accuracy 0.5000 " in f for f in frames)
    assert any(" 4/20 updates · 256 samples · train_loss 0.5500 · val_accuracy 0.5000 " in f for f in frames)
    state.losses = []  # an evaluation started a new list: until a loss arrives, the record's train_loss
    bar.on_update_end(state)
    assert "train_loss 0.9000" in Text.from_ansi(buf.getvalue().split("\r")[-1]).plain


def test_an_80_column_terminal_gets_the_metrics_on_a_second_line_whole(digits):
    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None)
    config = {"strategy": {"name": "online"}, "stop": {"max_epochs": 1, "early_stopping_metric": None}}
    run = train("mlp:16", digits, config, callbacks=[Progress("online", console=console)])
    last = run.history[-1]
    final = Text.from_ansi(buf.getvalue().split("\r")[-1]).plain.strip("\n").splitlines()[-2:]
    assert all(len(line) <= 80 for line in final) and "…" not in buf.getvalue()
    assert final[0].startswith("online ━") and f" {run.updates:,}/{run.updates:,} updates " in final[0]
    assert final[1].split() == [
        "train_loss",
        f"{last['train_loss']:.4f}",
        "·",
        "val_accuracy",
        f"{last['val_accuracy']:.4f}",
    ]
