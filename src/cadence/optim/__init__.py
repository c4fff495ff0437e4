"""Factories over torch.optim and torch.optim.lr_scheduler; no optimizer classes of our own."""

from cadence.optim.factories import build_optimizer, build_schedule

__all__ = ["build_optimizer", "build_schedule"]
