"""Random image augmentation per batch on tensors (torch ops only, no torchvision): shift, flip, rotation.

Draws depend only on (seed, epoch, position) of the update, so a resumed run augments exactly as an
uninterrupted one, and splitting an update into chunks does not change what each sample gets.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cadence.config import AugmentConfig
from cadence.errors import ConfigError


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width) of samples of `input_shape`: flat square images, (H, W) or (C, H, W).

    Raises:
        ConfigError: the samples are not images (e.g. 13 tabular features).
    """
    if len(input_shape) == 1 and math.isqrt(input_shape[0]) ** 2 == input_shape[0] and input_shape[0] > 1:
        side = math.isqrt(input_shape[0])
        return (1, side, side)
    if len(input_shape) == 2:
        return (1, *input_shape)
    if len(input_shape) == 3:
        return tuple(input_shape)
    raise ConfigError(
        f"augmentation needs image samples (flat square images, (H, W) or (C, H, W)); got samples of shape "
        f"{input_shape}. Fix: turn augment off (augment.shift=0, flip=false, rotate=0) for this data."
    )


class Augmenter:
    """Applies random shift (zero fill: the same as pad-and-random-crop), horizontal flip and rotation.

    Works in the raw pixel space: standardized inputs are un-standardized with (mean, std) first, so the
    fill is a black pixel and per-pixel statistics move with the pixels, then standardized again.
    """

    def __init__(
        self,
        config: AugmentConfig,
        input_shape: tuple[int, ...],
        seed: int = 0,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ):
        self.config = config
        self.shape = image_shape(input_shape)
        self.seed = seed
        self.mean = self._as_image(mean)
        self.std = self._as_image(std)

    def _as_image(self, stat: torch.Tensor | None) -> torch.Tensor | None:
        if stat is None:
            return None
        return stat.reshape(1, *self.shape) if stat.numel() == math.prod(self.shape) else stat.reshape(())

    def draw(self, n: int, epoch: int, position: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(angles in radians, integer shifts (dx, dy), flip mask) for the n samples of one update."""
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_000_000_007 + position)
        c = self.config
        angles = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(c.rotate)
        shifts = torch.randint(-c.shift, c.shift + 1, (n, 2), generator=gen)
        flips = (torch.rand(n, generator=gen) < 0.5) & c.flip
        return angles, shifts, flips

    def __call__(self, x: torch.Tensor, epoch: int, position: int, n: int, offset: int = 0) -> torch.Tensor:
        """Augment `x`, the samples [offset, offset + len(x)) of an update of `n` samples."""
        angles, shifts, flips = (d[offset : offset + len(x)] for d in self.draw(n, epoch, position))
        return self.apply(x, angles, shifts, flips)

    def apply(
        self, x: torch.Tensor, angles: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor
    ) -> torch.Tensor:
        """Flip where `flips`, rotate by `angles` (radians; +pi/2 is torch.rot90(k=1) of the (H, W) image) and
        move by `shifts` (dx columns right, dy rows down), one of each per sample."""
        c_, h, w = self.shape
        img = x.reshape(len(x), c_, h, w)
        if self.std is not None:
            img = img * self.std + self.mean
        img = torch.where(flips[:, None, None, None], img.flip(-1), img)
        if self.config.shift or self.config.rotate:
            cos, sin = torch.cos(angles), torch.sin(angles)
            # affine_grid maps output to input coordinates in [-1, 1]; moving content by (dx, dy) pixels
            # samples the input at -2*d/size; h/w factors keep rotations rigid on non-square images.
            theta = torch.stack(
                [
                    torch.stack([cos, -sin * h / w, -2 * shifts[:, 0] / w], dim=1),
                    torch.stack([sin * w / h, cos, -2 * shifts[:, 1] / h], dim=1),
                ],
                dim=1,
            ).to(img.dtype)
            grid = F.affine_grid(theta, list(img.shape), align_corners=False)
            mode = "bilinear" if self.config.rotate else "nearest"  # integer shifts: exact pixel copies
            img = F.grid_sample(img, grid, mode=mode, padding_mode="zeros", align_corners=False)
        if self.std is not None:
            img = (img - self.mean) / self.std
        return img.reshape(x.shape)
