"""Checkpointing: when to write a checkpoint during a run. What goes in one is engine/resume.py's; how
it is written atomically is engine/checkpoint.py's."""

from __future__ import annotations

import time
from pathlib import Path

from cadence.engine import checkpoint
from cadence.engine.events import Callback, TrainState
from cadence.engine.resume import capture
from cadence.errors import ConfigError


class Checkpointing(Callback):
    """Write a checkpoint into `<run_dir>/checkpoints` every `every_updates` updates and/or every
    `every_seconds` seconds, at run start (when none exists for that point yet) and at run end; keep the
    newest `keep`. Resume with `train(..., resume_from=run_dir)` or `cadence train --resume RUN_DIR`.

    Checkpoints are taken between updates only, so a resumed run continues the same update sequence.
    A checkpoint that cannot be written (full disk, read-only directory) raises CheckpointError naming
    the path and the reason; the previous checkpoint is left intact.

    In a data-parallel job every process runs this callback (each gives its RNG state, and decisions that
    read the clock or the disk are rank 0's), and rank 0 alone writes.
    """

    def __init__(
        self,
        run_dir: str | Path,
        every_updates: int | None = None,
        every_seconds: float | None = None,
        keep: int = 3,
    ):
        for name, value in (("every_updates", every_updates), ("every_seconds", every_seconds)):
            if value is not None and not value > 0:
                raise ConfigError(
                    f"checkpoint {name} = {value!r} must be > 0. Fix: pass a positive number, or leave it "
                    "unset to checkpoint only at run start and end."
                )
        if not (isinstance(keep, int) and keep >= 1):
            raise ConfigError(f"checkpoint keep = {keep!r} must be an integer >= 1 (checkpoints to keep).")
        self.run_dir = Path(run_dir)
        self.directory = self.checkpoint_dir = checkpoint.checkpoints_dir(run_dir)
        self.every_updates = every_updates
        self.every_seconds = every_seconds
        self.keep = keep
        self.written: list[Path] = []
        self._history_len = 0
        self._last = time.monotonic()

    def settings(self) -> dict:
        return {"every_updates": self.every_updates, "every_seconds": self.every_seconds, "keep": self.keep}

    def on_run_start(self, state: TrainState) -> None:
        state.checkpoint_dir = self.directory
        self._history_len = len(state.history)
        self._last = time.monotonic()
        due = False
        if _writes(state):
            checkpoint.remove_temp(self.directory)  # leftovers of a write that was killed midway
            names = checkpoint.checkpoint_names(self.directory)
            newest = checkpoint.peek(names[0]) if names else None
            due = newest is None or newest.get("updates") != state.updates
        if _decide(state, due, "deciding on a run-start checkpoint"):
            self._save(state)  # a point to resume or roll back to before the first update

    def on_update_end(self, state: TrainState) -> None:
        self._history_len = len(state.history)
        due = bool(self.every_updates and state.updates % self.every_updates == 0)
        if self.every_seconds:  # the clock: rank 0's decides
            due = _decide(state, due or time.monotonic() - self._last >= self.every_seconds, "timing a checkpoint")
        if due:
            self._save(state)
        return None

    def on_run_end(self, state: TrainState, run) -> None:
        # The history record made after the loop (of a partial period) is left out: a resumed run makes
        # its own when it ends, and the losses it averages are still pending in the checkpoint.
        self._save(state, run.stop_reason)
        if state.group is not None:  # no process leaves the run (and may resume it) before rank 0 has written
            state.group.barrier("waiting for rank 0 to write the run-end checkpoint")

    def _save(self, state: TrainState, stop_reason=None) -> Path | None:
        weights, meta = capture(state, stop_reason=stop_reason, history_len=self._history_len)
        self._last = time.monotonic()
        if not _writes(state):
            return None
        meta["checkpointing"] = self.settings()
        path = checkpoint.write(self.directory, weights, meta)
        checkpoint.prune(self.directory, self.keep)
        self.written.append(path)
        return path


def _writes(state: TrainState) -> bool:
    """Whether this process writes: always alone, rank 0 of a data-parallel job."""
    return state.group is None or state.group.rank == 0


def _decide(state: TrainState, flag: bool, what: str) -> bool:
    return flag if state.group is None else state.group.decide(flag, what)
