"""Plots: seed bands are the mean and spread over seeds on a common axis; every plot is a real PNG."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cadence.reports.plots import seed_band, write_plots


def _run(points):
    return {"history": [{"samples": x, "val_accuracy": y} for x, y in points]}


def test_seed_band_is_mean_and_std_over_seeds_on_the_x_range_all_seeds_cover():
    runs = [_run([(0, 0.0), (10, 1.0)]), _run([(0, 0.2), (20, 0.6)])]  # the second is y = 0.2 + 0.02x
    xs, mean, std = seed_band(runs, "samples", "val_accuracy", points=3)
    assert xs.tolist() == [0.0, 5.0, 10.0]  # up to 10: where the shorter run ends
    assert mean == pytest.approx([0.1, 0.4, 0.7])  # (0 + 0.2)/2, (0.5 + 0.3)/2, (1 + 0.4)/2
    assert std == pytest.approx(np.std([[0.0, 0.5, 1.0], [0.2, 0.3, 0.4]], axis=0, ddof=1))


def test_one_seed_is_drawn_at_its_own_points_without_a_band():
    xs, mean, std = seed_band([_run([(1, 0.5), (2, 0.7)])], "samples", "val_accuracy")
    assert xs.tolist() == [1, 2] and mean.tolist() == [0.5, 0.7] and std.tolist() == [0, 0]


def test_write_plots_draws_the_curves_lr_and_test_metric_as_png(make_comparison, tmp_path):
    result = make_comparison(
        {
            "online + sgd": [{"test_accuracy": a, "curve": [(10, 0.1, 0.5), (20, 0.2, 0.9)]} for a in (0.9, 0.92)],
            "mini-batch + adam": [{"test_accuracy": 0.95, "curve": [(64, 0.05, 0.7), (128, 0.1, 0.95)]}] * 2,
        },
        goal=0.9,
    ).to_dict()
    paths = write_plots(result, tmp_path)
    assert list(paths) == ["val_accuracy", "val_loss", "lr", "test"]
    for path in paths.values():
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 400 and img.height > 150
