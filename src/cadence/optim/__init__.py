"""Factories over torch.optim and torch.optim.lr_scheduler, L1/L2 penalties; no optimizer classes of our own."""

from cadence.optim.factories import build_optimizer
from cadence.optim.penalties import penalized_parameters, penalty
from cadence.optim.schedules import ExponentialRamp, Schedule, build_schedule, time_factor

__all__ = [
    "ExponentialRamp",
    "Schedule",
    "build_optimizer",
    "build_schedule",
    "penalized_parameters",
    "penalty",
    "time_factor",
]
