"""Shared fixtures: the bundled digits data set, split once per session."""

from __future__ import annotations

import pytest
import torch

from cadence.config import DataConfig
from cadence.data.datasets import from_arrays, load_data


@pytest.fixture(scope="session")
def digits():
    """Digits, standardized, seed 0: 1257 train / 180 val / 360 test."""
    return load_data(DataConfig(name="digits"), seed=0)


@pytest.fixture
def blobs():
    """A small, easy 3-class problem: 300 samples, 4 features."""
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    y = torch.arange(300) % 3
    x = centers[y] + 0.5 * torch.randn(300, 4, generator=gen)
    return from_arrays(x.numpy(), y.numpy(), config=DataConfig(val_fraction=0.2, test_fraction=0.2))
