"""Image augmentation per batch: exact shifts with zero fill, flips, rotations; seeded by the update's data
position; independent of chunking; in raw pixel space; and applied by the training step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cadence
from cadence.config import AugmentConfig, DataConfig
from cadence.data.augment import Augmenter, image_shape
from cadence.errors import ConfigError


def images(n: int = 6, side: int = 7) -> torch.Tensor:
    return torch.rand(n, side * side, generator=torch.Generator().manual_seed(0)) + 1.0  # no zeros inside


def test_shift_moves_content_by_whole_pixels_and_fills_with_zeros():
    aug = Augmenter(AugmentConfig(shift=2), (49,), seed=0)
    x = images()
    out = aug(x, epoch=0, position=6, n=6).reshape(6, 7, 7)
    _, shifts, _ = aug.draw(6, 0, 6)
    for i, (dx, dy) in enumerate(shifts.tolist()):
        want = torch.zeros(7, 7)
        src = x[i].reshape(7, 7)
        want[max(dy, 0) : 7 + min(dy, 0), max(dx, 0) : 7 + min(dx, 0)] = src[
            max(-dy, 0) : 7 - max(dy, 0), max(-dx, 0) : 7 - max(dx, 0)
        ]
        torch.testing.assert_close(out[i], want)
    assert shifts.abs().max() <= 2 and (shifts != 0).any()


def test_flip_mirrors_about_half_of_the_samples_horizontally():
    aug = Augmenter(AugmentConfig(flip=True), (49,), seed=0)
    x = images(200)
    out = aug(x, 0, 200, 200).reshape(200, 7, 7)
    src = x.reshape(200, 7, 7)
    flipped = torch.tensor([torch.equal(o, s.flip(-1)) for o, s in zip(out, src, strict=True)])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, src, strict=True)])
    assert torch.all(flipped | kept)
    assert 70 < int(flipped.sum()) < 130


def test_rotation_by_90_degrees_matches_rot90_and_stays_within_the_limit():
    aug = Augmenter(AugmentConfig(rotate=90.0), (49,), seed=0)
    angles, _, _ = aug.draw(500, 0, 0)
    assert float(angles.abs().max()) <= math.pi / 2 and float(angles.abs().max()) > 1.5
    x = images(1)
    quarter = torch.tensor([math.pi / 2])
    out = aug.apply(x, quarter, torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, dtype=torch.bool))
    torch.testing.assert_close(
        out.reshape(7, 7), torch.rot90(x.reshape(7, 7), k=1, dims=(0, 1)), atol=1e-5, rtol=0
    )


def test_draws_depend_only_on_seed_epoch_position_and_not_on_chunking():
    aug = Augmenter(AugmentConfig(shift=2, flip=True, rotate=15), (49,), seed=3)
    x = images(10)
    whole = aug(x, 1, 40, 10)
    torch.testing.assert_close(torch.cat([aug(x[:4], 1, 40, 10, 0), aug(x[4:], 1, 40, 10, 4)]), whole)
    torch.testing.assert_close(aug(x, 1, 40, 10), whole)
    assert not torch.equal(aug(x, 1, 50, 10), whole)
    assert not torch.equal(Augmenter(aug.config, (49,), seed=4)(x, 1, 40, 10), whole)


def test_standardized_inputs_are_augmented_in_raw_pixel_space():
    mean, std = torch.tensor(0.5), torch.tensor(2.0)
    aug = Augmenter(AugmentConfig(shift=3), (49,), seed=0, mean=mean, std=std)
    x = (images(20) - mean) / std
    out = aug(x, 0, 20, 20)
    filled = out[(out - x).abs() > 0]
    assert torch.any(torch.isclose(filled, (0 - mean) / std))  # a black (raw 0) pixel, not a 0 input


def test_tabular_data_cannot_be_augmented():
    assert image_shape((3, 28, 28)) == (3, 28, 28) and image_shape((784,)) == (1, 28, 28)
    with pytest.raises(ConfigError, match="image samples"):
        image_shape((13,))


def test_augmenting_per_feature_standardized_data_is_a_config_error():
    with pytest.raises(ConfigError, match="standardize"):
        cadence.build_config({"data": {"standardize": "feature"}, "augment": {"flip": True}})
    digits = cadence.load_data(DataConfig(limit=100))  # standardize=auto: per feature for digits' 64 columns
    with pytest.raises(ConfigError, match="standardized per feature"):
        cadence.train(None, digits, threads=1, max_updates=1, **{"augment.flip": True})


class Recorder(nn.Module):
    """A linear model that keeps the inputs it was trained on."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.linear(x)


def test_the_training_step_feeds_augmented_batches_to_the_model():
    data = cadence.load_data(DataConfig(limit=300, standardize="global"))
    model = Recorder()
    cadence.train(
        model, data, {"data": {"standardize": "global"}}, threads=1, max_updates=1, batch_size=len(data.x_train),
        **{"augment.flip": True, "strategy.shuffle": False},
    )  # fmt: skip
    seen = model.seen[0]
    assert seen.shape == data.x_train.shape
    flipped = data.x_train.reshape(-1, 8, 8).flip(-1).reshape(-1, 64)
    same = (seen == data.x_train).all(1)
    mirrored = (seen == flipped).all(1) & ~same
    assert torch.all(same | mirrored) and int(mirrored.sum()) > 50
