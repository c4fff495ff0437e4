"""A rich progress bar on stderr: updates done of the budget's, samples seen, the running training loss and
the latest validation metric. The line it leaves behind shows the run's last history record."""

from __future__ import annotations

import math
import time

from rich.console import Console
from rich.progress import Progress as RichProgress
from rich.progress import ProgressColumn, Task, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from cadence.engine.budget import budget_updates
from cadence.engine.events import Callback, TrainState

# The validation metric shown, in order of preference (the early-stopping metric comes first when set).
METRICS = ("val_accuracy", "val_r2", "val_loss")


def expected_updates(state: TrainState) -> int | None:
    """Updates the budget allows, when it is known in advance (epochs, updates or samples): the one budget
    function, engine/budget.py's."""
    return budget_updates(state.config, state.n_train)


def _metric(state: TrainState, record: dict) -> str | None:
    preferred = state.config.stop.early_stopping_metric
    for name in (preferred, *METRICS):
        if name and name.startswith("val_") and isinstance(record.get(name), float | int):
            return name
    return None


class _RunningLoss:
    """Mean training loss since the last evaluation, summed incrementally from the loop's `state.losses`
    (the list the next history record's train_loss is the mean of; the loop starts a new list after each)."""

    def __init__(self) -> None:
        self._list: list | None = None
        self._seen = 0
        self._sum = 0.0
        self._n = 0

    def value(self, losses: list) -> float | None:
        if losses is not self._list:
            self._list, self._seen, self._sum, self._n = losses, 0, 0.0, 0
        for t in losses[self._seen :]:
            self._sum += float(t.sum())
            self._n += t.numel()
        self._seen = len(losses)
        return self._sum / self._n if self._n else None


class _Line(ProgressColumn):
    """The whole line as one text that fits the console: the bar gets the room the words leave (none when
    they fill it); a line that is still too long wraps between words, so a number is never cut."""

    def __init__(self, console: Console):
        super().__init__()
        self.console = console
        self.elapsed, self.remaining = TimeElapsedColumn(), TimeRemainingColumn()

    def render(self, task: Task) -> Text:
        head = Text(task.description, style="bold")
        count = Text(f" {task.fields['count']}")
        times = Text(" ").append_text(self.elapsed.render(task))
        if not task.finished:
            times.append(" ").append_text(self.remaining.render(task))
        info = Text(f" · {task.fields['info']}" if task.fields["info"] else "")
        width = self.console.width
        fixed = head.cell_len + count.cell_len + times.cell_len
        one_line = fixed + info.cell_len + 8 <= width  # 8: the shortest bar worth drawing
        room = width - fixed - (info.cell_len if one_line else 0) - 1
        if task.total and room >= 6:
            bar = min(room, 40)
            done = round(bar * min(task.completed / task.total, 1.0))
            head.append(" ")
            head.append("━" * done, style="bar.finished" if task.finished else "bar.complete")
            head.append("━" * (bar - done), style="bar.back")
        head.append_text(count)
        if one_line:
            return head.append_text(info).append_text(times)
        head.append_text(times)
        return head.append(f"\n  {task.fields['info']}") if info else head


class Progress(Callback):
    """Shows `updates done/expected updates`, samples seen, `train_loss` (the mean since the last
    evaluation) and the latest validation metric, with elapsed and remaining time; redraws at most ten
    times a second. At the end of the run it shows the last history record's train_loss and metric."""

    exact_updates = False  # a redraw every run of updates is enough

    def __init__(self, description: str = "training", console: Console | None = None):
        self.description = description
        self.console = console or Console(stderr=True)
        self._bar: RichProgress | None = None
        self._last = 0.0
        self._loss = _RunningLoss()

    def on_run_start(self, state: TrainState) -> None:
        self._total = expected_updates(state)
        self._bar = RichProgress(_Line(self.console), console=self.console, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=self._total, **self._fields(state))

    def _fields(self, state: TrainState, final: bool = False) -> dict:
        total = f"/{self._total:,}" if self._total and not final else (f"/{state.updates:,}" if final else "")
        info = [f"{state.samples:,} samples"] if state.samples != state.updates else []  # online: the same
        last = state.history[-1] if state.history else {}
        # While running: the mean loss since the last evaluation; at the end: exactly the last record's.
        loss = None if final else self._loss.value(state.losses)
        if loss is None:
            loss = last.get("train_loss")
        if loss is not None and math.isfinite(loss):
            info.append(f"train_loss {loss:.4f}")
        metric = _metric(state, last)
        if metric:
            info.append(f"{metric} {last[metric]:.4f}")
        return {"count": f"{state.updates:,}{total} updates", "info": " · ".join(info)}

    def on_update_end(self, state: TrainState) -> None:
        now = time.perf_counter()
        if now - self._last < 0.1:
            return None
        self._last = now
        self._bar.update(self._task, completed=state.updates, refresh=True, **self._fields(state))
        return None

    def on_run_end(self, state: TrainState, run) -> None:
        fields = self._fields(state, final=True)
        self._bar.update(self._task, completed=state.updates, total=state.updates, **fields)
        self._bar.stop()
