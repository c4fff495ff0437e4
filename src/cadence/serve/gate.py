"""The quality gate before publishing: a new snapshot replaces the served one only when its windowed metric
is not worse than the served snapshot's, on the same recent samples, by more than a tolerance."""

from __future__ import annotations

import numpy as np

from cadence.metrics.streaming import Prequential, window_metric

EVERY = 4  # then one poll in four: a second forward pass on every poll costs about a fifth of the throughput
MIN_SAMPLES = 100  # compared samples before a verdict; every poll is scored until there are this many


class Gate:
    """Scores of the served snapshot and of the learner on the same samples since the last publish."""

    def __init__(self, task: str, window: int, tolerance: float):
        self.task, self.window, self.tolerance = task, window, tolerance
        self.metric, self.higher_is_better = window_metric(task)
        self.polls = 0
        self.reset()

    def reset(self) -> None:
        """A new snapshot is served: compare against it from now on."""
        self.served = Prequential(self.task, self.window)
        self.ours = Prequential(self.task, self.window)

    def due(self) -> bool:
        """Whether this poll is one the served snapshot is scored on."""
        self.polls += 1
        return self.served.n < self.needed or self.polls % EVERY == 0

    @property
    def needed(self) -> int:
        return min(MIN_SAMPLES, self.window)

    def observe(self, served: tuple[np.ndarray, np.ndarray], ours: tuple[np.ndarray, np.ndarray]) -> None:
        """(losses, hits) of the served snapshot and of the learner on the same samples."""
        self.served.update(*served)
        self.ours.update(*ours)

    def verdict(self) -> str:
        """ "publish" unless the learner is worse than the served snapshot by more than the tolerance
        ("hold"); "wait" while fewer than MIN_SAMPLES samples have been compared since the last publish."""
        if self.served.n < self.needed:
            return "wait"
        ours, theirs = self.ours.values()[self.metric], self.served.values()[self.metric]
        worse = theirs - ours if self.higher_is_better else ours - theirs
        return "hold" if worse > self.tolerance + 1e-12 else "publish"  # 1e-12: a tie is not worse

    def state_dict(self) -> dict:
        return {"polls": self.polls, "served": self.served.state_dict(), "ours": self.ours.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.polls = int(state["polls"])
        self.served.load_state_dict(state["served"])
        self.ours.load_state_dict(state["ours"])
