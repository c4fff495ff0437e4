"""The resident buffer: a ring of rows that stream samples are written into and the engine's updates
index into (never reallocated while the engine lives), with the preprocessing and the per-sample scores
of test-then-train."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cadence.data.streams import Sample


class ResidentBuffer:
    """`capacity` rows of `n_features` (x) and labels (y), filled in ring order."""

    def __init__(self, capacity: int, n_features: int, task: str, center: float = 0.0, scale: float = 1.0):
        self.capacity, self.task, self.center, self.scale = capacity, task, center, scale
        self.x = torch.zeros(capacity, n_features)
        self.y = torch.zeros(capacity, dtype=torch.int64 if task == "classification" else torch.float32)
        self._x, self._y = self.x.numpy(), self.y.numpy()  # views: writing a row costs no tensor call
        self.one = [torch.tensor([i]) for i in range(capacity)]  # one-row index chunks, made once
        self._next = 0

    def put(self, samples: list[Sample]) -> list[int]:
        """Write the samples into the next rows, scaled as x' = (x - center) / scale; their row numbers."""
        start, rows = self._next, []
        for s in samples:
            row = self._next
            self._next = (row + 1) % self.capacity
            self._x[row] = s.x
            if s.y is not None:
                self._y[row] = s.y
            rows.append(row)
        if self.center != 0.0 or self.scale != 1.0:
            end = start + len(samples)
            for a, b in ((start, min(end, self.capacity)), (0, max(0, end - self.capacity))):  # ring: <= 2 slices
                if b > a:
                    block = self._x[a:b]
                    block -= self.center
                    block /= self.scale
        return rows

    def score(self, model: nn.Module, rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample loss and hit of `model` on `rows`: 1/0 for a correct/wrong class, |error| for regression."""
        was = model.training
        with torch.no_grad():
            out = model.eval()(self.x[rows])
        model.train(was)
        y = self.y[rows]
        if self.task == "classification":
            loss = F.cross_entropy(out, y, reduction="none")
            return loss.numpy().astype(np.float64), (out.argmax(1) == y).numpy().astype(np.float64)
        err = out.reshape(-1) - y
        return (err * err).numpy().astype(np.float64), err.abs().numpy().astype(np.float64)
