"""Builds, from the config and the data, what the loop needs beyond model and optimizer, checked before the
first update: the StepOptions of every update (penalties, clipping, bf16, augmentation) and the lr schedule."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from cadence.config import RunConfig
from cadence.data.augment import Augmenter
from cadence.data.datasets import Dataset
from cadence.engine.evaluate import lower_is_better, metric_names
from cadence.engine.step import StepOptions
from cadence.engine.strategies import budget_updates, updates_per_epoch
from cadence.errors import ConfigError
from cadence.optim import Schedule, build_schedule, penalized_parameters
from cadence.optim.schedules import ScheduleWarning, horizon_warnings


def step_options(config: RunConfig, model: nn.Module, data: Dataset) -> StepOptions:
    """StepOptions for `config`.

    Raises:
        ConfigError: augmentation on data that are not images or are standardized per feature.
    """
    reg = config.regularization
    augment = None
    if config.augment.enabled:
        if data.std is not None and data.std.numel() > 1:
            raise ConfigError(
                "augment moves pixels to other positions, but this data set is standardized per feature "
                "(each pixel by its own std, near 0 at the borders), so moved pixels land far out of range. "
                "Fix: set data.standardize to 'global' (or 'none') when augmenting."
            )
        augment = Augmenter(config.augment, data.input_shape, config.seed, data.mean, data.std)
    return StepOptions(
        penalized=tuple(penalized_parameters(model, reg.exclude)) if (reg.l1 or reg.l2) else (),
        l1=reg.l1,
        l2=reg.l2,
        clip_norm=config.optimizer.clip_norm,
        clip_value=config.optimizer.clip_value,
        autocast=torch.bfloat16 if config.precision == "bf16" else None,
        augment=augment,
    )


def run_schedule(config: RunConfig, optimizer: torch.optim.Optimizer, data: Dataset) -> Schedule:
    """The lr schedule of the run: per-epoch steps and cosine's default T_max come from the budget.

    Raises:
        ConfigError: a plateau metric the evaluations will not record, or cosine without any budget.
    """
    n = len(data.x_train)
    s = config.schedule
    mode = None
    if s.plateau is not None or s.name == "plateau":
        metric = s.plateau.metric if s.plateau else "val_loss"
        allowed = ["train_loss", *(metric_names(data.task) if len(data.x_val) else [])]
        if metric not in allowed:
            raise ConfigError(
                f"schedule.plateau.metric = {metric!r} is not recorded at evaluations of this {data.task} run"
                f"{' (no validation split)' if not len(data.x_val) else ''}. Allowed: {', '.join(allowed)}."
            )
        chosen = s.plateau.mode if s.plateau else "auto"
        mode = chosen if chosen != "auto" else ("min" if lower_is_better(metric) else "max")
    per_epoch, budget = updates_per_epoch(config.strategy, n), budget_updates(config, n)
    for message in horizon_warnings(s, per_epoch, budget):
        warnings.warn(message, ScheduleWarning, stacklevel=3)
    return build_schedule(optimizer, s, per_epoch, budget, mode)
