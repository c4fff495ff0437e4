"""The Callback protocol the loop calls: four events, read-only state, and a way to ask to stop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cadence.config import RunConfig

if TYPE_CHECKING:
    from cadence.engine.run import Run
    from cadence.engine.stopping import StopReason


@dataclass
class TrainState:
    """What the loop knows at a point in the run. Callbacks read it; only the loop writes it."""

    config: RunConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    n_train: int
    updates_per_epoch: int
    epoch: int = 0  # the epoch the last update belonged to
    epochs_done: int = 0
    position: int = 0  # samples of the current epoch already trained
    updates: int = 0
    samples: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    lr: float = 0.0
    history: list[dict] = field(default_factory=list)
    skipped_updates: int = 0
    # Resume and fault handling (engine/checkpoint.py, engine/faults.py):
    losses: list[torch.Tensor] = field(default_factory=list)  # train losses since the last evaluation
    stopping: Any = None  # the run's Stopping, whose memory (best metric, patience) a checkpoint keeps
    stop_reason: StopReason | None = None  # set when resuming a run that had already finished
    skipped_positions: list[list[int]] = field(default_factory=list)  # [epoch, position] of skipped updates
    checkpoint_dir: Path | None = None  # where a Checkpointing callback writes; rollback reads it
    data_sha256: str = ""  # fingerprint of the training data, so a resume can tell it changed
    group: Any = None  # a data-parallel job's distributed.Group (rank, size); None for one process

    def next_position(self) -> tuple[int, int]:
        """(epoch, position) of the next update: the start of the next epoch once this one has ended."""
        return (self.epoch + 1, 0) if self.epochs_done > self.epoch else (self.epoch, self.position)


class Callback:
    """Override any of the four events. `on_update_end` and `on_epoch_end` may return a StopReason.

    A callback that overrides `on_update_end` but does not need the weights of every single update (a
    progress bar) sets `exact_updates = False`: the fast engine may then apply a run of updates before
    calling it once, with the counters of the run's last update.
    """

    exact_updates: bool = True
    # Where this callback writes checkpoints, known before the run starts: the `rollback` fault policy is
    # checked against it before any callback runs.
    checkpoint_dir: Path | None = None

    def on_run_start(self, state: TrainState) -> None:
        pass

    def on_update_end(self, state: TrainState) -> StopReason | None:
        return None

    def on_epoch_end(self, state: TrainState) -> StopReason | None:
        return None

    def on_run_end(self, state: TrainState, run: Run) -> None:
        pass
