"""Callbacks the loop notifies: progress bar, and (later) checkpointing."""

from cadence.callbacks.progress import Progress

__all__ = ["Progress"]
