"""Faults during a run: SIGINT/SIGTERM become a clean stop, and non-finite updates follow a policy.

The Guard hands the loop its runs of updates (from the state's position, so a skip or a rollback moves
where they continue) and decides what a non-finite update means under `stop.on_nonfinite`: `stop` ends the
run as diverged with the last good weights; `skip` drops the update (weights bitwise unchanged) and counts
it, diverged after `max_skips` in a row; `rollback` restores the newest checkpoint, scales the lr by
`rollback_lr_factor` and replays, skipping the offending update. Checkpoint files are checkpoint.py's; what
is restored is resume.py's.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from cadence.engine import checkpoint, resume
from cadence.engine.events import TrainState
from cadence.engine.stopping import StopReason
from cadence.engine.strategies import Update, epoch_block
from cadence.errors import ConfigError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Guard:
    """Owns the signal handlers and the non-finite policy for one call of train().

    Raises:
        ConfigError: `rollback` while no callback writes checkpoints (state.checkpoint_dir is None).
    """

    def __init__(self, state: TrainState):
        if state.config.stop.on_nonfinite == "rollback" and state.checkpoint_dir is None:
            raise ConfigError(
                "stop.on_nonfinite = 'rollback' needs checkpoints to roll back to, and none are written. "
                "Fix: pass --checkpoint-every N (or a Checkpointing callback), or use 'skip' or 'stop'."
            )
        self.state = state
        self.signal: int | None = None
        self.message = ""
        self._previous: dict[int, object] = {}
        self._in_a_row = 0
        self._last_bad_at = -1  # state.updates at the last non-finite update
        self._rollbacks: dict[str, int] = {}  # checkpoint path -> rollbacks to it
        self._bad: list[list[int]] = []  # [epoch, position] of every update rolled back over

    # --- signals ---------------------------------------------------------------------------------------

    @contextmanager
    def signals(self) -> Iterator[Guard]:
        """SIGINT and SIGTERM become a flag for the block (a clean stop after the update in progress)."""
        self.catch_signals()
        try:
            yield self
        finally:
            self.release_signals()

    def catch_signals(self) -> Guard:
        """Catch SIGINT and SIGTERM until release_signals() (main thread only: Python allows handlers
        nowhere else)."""
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def release_signals(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame) -> None:
        # Only a flag: the update in progress finishes, so weights and optimizer state stay consistent.
        self.signal = signum

    def interrupted(self) -> StopReason | None:
        """INTERRUPTED once SIGINT or SIGTERM has arrived."""
        if self.signal is None:
            return None
        self.message = f"stopped by {signal.Signals(self.signal).name} after update {self.state.updates}"
        return StopReason.INTERRUPTED

    # --- the updates, rewindable -----------------------------------------------------------------------

    def take(self, limit: int) -> Sequence[Update]:
        """The next run of consecutive updates from the state's position: at most `limit`, within one epoch,
        stepping past those rolled back over. Read from the state each time, so after a skip or a rollback
        the next run starts where the state now is. Empty for a resumed run that had finished."""
        s = self.state
        if s.stop_reason is not None:
            return ()
        while True:
            block = epoch_block(s.config.strategy, s.n_train, s.config.seed, *s.next_position())[:limit]
            bad = [p for e, p in s.skipped_positions if e == block.epoch and block.start < p <= block.stop]
            if not bad:
                return block
            first = (min(bad) - block.start - 1) // block.size  # the update that ends at that position
            if first:
                return block[:first]
            self._advance(block[0])

    def _advance(self, update: Update) -> None:
        """Move the data position past an update that was not applied."""
        s = self.state
        s.epoch, s.position = update.epoch, update.position
        s.epochs_done += update.epoch_end

    # --- non-finite updates ----------------------------------------------------------------------------

    def nonfinite(self, update: Update) -> StopReason | None:
        """Apply `stop.on_nonfinite` to an update whose loss or gradients were not finite (it was not
        applied). Returns a StopReason to end the run, or None to go on."""
        s, c = self.state, self.state.config.stop
        self._in_a_row = self._in_a_row + 1 if self._last_bad_at == s.updates else 1
        self._last_bad_at = s.updates
        where = f"update {s.updates + 1} (epoch {update.epoch}, samples up to {update.position})"
        if c.on_nonfinite == "stop":
            return StopReason.DIVERGED
        if c.on_nonfinite == "skip":
            s.skipped_updates += 1
            self._advance(update)
            if self._in_a_row >= c.max_skips:
                self.message = (
                    f"{self._in_a_row} non-finite updates in a row (stop.max_skips), the last at {where}; "
                    "skipped updates left the weights unchanged. Fix: lower the learning rate or clip gradients."
                )
                return StopReason.DIVERGED
            return s.stopping.budget(s.epochs_done, s.updates, s.samples, s.seconds) if s.stopping else None
        return self._rollback(update, where)

    def _rollback(self, update: Update, where: str) -> StopReason | None:
        s, c = self.state, self.state.config.stop
        ckpt = checkpoint.latest(s.checkpoint_dir)
        if ckpt is None:
            self.message = f"non-finite at {where} and no valid checkpoint in {s.checkpoint_dir} to roll back to"
            return StopReason.DIVERGED
        times = self._rollbacks[str(ckpt.path)] = self._rollbacks.get(str(ckpt.path), 0) + 1
        if times > c.max_skips:
            self.message = f"rolled back to {ckpt.path} {times - 1} times (stop.max_skips) and still non-finite"
            return StopReason.DIVERGED
        self._bad.append([update.epoch, update.position])
        resume.restore(ckpt, s)
        new = [p for p in self._bad if p not in s.skipped_positions]
        s.skipped_positions += new
        s.skipped_updates += len(new)
        scale_lr(s, c.rollback_lr_factor**times)
        return None


def scale_lr(state: TrainState, factor: float) -> None:
    """Multiply the learning rate by `factor` through the schedule, so its next step does not undo it."""
    state.scheduler.scale(factor)
    state.lr = state.optimizer.param_groups[0]["lr"]
