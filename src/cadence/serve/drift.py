"""Drift detection on the prequential error stream with river's detectors (ADWIN, Page-Hinkley).

river 0.25 (pinned): `update(x)` returns nothing and sets `drift_detected`, and both detectors start afresh
on the update after a detection. Checkpoints never pickle, so their state is kept as plain data: for
Page-Hinkley its few numbers (exact); for ADWIN, whose window lives in river's Rust helper with no way to
read it, the errors since its last detection (at most MAX_REPLAY), replayed into a fresh detector on
restore: exact too while that tail is whole, as a detection empties the window.
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
        reset = False
        for i, e in enumerate(errors.tolist()):
            before = det.estimation if adwin else 0.0
            det.update(e)
            if det.drift_detected:  # river starts the detector afresh at the next update: so does the tail
                reset, start = True, i + 1
                # ADWIN also fires when the error rate falls (a model still learning): only a rise is drift.
                if not adwin or det.estimation > before:
                    found.append(i)
        if reset:
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
        out = {"detector": self.config.detector}
        if self.config.detector == "page-hinkley":
            d = self._detector
            out["page_hinkley"] = {"n": d._x_mean.n, "mean": d._x_mean._mean, "drift": d.drift_detected}
            out["page_hinkley"] |= {k: getattr(d, f"_{k}") for k in _PH_SUMS}
        else:
            tail = np.concatenate(self._tail)[-MAX_REPLAY:] if self._tail else np.zeros(0, np.float32)
            out["errors"] = tail
        return out

    def load_state_dict(self, state: dict) -> None:
        """The detector as it was (no reactions: they were handled before the checkpoint). A checkpoint of
        another detector leaves a fresh one."""
        self._detector = self._new()
        self._tail, self._tail_n = [], 0
        if self._detector is None or state.get("detector") != self.config.detector:
            return
        if "page_hinkley" in state:
            ph, d = state["page_hinkley"], self._detector
            d._x_mean.n, d._x_mean._mean, d._drift_detected = float(ph["n"]), float(ph["mean"]), bool(ph["drift"])
            for k in _PH_SUMS:
                setattr(d, f"_{k}", float(ph[k]))
            return
        errors = np.asarray(state.get("errors", []), np.float32)
        for e in errors.tolist():
            self._detector.update(e)
        if len(errors):
            self._tail, self._tail_n = [errors], len(errors)


# Page-Hinkley's running sums (river 0.25's attribute names, without the underscore): with its mean, its state.
_PH_SUMS = ("sum_increase", "sum_decrease", "min_increase", "max_decrease")
