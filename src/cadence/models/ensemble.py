"""Ensemble: K trained models whose predictions are averaged. Training the members is the engine's job
(engine/ensemble.py)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Ensemble(nn.Module):
    """Averages the members' predictions.

    Classification: returns log(mean_k softmax(member_k(x))), the log of the averaged class probabilities,
    so cross-entropy on it is the ensemble's log-loss and argmax its vote. Regression: the mean output.
    """

    def __init__(self, members: Sequence[nn.Module], task: str = "classification"):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = torch.stack([m(x) for m in self.members])
        if self.task == "classification":
            return torch.logsumexp(torch.log_softmax(outs, dim=-1), dim=0) - torch.log(torch.tensor(len(outs)))
        return outs.mean(dim=0)
