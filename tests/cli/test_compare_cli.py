"""`cadence compare` end to end: run it, then open what it wrote (results.json, report, compare.yaml)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cadence.cli.app import app
from cadence.comparison import load_compare_file

SMALL = ["--model", "mlp:16", "--limit", "400", "--workers", "1"]


def test_compare_writes_results_report_and_a_rerunnable_config(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", *SMALL, "--strategies", "mini-batch:32,online", "--optimizers", "sgd", "--seeds", "2"]
    result = CliRunner().invoke(app, [*args, "--max-samples", "500", "--goal", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    assert "mini-batch 32 + sgd" in result.stdout and "Use " in result.stdout
    tree = json.loads((out / "results.json").read_text())
    assert [(r["label"], r["seed"]) for r in tree["runs"]] == [
        ("mini-batch 32 + sgd", 0),
        ("mini-batch 32 + sgd", 1),
        ("online + sgd", 0),
        ("online + sgd", 1),
    ]
    assert tree["goal"] == {"metric": "val_accuracy", "value": 0.5, "auto": False}
    assert all(500 <= r["samples_seen"] < 532 and r["history"] for r in tree["runs"])
    # no lr.png: every run kept its lr (constant schedule), so an lr plot would be flat lines
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["test.png", "val_accuracy.png", "val_loss.png"]
    base, settings = load_compare_file(out / "compare.yaml")
    assert base.model.spec == "mlp:16" and base.data.limit == 400
    assert settings.budget.samples == 500 and settings.seeds == [0, 1] and settings.goal == 0.5
    assert [s.batch_size for s in settings.strategies] == [32, None]


def test_compare_reads_a_yaml_grid_and_flags_override_it(tmp_path):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(
        "model: {spec: 'mlp:16'}\ndata: {limit: 400}\n"
        "compare:\n  strategies: [online, full-batch]\n  optimizers: [adam]\n  seeds: 3\n  budget: {updates: 20}\n"
    )
    out = tmp_path / "cmp"
    result = CliRunner().invoke(
        app, ["compare", "-c", str(cfg), "--seeds", "1", "--workers", "1", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # --json: the whole of stdout is the list of runs
    assert [(r["strategy"], r["optimizer"], r["updates"]) for r in rows] == [
        ("online", "adam", 20),
        ("full-batch", "adam", 20),
    ]
    n_train = json.loads((out / "results.json").read_text())["data"]["n_train"]  # 400 - 80 test - 40 val
    assert n_train == 280 and rows[0]["samples_seen"] == 20 and rows[1]["samples_seen"] == 20 * n_train


def test_two_budgets_exit_2_naming_the_flags_and_write_nothing(tmp_path):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", "--epochs", "2", "--max-samples", "100", "--out", str(out)])
    assert result.exit_code == 2
    assert "give one budget" in result.output and "--max-samples" in result.output
    assert not out.exists()


def test_unknown_goal_metric_exits_2_listing_the_metrics_before_any_run(tmp_path):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", *SMALL, "--goal-metric", "val_f2", "--out", str(out)])
    assert result.exit_code == 2 and "Allowed: val_loss, val_accuracy" in result.output
    assert not out.exists()
