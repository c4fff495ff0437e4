"""Prequential (test-then-train) metrics over a stream: overall and over a sliding window of samples.

Fed in batches of per-sample results; its state is plain numbers and arrays, so a checkpoint keeps it.
"""

from __future__ import annotations

import numpy as np


class Prequential:
    """Running loss and accuracy (classification) or squared/absolute error (regression), overall and
    over the last `window` samples. Accuracy counts a sample correct when the prediction made before it
    was trained on equals its label."""

    def __init__(self, task: str, window: int):
        self.task, self.window = task, window
        self.n = 0
        self.sum_loss = 0.0
        self.sum_hit = 0.0  # correct predictions (classification) or absolute errors (regression)
        self._loss = np.zeros(window, np.float64)
        self._hit = np.zeros(window, np.float64)

    def update(self, losses: np.ndarray, hits: np.ndarray) -> None:
        """Add samples: their losses and, per sample, 1.0/0.0 for correct (classification) or |error|."""
        k = len(losses)
        if k == 0:
            return
        self.sum_loss += float(losses.sum())
        self.sum_hit += float(hits.sum())
        if k >= self.window:
            losses, hits, start, k2 = (
                losses[-self.window :],
                hits[-self.window :],
                (self.n + k - self.window),
                self.window,
            )
        else:
            start, k2 = self.n, k
        idx = (start + np.arange(k2)) % self.window
        self._loss[idx] = losses
        self._hit[idx] = hits
        self.n += k

    def values(self) -> dict[str, float]:
        """accuracy/loss (or mse/mae) overall and as window_*; NaN before the first sample."""
        w = min(self.n, self.window)
        nan = float("nan")
        loss = self.sum_loss / self.n if self.n else nan
        wloss = float(self._loss[:w].sum() / w) if w else nan
        hit = self.sum_hit / self.n if self.n else nan
        whit = float(self._hit[:w].sum() / w) if w else nan
        if self.task == "classification":
            return {"loss": loss, "accuracy": hit, "window_loss": wloss, "window_accuracy": whit}
        return {"mse": loss, "mae": hit, "window_mse": wloss, "window_mae": whit}

    def state_dict(self) -> dict:
        return {
            "n": self.n,
            "sum_loss": self.sum_loss,
            "sum_hit": self.sum_hit,
            "loss": self._loss.copy(),
            "hit": self._hit.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.n, self.sum_loss, self.sum_hit = int(state["n"]), float(state["sum_loss"]), float(state["sum_hit"])
        self._loss[:] = np.asarray(state["loss"], np.float64)
        self._hit[:] = np.asarray(state["hit"], np.float64)


def window_metric(task: str) -> tuple[str, bool]:
    """The windowed metric a quality gate compares, and whether higher is better."""
    return ("window_accuracy", True) if task == "classification" else ("window_mse", False)
