"""Run the jobs of a grid: in this process (one worker) or in spawned worker processes, with a live display.

Ctrl-C stops cleanly: jobs not started are cancelled, running ones stop at their next update (their
results are kept, marked `interrupted`), finished ones are kept. Workers ignore SIGINT and watch a shared
event instead, so a Ctrl-C sent to the whole process group cannot kill a worker between two jobs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from cadence.comparison.grid import Job, expected_updates
from cadence.config import RunConfig
from cadence.data.datasets import Dataset, load_data
from cadence.engine import Callback, StopReason, TrainState, train

# Worker-process state, set once by _init_worker.
_SINK: Callable[[tuple], None] | None = None
_STOP: threading.Event | None = None
_DATA: dict[str, Dataset] = {}


class _Reporter(Callback):
    """Tells the display a run started and how far it is (at most twice a second); stops it on request."""

    def __init__(self, index: int, sink: Callable[[tuple], None] | None, stop):
        self.index, self.sink, self.stop = index, sink, stop
        self._last = 0.0

    def on_run_start(self, state: TrainState) -> None:
        if self.sink:
            self.sink(("start", self.index, 0, None))

    def on_update_end(self, state: TrainState) -> StopReason | None:
        if self.stop is not None and self.stop.is_set():
            return StopReason.INTERRUPTED
        now = time.monotonic()
        if self.sink and now - self._last >= 0.5:
            self._last = now
            last = state.history[-1] if state.history else {}
            self.sink(("progress", self.index, state.updates, last.get("val_accuracy", last.get("val_loss"))))
        return None


def _dataset(config: RunConfig) -> Dataset:
    """The data split of this seed, loaded once per process. Every seed splits the data its own way."""
    key = f"{config.data.model_dump_json()}|{config.seed}"
    if "given" in _DATA:
        return _DATA["given"]
    if key not in _DATA:
        _DATA[key] = load_data(config.data, seed=config.seed)
    return _DATA[key]


def execute(job: Job, sink: Callable[[tuple], None] | None = None, stop=None) -> dict:
    """Train one job; return its grid coordinates, summary, history and exact config as one flat record.

    An exception inside the run becomes a record with stop_reason `error` and the message, so one failing
    configuration does not lose the others.
    """
    record = job.describe()
    try:
        run = train(None, _dataset(job.config), job.config, callbacks=[_Reporter(job.index, sink, stop)])
    except Exception as err:  # recorded, shown in the table and the report; the grid goes on
        return {**record, "stop_reason": "error", "error": f"{type(err).__name__}: {err}"}
    return {
        **run.summary(),
        **record,
        "history": run.history,
        "run_config": job.config.model_dump(mode="json"),
        "pid": os.getpid(),
    }


def _init_worker(sink_queue, stop, data: Dataset | None) -> None:
    global _SINK, _STOP
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and sets `stop`
    _SINK, _STOP = sink_queue.put, stop
    if data is not None:
        _DATA["given"] = data


def _execute_in_worker(job: Job) -> dict | None:
    if _STOP is not None and _STOP.is_set():  # queued before Ctrl-C, picked up after: never started
        return None
    return execute(job, _SINK, _STOP)


class LiveDisplay:
    """A rich Live view: a bar of runs done, counts of done/running/left, and one line per running run."""

    def __init__(self, jobs: Sequence[Job], n_train: int, title: str, console: Console | None = None):
        self.jobs = {j.index: j for j in jobs}
        self.expected = {j.index: expected_updates(j, n_train) for j in jobs}
        self.running: dict[int, tuple[int, float | None]] = {}
        self.done = 0
        self.failed = 0
        self.note = ""
        self.bar = RichProgress(
            TextColumn("[bold]runs"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
        )
        self.task = self.bar.add_task("runs", total=len(jobs), counts="")
        self.title = title
        self.live = Live(self, console=console or Console(stderr=True), refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.refresh()
        self.live.__exit__(*exc)
        if not self.live.console.is_terminal:  # rich leaves the last frame without its newline there
            self.live.console.line()

    def handle(self, event: tuple) -> None:
        kind, index, updates, metric = event
        if index in self.jobs and kind in ("start", "progress"):
            self.running[index] = (updates, metric)

    def finished(self, record: dict) -> None:
        self.running.pop(record["index"], None)
        self.done += 1
        self.failed += record.get("stop_reason") == "error"

    def __rich__(self) -> Group:
        left = len(self.jobs) - self.done - len(self.running)
        counts = f"done {self.done} · running {len(self.running)} · left {max(left, 0)}"
        if self.failed:
            counts += f" · [red]failed {self.failed}[/]"
        self.bar.update(self.task, completed=self.done, counts=counts)
        table = Table(show_header=False, box=None, padding=(0, 2))
        for index, (updates, metric) in sorted(self.running.items()):
            job = self.jobs[index]
            total = self.expected[index]
            table.add_row(
                f"  {job.label} (seed {job.seed})",
                f"update {updates:,}" + (f"/{total:,}" if total else ""),
                "" if metric is None else f"val {metric:.3f}",
            )
        parts = [self.title, self.bar, table]
        if self.note:
            parts.append(f"[yellow]{self.note}")
        return Group(*parts)


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    *,
    data: Dataset | None = None,
    display: LiveDisplay | None = None,
    on_result: Callable[[dict], None] | None = None,
) -> tuple[list[dict], bool]:
    """Run every job; return (records in grid order, whether Ctrl-C cut the grid short).

    Longer jobs go first (online, then mini-batch, then full-batch) so the workers finish together.
    """
    order = sorted(jobs, key=lambda j: ({"online": 0, "mini-batch": 1}.get(j.strategy, 2), j.index))
    records: list[dict] = []

    def collect(record: dict) -> None:
        records.append(record)
        if display:
            display.finished(record)
        if on_result:
            on_result(record)

    if data is not None:
        _DATA["given"] = data
    try:
        if workers <= 1:
            interrupted = _run_here(order, display, collect)
        else:
            interrupted = _run_in_workers(order, workers, data, display, collect)
    finally:
        _DATA.pop("given", None)
    return sorted(records, key=lambda r: r["index"]), interrupted


def _run_here(order: Sequence[Job], display: LiveDisplay | None, collect) -> bool:
    for job in order:
        try:
            record = execute(job, display.handle if display else None)
            collect(record)  # collect appends first: Ctrl-C during its on_result save keeps the record
        except KeyboardInterrupt:  # outside train(), which turns Ctrl-C into an `interrupted` run
            return True
        if record["stop_reason"] == StopReason.INTERRUPTED:
            return True
    return False


def _context():
    """forkserver where available, else spawn; never a plain fork of this process, whose torch thread pools
    and rich display thread do not survive a fork safely. The fork server imports torch and cadence once
    and forks each worker from that, so workers start without paying the imports again."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # load_data imports sklearn.datasets lazily; preloaded, no worker pays for it on its first job
        ctx.set_forkserver_preload(["cadence.comparison.runner", "sklearn.datasets"])
        return ctx
    return mp.get_context("spawn")


def _run_in_workers(order: Sequence[Job], workers: int, data, display: LiveDisplay | None, collect) -> bool:
    ctx = _context()
    sink, stop = ctx.Queue(), ctx.Event()
    executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(sink, stop, data))
    futures: dict[Future, Job] = {executor.submit(_execute_in_worker, job): job for job in order}
    pending = set(futures)
    interrupted = False

    def drain() -> None:
        while True:
            try:
                event = sink.get_nowait()
            except queue_module.Empty:
                return
            if display:
                display.handle(event)

    collected: set[Future] = set()

    def gather(done) -> None:
        drain()
        for future in sorted(done, key=lambda f: futures[f].index):
            if future.cancelled() or future in collected:
                continue
            collected.add(future)
            error = future.exception()
            if error is None:
                if future.result() is not None:
                    collect(future.result())
            else:  # the worker process itself died
                job = futures[future]
                collect({**job.describe(), "stop_reason": "error", "error": f"{type(error).__name__}: {error}"})

    try:
        while pending:
            done: set[Future] = set()
            try:
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                gather(done)  # inside the guard: Ctrl-C while on_result saves must not escape either
            except KeyboardInterrupt:
                pending |= {f for f in done if f not in collected}  # gathered on the next pass
                interrupted = True
                stop.set()
                for future in pending:
                    future.cancel()
                if display:
                    display.note = (
                        "Ctrl-C: stopping the running runs at their next update; keeping finished results"
                    )
                continue
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        drain()
    return interrupted
