"""A rich progress bar over updates, with the latest validation metric; writes to stderr."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from cadence.engine.budget import budget_updates
from cadence.engine.events import Callback, TrainState


def expected_updates(state: TrainState) -> int | None:
    """Updates the budget allows, when it is known in advance (epochs, updates or samples)."""
    return budget_updates(state.config, state.n_train)


class Progress(Callback):
    """Shows updates done / expected, elapsed and remaining time; redraws at most ten times a second."""

    exact_updates = False  # a redraw every run of updates is enough

    def __init__(self, description: str = "training", console: Console | None = None):
        self.description = description
        self.console = console or Console(stderr=True)
        self._bar: RichProgress | None = None
        self._last = 0.0

    def on_run_start(self, state: TrainState) -> None:
        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=expected_updates(state), info="")

    def on_update_end(self, state: TrainState) -> None:
        now = time.perf_counter()
        if now - self._last < 0.1:
            return None
        self._last = now
        info = ""
        if state.history:
            last = state.history[-1]
            metric = "val_accuracy" if "val_accuracy" in last else "val_loss"
            if metric in last:
                info = f"{metric} {last[metric]:.4f}"
        self._bar.update(self._task, completed=state.updates, info=info)
        return None

    def on_run_end(self, state: TrainState, run) -> None:
        self._bar.update(self._task, completed=state.updates, total=state.updates)
        self._bar.stop()
