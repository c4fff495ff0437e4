"""The resident buffer: a ring of rows that stream samples are written into and the engine's updates
index into (never reallocated while the engine lives), with the preprocessing and the per-sample scores
of test-then-train; and the queue of samples predicted but not yet trained (label delay)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cadence.engine.strategies import Update


class ResidentBuffer:
    """`capacity` rows of `n_features` (x) and labels (y), filled in ring order."""

    def __init__(
        self,
        capacity: int,
        n_features: int,
        task: str,
        center: float | np.ndarray = 0.0,
        scale: float | np.ndarray = 1.0,
    ):
        """`center`, `scale`: one number, or one per feature (float32: an earlier run's standardization)."""
        self.capacity, self.task, self.center, self.scale = capacity, task, center, scale
        self._scaled = not (np.all(np.equal(center, 0.0)) and np.all(np.equal(scale, 1.0)))
        self.x = torch.zeros(capacity, n_features)
        self.y = torch.zeros(capacity, dtype=torch.int64 if task == "classification" else torch.float32)
        self._x, self._y = self.x.numpy(), self.y.numpy()  # views: writing rows costs no tensor call
        # The one-sample update of each row, made once: a poll's updates are then a list lookup per sample.
        self.updates = [Update((torch.tensor([i]),), 1, 0, 0, False) for i in range(capacity)]
        self._next = 0

    def put(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Write rows `x` (k, n_features) with labels `y` into the next k ring rows, scaled as
        x' = (x - center) / scale; return their row numbers. k must not exceed the capacity."""
        k, start = len(x), self._next
        rows = (start + np.arange(k)) % self.capacity
        first = min(k, self.capacity - start)
        for (a, b), part in (((start, start + first), slice(0, first)), ((0, k - first), slice(first, k))):
            if b > a:  # a ring: at most two slices
                block = self._x[a:b]
                block[...] = x[part]
                self._y[a:b] = y[part]
                if self._scaled:  # float32 in place: the bits of artefact.py's (x - mean) / std
                    block -= self.center
                    block /= self.scale
        self._next = (start + k) % self.capacity
        return rows

    def score(self, model: nn.Module, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample loss and hit of `model` on `rows`, in one forward pass: 1/0 for a correct/wrong class,
        |error| for regression."""
        a = int(rows[0])
        if int(rows[-1]) - a + 1 == len(rows):  # consecutive rows (no wrap): a view, no gather
            x, y = self.x[a : a + len(rows)], self.y[a : a + len(rows)]
        else:
            idx = torch.from_numpy(rows)
            x, y = self.x[idx], self.y[idx]
        was = model.training
        with torch.no_grad():
            out = model.eval()(x)
        model.train(was)
        if self.task == "classification":
            loss = F.cross_entropy(out, y, reduction="none")
            return loss.numpy().astype(np.float64), (out.argmax(1) == y).numpy().astype(np.float64)
        err = out.reshape(-1) - y
        return (err * err).numpy().astype(np.float64), err.abs().numpy().astype(np.float64)


class Pending:
    """Samples predicted and not yet trained, in source order: their buffer rows (-1: no label, predict
    only), messages, and the loss and hit of their prediction. `label_delay` holds labelled ones back until
    that many later labelled samples have arrived; an unlabelled one leaves as soon as it is at the head."""

    def __init__(self) -> None:
        self.rows = np.zeros(0, np.int64)
        self.losses = np.zeros(0)
        self.hits = np.zeros(0)
        self.messages: list = []

    def __len__(self) -> int:
        return len(self.messages)

    def push(self, rows: np.ndarray, messages: list, losses: np.ndarray, hits: np.ndarray) -> None:
        if len(self.messages):
            self.rows = np.concatenate([self.rows, rows])
            self.losses, self.hits = np.concatenate([self.losses, losses]), np.concatenate([self.hits, hits])
        else:
            self.rows, self.losses, self.hits = rows, losses, hits
        self.messages += messages

    def pop_ready(self, label_delay: int) -> tuple[np.ndarray, list, np.ndarray, np.ndarray]:
        """(rows, messages, losses, hits) of the samples due now, in order: all up to the last labelled one
        that has `label_delay` labelled ones behind it, and the unlabelled ones right after it."""
        labelled = np.cumsum(self.rows >= 0)
        due = int(labelled[-1]) - label_delay if len(labelled) else 0
        # Everything before the (due + 1)-th labelled sample leaves; it stays, with all after it.
        k = int(np.searchsorted(labelled, max(due, 0) + 1)) if len(labelled) else 0
        out = (self.rows[:k], self.messages[:k], self.losses[:k], self.hits[:k])
        self.rows, self.losses, self.hits = self.rows[k:], self.losses[k:], self.hits[k:]
        self.messages = self.messages[k:]
        return out
