"""train_ensemble: K members with seeds seed..seed+K-1 on one split, averaged; train() refuses K > 1."""

from __future__ import annotations

import pytest
import torch

import cadence
from cadence.config import DataConfig
from cadence.errors import ConfigError


def test_ensemble_members_differ_by_seed_and_the_average_beats_their_mean_log_loss():
    data = cadence.load_data(DataConfig(limit=600))
    result = cadence.train_ensemble(data=data, members=3, threads=1, optimizer="adam", lr=1e-3, max_epochs=4)
    assert [r.config.seed for r in result.members] == [0, 1, 2]
    w = [r.model[1].weight for r in result.members]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    # -log is convex: the log-loss of averaged probabilities is at most the members' mean log-loss (Jensen).
    member_losses = [r.test_metrics["test_loss"] for r in result.members]
    assert result.test_metrics["test_loss"] <= sum(member_losses) / 3 + 1e-6
    summary = result.summary()
    assert summary["ensemble"]["members"] == 3 and len(summary["members"]) == 3
    assert summary["ensemble"]["test_accuracy"] == result.test_metrics["test_accuracy"]


def test_train_with_more_than_one_member_points_to_train_ensemble():
    with pytest.raises(ConfigError, match="train_ensemble"):
        cadence.train(max_epochs=1, **{"ensemble.members": 2})
