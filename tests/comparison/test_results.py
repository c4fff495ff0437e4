"""The tidy results: per-configuration mean and spread, the best of each column, the goal, results.json."""

from __future__ import annotations

import json
import math

import pytest

from cadence.comparison import CompareResult
from cadence.comparison.results import auto_goal, reach


def test_groups_give_mean_and_spread_over_seeds_and_mark_the_best(make_comparison):
    result = make_comparison(
        {
            "a + sgd": [{"test_accuracy": x, "curve": [(100, 2.0, 0.95)]} for x in (0.90, 0.92, 0.94)],
            "b + sgd": [{"test_accuracy": x, "curve": [(100, 1.0, 0.95)]} for x in (0.80, 0.80, 0.80)],
        },
        goal=0.9,
    )
    a, b = result.groups()
    assert a["stats"]["test_accuracy"]["mean"] == pytest.approx(0.92)
    assert a["stats"]["test_accuracy"]["std"] == pytest.approx(0.02)  # sample std, n - 1
    assert b["stats"]["test_accuracy"]["std"] == 0.0 and a["n"] == 3
    assert "test_accuracy" in a["best"] and "test_accuracy" not in b["best"]
    assert "seconds" in b["best"] and "goal_seconds" in b["best"]  # b was faster
    assert a["stop_reasons"] == {"budget": 3}


def test_goal_columns_mark_the_best_only_among_configurations_that_always_reached_it(make_comparison):
    result = make_comparison(
        {
            "lucky + sgd": [
                {"test_accuracy": 0.9, "curve": [(10, 0.1, 0.95)]},
                {"test_accuracy": 0.9, "curve": [(10, 0.1, 0.50)]},
            ],
            "steady + sgd": [{"test_accuracy": 0.9, "curve": [(50, 1.0, 0.95)]} for _ in range(2)],
        },
        goal=0.9,
    )
    lucky, steady = result.groups()
    assert lucky["reached"] == 1 and steady["reached"] == 2
    assert "goal_seconds" in steady["best"] and "goal_seconds" not in lucky["best"]


def test_interrupted_and_failed_runs_are_counted_but_left_out_of_the_statistics(make_comparison):
    result = make_comparison(
        {
            "a + sgd": [
                {"test_accuracy": 0.9},
                {"test_accuracy": 0.1, "stop_reason": "interrupted"},
                {"test_accuracy": 0.2, "stop_reason": "error"},
            ]
        }
    )
    (g,) = result.groups()
    assert g["n"] == 1 and g["stats"]["test_accuracy"]["mean"] == 0.9
    assert g["stop_reasons"] == {"budget": 1, "interrupted": 1, "error": 1}


def test_reach_finds_the_first_evaluation_at_the_goal_in_the_metric_direction():
    history = [
        {"samples": 10, "val_accuracy": 0.5, "val_loss": 1.0},
        {"samples": 20, "val_accuracy": 0.91, "val_loss": 0.3},
    ]
    assert reach(history, "val_accuracy", 0.9)["samples"] == 20
    assert reach(history, "val_loss", 0.5)["samples"] == 20  # a loss reaches its goal from above
    assert reach(history, "val_accuracy", 0.95) is None


def test_automatic_goal_is_the_median_configuration_best_rounded_down():
    runs = [
        {"group": g, "history": [{"val_accuracy": v}]}
        for g, values in enumerate([(0.50, 0.52), (0.931, 0.937), (0.97, 0.99)])
        for v in values
    ]
    # per-configuration means of the best: 0.51, 0.934, 0.98 -> median 0.934 -> 0.93
    assert auto_goal(runs, "val_accuracy") == 0.93


def test_results_json_is_strict_json_and_loads_back_to_the_same_tables(make_comparison, tmp_path):
    result = make_comparison({"a + sgd": [{"test_accuracy": 0.9, "curve": [(10, 0.5, 0.8)]} for _ in range(2)]})
    result.runs[0]["history"][0]["train_loss"] = math.nan
    path = result.save(tmp_path / "results.json")
    tree = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert tree["runs"][0]["history"][0]["train_loss"] is None
    assert tree["groups"][0]["stats"]["test_accuracy"]["mean"] == 0.9 and len(tree["runs"]) == 2
    assert CompareResult.load(path).to_dict() == tree
