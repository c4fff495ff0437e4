"""Tuning's figures and report pieces: what they mark, what they leave alone (pyplot styles), and that the
comparison report gets a tuning section only when there is tuning to show."""

from __future__ import annotations

import matplotlib
import numpy as np
import optuna

from cadence.reports.tuning import lr_find_figure, optuna_figures, png_bytes, tuning_html

optuna.logging.set_verbosity(optuna.logging.WARNING)


def record(suggestion, rule="valley"):
    lrs = list(np.geomspace(1e-6, 1.0, 40))
    losses = list(2.3 - np.tanh(np.log10(lrs) + 3) + 0.1)
    return {
        "lrs": lrs,
        "losses": losses,
        "smoothed": losses,
        "rule": rule,
        "suggestion": suggestion,
        "suggestions": {"valley": suggestion, "steepest": 1e-3 if suggestion else None},
        "message": "m",
        "label": "mini-batch + sgd",
    }


def test_lr_find_figure_marks_the_chosen_lr_or_says_there_is_none():
    fig = lr_find_figure(record(3e-3))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    vertical = [
        line.get_xdata()[0] for line in ax.lines if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2
    ]
    assert 3e-3 in vertical and 1e-3 in vertical  # the chosen rule and the other one
    assert png_bytes(fig).startswith(b"\x89PNG")
    none = lr_find_figure(record(None))
    assert any("never decreased" in t.get_text() for t in none.axes[0].texts)


def test_optuna_plots_are_written_without_restyling_later_figures(tmp_path):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("x", -2, 2) - 1) ** 2 + t.suggest_float("y", 0, 1), n_trials=8)
    style = dict(matplotlib.rcParams)
    paths, notes = optuna_figures(study, tmp_path)
    assert set(paths) == {"history", "parallel", "importance"} and notes == []
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths.values())
    assert dict(matplotlib.rcParams) == style  # Optuna's plt.style.use("ggplot") stayed inside


def test_importance_needs_two_complete_trials(tmp_path):
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    paths, notes = optuna_figures(study, tmp_path)
    assert set(paths) == {"history"} and len(notes) == 2


def test_tuning_section_is_empty_without_tuning_and_shows_lr_find_records():
    assert tuning_html({"runs": []}) == ""
    html = tuning_html({"lr_find": [{**record(3e-3), "lr_used": 3e-3}]})
    assert "Learning rates from the range test" in html and html.count("data:image/png") == 1
