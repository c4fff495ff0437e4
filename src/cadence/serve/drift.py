"""Drift detection on the prequential error stream with river's detectors (ADWIN, Page-Hinkley).

river 0.25 (pinned): `update(x)` returns nothing and sets `drift_detected`. A detector's state is not plain
data and checkpoints never pickle, so a checkpoint keeps the errors since the last detection (at most
MAX_REPLAY) and a restart replays them into a fresh detector: exact for Page-Hinkley (it resets at each
detection), the same window for ADWIN up to its bucket compression.
"""

from __future__ import annotations

import numpy as np

from cadence.config import DriftConfig

MAX_REPLAY = 100_000


class DriftDetector:
    """Feeds per-sample errors to a river detector; returns the indices (within each batch) of detections
    where the error rate rose (Page-Hinkley in mode "up"; ADWIN's estimate after its cut above before)."""

    def __init__(self, config: DriftConfig):
        self.config = config
        self._tail: list[np.ndarray] = []
        self._tail_n = 0
        self._detector = self._new()

    def _new(self):
        from river import drift

        if self.config.detector == "adwin":
            return drift.ADWIN(delta=self.config.delta)
        if self.config.detector == "page-hinkley":
            return drift.PageHinkley(threshold=self.config.threshold, mode="up")  # more errors only
        return None

    @property
    def enabled(self) -> bool:
        return self._detector is not None

    def update(self, errors: np.ndarray) -> list[int]:
        """Feed `errors` (0/1 misclassifications, or absolute errors) in order; the positions of drifts."""
        if self._detector is None or len(errors) == 0:
            return []
        found, start = [], 0
        det = self._detector
        adwin = self.config.detector == "adwin"
        for i, e in enumerate(errors.tolist()):
            before = det.estimation if adwin else 0.0
            det.update(e)
            # ADWIN also fires when the error rate falls (a model still learning): only a rise is drift.
            if det.drift_detected and (not adwin or det.estimation > before):
                found.append(i)
                start = i + 1
        if found:
            self._tail, self._tail_n = [], 0
        kept = errors[start:]
        if len(kept):
            self._tail.append(np.asarray(kept, np.float32))
            self._tail_n += len(kept)
            if self._tail_n > 2 * MAX_REPLAY:  # keep memory flat on a drift-free stream
                joined = np.concatenate(self._tail)[-MAX_REPLAY:]
                self._tail, self._tail_n = [joined], len(joined)
        return found

    def state_dict(self) -> dict:
        tail = np.concatenate(self._tail)[-MAX_REPLAY:] if self._tail else np.zeros(0, np.float32)
        return {"detector": self.config.detector, "errors": tail}

    def load_state_dict(self, state: dict) -> None:
        """A fresh detector fed the saved errors (no reactions: they were handled before the checkpoint)."""
        self._detector = self._new()
        self._tail, self._tail_n = [], 0
        errors = np.asarray(state.get("errors", []), np.float32)
        if self._detector is not None and state.get("detector") == self.config.detector and len(errors):
            for e in errors.tolist():
                self._detector.update(e)
            self._tail, self._tail_n = [errors], len(errors)
