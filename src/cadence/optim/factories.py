"""Optimizers by name, built from torch.optim (schedules live in schedules.py, penalties in penalties.py)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from cadence.config import DEFAULT_LRS, OptimizerConfig, Strategy


def build_optimizer(params: Iterable[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    """The torch.optim optimizer named by `config.name`.

    gd/sgd: theta <- theta - lr*g (gd is sgd meant for the full-batch strategy);
    momentum: v <- m*v + g, theta <- theta - lr*v (torch's form of v <- m*v + lr*g);
    nesterov: torch's reparametrized Nesterov; adagrad, rmsprop, adam, adamw: torch.optim's.
    `weight_decay` is torch's coupled L2 (g <- g + wd*theta) except for adamw, where it is decoupled
    (theta <- theta*(1 - lr*wd) before the Adam step). The README table and tests/optim/test_optimizers.py
    give each rule and where torch's form differs from the textbook one.
    """
    if config.lr is None:  # a bare OptimizerConfig, not resolved by a RunConfig for its strategy
        config = config.model_copy(update={"lr": DEFAULT_LRS[Strategy.MINI_BATCH][config.name]})
    c = config
    wd = c.weight_decay or 0.0
    if c.name in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum or 0.0, weight_decay=wd)
    if c.name in ("momentum", "nesterov"):
        m = 0.9 if c.momentum is None else c.momentum
        return torch.optim.SGD(params, lr=c.lr, momentum=m, nesterov=c.name == "nesterov", weight_decay=wd)
    if c.name == "adagrad":
        return torch.optim.Adagrad(params, lr=c.lr, eps=c.eps, weight_decay=wd)
    if c.name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=c.lr, alpha=c.alpha, eps=c.eps, weight_decay=wd, momentum=c.momentum or 0.0
        )
    if c.name == "adam":
        return torch.optim.Adam(params, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=wd)
    if c.name == "adamw":
        return torch.optim.AdamW(
            params,
            lr=c.lr,
            betas=c.betas,
            eps=c.eps,
            weight_decay=0.01 if c.weight_decay is None else c.weight_decay,
        )
    raise AssertionError(c.name)  # config.py's Literal makes this unreachable
