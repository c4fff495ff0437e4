"""Callbacks the loop notifies: progress bar, checkpointing."""

from cadence.callbacks.checkpointing import Checkpointing
from cadence.callbacks.progress import Progress

__all__ = ["Checkpointing", "Progress"]
