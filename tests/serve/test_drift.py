"""Drift detectors across a checkpoint: a detector put back from its state_dict goes on exactly as one that
was never interrupted (the same detections at the same samples, the same internal estimates)."""

from __future__ import annotations

import numpy as np
import pytest

from cadence.config import DriftConfig
from cadence.serve.drift import DriftDetector


def _errors() -> np.ndarray:
    """Error rates 0.1 -> 0.6 -> 0.05 -> 0.7: rises ADWIN and Page-Hinkley report, and a fall (ADWIN fires on
    it too, river starts afresh after it, and the learner does not call it drift)."""
    rng = np.random.default_rng(3)
    rates = [0.1] * 1500 + [0.6] * 1500 + [0.05] * 1500 + [0.7] * 1500
    return (rng.random(len(rates)) < np.array(rates)).astype(np.float64)


def _feed(detector: DriftDetector, errors: np.ndarray, offset: int, poll: int = 97) -> list[int]:
    found = []
    for a in range(0, len(errors), poll):
        found += [offset + a + i for i in detector.update(errors[a : a + poll])]
    return found


@pytest.mark.parametrize(
    "config", [DriftConfig(detector="adwin"), DriftConfig(detector="page-hinkley", threshold=20)]
)
@pytest.mark.parametrize("cut", [1000, 2222, 4100, 5000])
def test_a_restored_detector_goes_on_exactly_as_an_uninterrupted_one(config, cut):
    errors = _errors()
    whole = DriftDetector(config)
    expected = _feed(whole, errors, 0)
    assert len(expected) >= 2  # the two rises (the fall is not drift)

    first = DriftDetector(config)
    got = _feed(first, errors[:cut], 0)
    restored = DriftDetector(config)
    restored.load_state_dict(first.state_dict())
    got += _feed(restored, errors[cut:], cut)
    assert got == expected
    a, b = whole._detector, restored._detector
    if config.detector == "adwin":
        assert (a.width, a.total, a.variance) == (b.width, b.total, b.variance)
    else:
        assert (a._x_mean.get(), a._sum_increase, a._min_increase) == (
            b._x_mean.get(),
            b._sum_increase,
            b._min_increase,
        )


def test_page_hinkley_is_restored_exactly_however_long_since_its_last_detection(monkeypatch):
    # Its state is a few numbers: no replay of past errors, so no limit on how far back they reach.
    from cadence.serve import drift

    monkeypatch.setattr(drift, "MAX_REPLAY", 500)
    errors, config = _errors(), DriftConfig(detector="page-hinkley", threshold=20)
    whole = DriftDetector(config)
    expected = _feed(whole, errors, 0)
    first = DriftDetector(config)
    got = _feed(first, errors[:4400], 0)  # 2,882 samples since its detection at sample 1,518
    restored = DriftDetector(config)
    restored.load_state_dict(first.state_dict())
    assert got + _feed(restored, errors[4400:], 4400) == expected
