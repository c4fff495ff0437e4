"""Plots: seed bands are the mean and spread over seeds on a common axis; nine lines stay apart by style and
marker, the loss axis names the loss, the lr plot appears only when an lr changes, and the test metric's
axis is zoomed enough to tell 0.961 from 0.969."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from cadence.reports.plots import DPI, figures, seed_band, write_plots

STRATEGIES = ("full-batch", "mini-batch 64", "online")
OPTIMIZERS = ("sgd", "momentum", "adam")


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


@pytest.fixture
def nine(make_comparison):
    """The default grid's nine configurations; online + sgd and online + momentum end on the same curve."""
    groups = {}
    for i, (strategy, optimizer) in enumerate(itertools.product(STRATEGIES, OPTIMIZERS)):
        final = 0.96 if strategy == "online" and optimizer != "adam" else 0.6 + 0.04 * i
        curve = [(100 * k, 0.01 * k, final * k / 10) for k in range(1, 11)]
        groups[f"{strategy} + {optimizer}"] = [{"test_accuracy": final, "curve": curve}] * 2
    result = make_comparison(groups, goal=0.9).to_dict()
    for g in result["groups"]:  # make_comparison names the strategy by its first word only
        g["batch_size"] = 64 if g["label"].startswith("mini-batch") else None
    return result


def test_nine_lines_differ_in_two_of_colour_line_style_and_marker(nine):
    panel = figures(nine)["val_accuracy"].axes[0]
    lines = {line.get_label(): line for line in panel.get_lines() if not line.get_label().startswith("_")}
    lines.pop("goal")
    assert len(lines) == 9
    look = {label: (line.get_color(), line.get_linestyle(), line.get_marker()) for label, line in lines.items()}
    for a, b in itertools.combinations(look, 2):
        assert sum(x != y for x, y in zip(look[a], look[b], strict=True)) >= 2, (a, b)
    # The style means the strategy and the marker the optimizer, the same in every panel and the legend.
    assert len({look[f"online + {o}"][1] for o in OPTIMIZERS}) == 1
    assert len({look[f"{s} + sgd"][2] for s in STRATEGIES}) == 1
    assert look["online + sgd"][1:] != look["online + momentum"][1:]  # the two lines that hid each other


def test_the_loss_axis_names_the_loss(nine):
    (panel, *_) = figures(nine)["val_loss"].axes
    assert panel.get_ylabel() == "validation loss: mean cross-entropy"
    nine["data"]["task"] = "regression"
    nine["metric"] = "test_accuracy"  # keep the classification columns; only the loss name should change
    assert figures(nine)["val_loss"].axes[0].get_ylabel() == "validation loss: mean squared error"


def test_the_lr_plot_appears_only_when_some_lr_changes(nine):
    assert "lr" not in figures(nine)  # every record at lr 0.1: flat lines say nothing
    for record, lr in zip(nine["runs"][0]["history"], np.geomspace(0.1, 0.01, 10), strict=True):
        record["lr"] = float(lr)  # one run decays
    assert list(figures(nine)) == ["val_accuracy", "val_loss", "lr", "test"]


def test_the_test_axis_tells_0_961_from_0_969_despite_far_worse_configurations(make_comparison):
    accuracies = {"a + sgd": 0.961, "b + sgd": 0.969, "c + sgd": 0.965, "d + sgd": 0.46, "e + sgd": 0.63}
    groups = {label: [{"test_accuracy": a + d} for d in (-0.002, 0.002)] for label, a in accuracies.items()}
    fig = figures(make_comparison(groups).to_dict())["test"]
    whole, zoomed = fig.axes
    assert [t.get_text() for t in zoomed.get_yticklabels()] == ["a + sgd", "b + sgd", "c + sgd"]

    def pixels_apart(ax) -> float:
        (x0, _), (x1, _) = ax.transData.transform([(0.961, 0), (0.969, 0)])
        return (x1 - x0) * DPI / fig.dpi  # in the saved PNG

    assert pixels_apart(zoomed) >= 100 > 10 > pixels_apart(whole)  # measured 313 px zoomed, 8 px unzoomed
    assert whole.get_xlim()[0] > 0.3  # even the unzoomed panel is fitted to the data, not 0-1
    labels = [t.get_text() for t in whole.texts]
    assert "0.961 ± 0.003" in labels and "0.969 ± 0.003" in labels  # and both values are written out


def test_write_plots_draws_each_figure_as_a_png(nine, tmp_path):
    paths = write_plots(nine, tmp_path)
    assert list(paths) == ["val_accuracy", "val_loss", "test"]
    for path in paths.values():
        with Image.open(path) as img:
            assert img.format == "PNG" and 400 < img.width <= 1000 and img.height > 150
