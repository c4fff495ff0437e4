"""`cadence lr-find`, `cadence batch-size`, `cadence tune` and `cadence compare --tune-lr` end to end: run them,
then open what they wrote (JSON, PNG, the study's journal, best.yaml run by `cadence train -c`, the report)."""

from __future__ import annotations

import json

import optuna
from typer.testing import CliRunner

from cadence.cli.app import app
from cadence.tuning.storage import open_storage

PNG = b"\x89PNG\r\n\x1a\n"


def test_lr_find_writes_the_curve_and_suggests_an_lr(tmp_path):
    out = tmp_path / "lr"
    result = CliRunner().invoke(
        app, ["lr-find", "--data", "digits", "--model", "mlp:32", "--optimizer", "sgd", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("suggested lr ")
    record = json.loads((out / "lr_find.json").read_text())
    assert 0.01 < record["suggestion"] < 3 and record["rule"] == "valley" and record["data"].startswith("digits")
    assert len(record["lrs"]) == len(record["losses"]) <= 100
    assert (out / "lr_find.png").read_bytes().startswith(PNG)
    quiet = CliRunner().invoke(
        app, ["lr-find", "--data", "digits", "--model", "mlp:32", "--optimizer", "sgd", "-q", "--out", str(out)]
    )
    assert float(quiet.stdout) == record["suggestion"]  # same seed, same curve, same lr


def test_lr_find_says_so_when_the_loss_never_decreases(tmp_path):
    # lrs far too small to move the loss: no suggestion, exit 1, and the reason on the first line
    args = ["lr-find", "--data", "digits", "--lr-min", "1e-12", "--lr-max", "1e-10", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "the loss never decreased" in result.stdout
    assert json.loads((tmp_path / "lr_find.json").read_text())["suggestion"] is None


def test_lr_find_rejects_a_bad_range_with_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["lr-find", "--data", "digits", "--lr-min", "1", "--lr-max", "0.1"])
    assert result.exit_code == 2
    assert "0 < lr_min < lr_max" in result.output


def test_batch_size_measures_each_size_and_advises_one(tmp_path):
    out = tmp_path / "bs"
    args = [
        "batch-size",
        "--data",
        "digits",
        "--model",
        "mlp:32",
        "--sizes",
        "16,64,256",
        "--warmup",
        "20",
    ]
    result = CliRunner().invoke(app, [*args, "--draws", "20", "--timing-updates", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "batch_size.json").read_text())
    assert [r["batch_size"] for r in record["rows"]] == [16, 64, 256]
    assert f"Use batch size {record['best']}" in result.stdout
    assert (out / "batch_size.png").read_bytes().startswith(PNG)
    bad = CliRunner().invoke(app, ["batch-size", "--data", "digits", "--sizes", "16,lots"])
    assert bad.exit_code == 2 and "comma list of integers" in bad.output


def test_tune_with_two_workers_writes_a_study_a_report_and_a_best_config_that_trains(tmp_path):
    config = tmp_path / "tune.yaml"
    config.write_text(
        "data: {name: digits}\nmodel: {spec: 'mlp:16'}\nstop: {max_epochs: 2}\n"
        "tune:\n  trials: 4\n  pruner: none\n  space:\n"
        "    optimizer.name: [sgd, adam]\n    optimizer.lr: {low: 1.0e-3, high: 0.3, log: true}\n"
    )
    out = tmp_path / "tune"
    result = CliRunner().invoke(app, ["tune", str(config), "--workers", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["worker_exit_codes"] == [0, 0]
    # The study the workers shared, opened from the journal they wrote:
    storage = open_storage(out / "study.journal", "cadence")
    trials = optuna.load_study(study_name="cadence", storage=storage.storage).get_trials()
    assert len(trials) == 4 and {t.state.name for t in trials} == {"COMPLETE"}
    assert len({t.user_attrs["cadence_worker"]["pid"] for t in trials}) == 2
    best = max(trials, key=lambda t: t.value)
    assert summary["best"]["number"] == best.number
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "optuna_history.png",
        "optuna_importance.png",
        "optuna_parallel.png",
    ]
    html = (out / "report.html").read_text()
    assert "Hyperparameter search" in html and html.count("data:image/png") == 3
    # best.yaml is a ready-to-run config: the same run as the final one (same seed, one thread).
    run = CliRunner().invoke(app, ["train", "-c", str(out / "best.yaml"), "--threads", "1", "--json"])
    assert run.exit_code == 0, run.output
    trained = json.loads(run.stdout)
    assert trained["seed"] == summary["best"]["seed"]
    assert trained["test_accuracy"] == summary["final"]["test_accuracy"]


def test_tune_refuses_a_missing_file_and_an_unknown_storage(tmp_path):
    missing = CliRunner().invoke(app, ["tune", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    config = tmp_path / "tune.yaml"
    config.write_text("tune: {trials: 2}\n")
    bad = CliRunner().invoke(
        app, ["tune", str(config), "--storage", "redis://localhost", "--out", str(tmp_path / "o")]
    )
    assert bad.exit_code == 2 and "not supported" in bad.output


def test_compare_tune_lr_trains_each_configuration_at_its_range_test_lr(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--model", "mlp:16", "--limit", "400", "--workers", "1", "--seeds", "1", "--epochs", "1"]
    args += ["--strategies", "mini-batch:32", "--optimizers", "sgd,adam", "--tune-lr", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    tree = json.loads((out / "results.json").read_text())
    found = {r["label"]: r for r in tree["lr_find"]}
    assert set(found) == {"mini-batch 32 + sgd", "mini-batch 32 + adam"}
    for run in tree["runs"]:
        record = found[run["label"]]
        assert run["lr"] == record["lr_used"] == (record["suggestion"] or record["default_lr"])
        assert run["run_config"]["optimizer"]["lr"] == run["lr"]
    assert found["mini-batch 32 + sgd"]["lr_used"] != found["mini-batch 32 + adam"]["lr_used"]
    html = (out / "report.html").read_text()
    assert "Learning rates from the range test" in html
    assert html.count("LR range test: mini-batch 32 + ") == 2 * 2  # each curve: alt text and caption
    both = CliRunner().invoke(app, ["compare", "--tune-lr", "--lr", "0.1", "--out", str(tmp_path / "x")])
    assert both.exit_code == 2 and "--tune-lr" in both.output


def test_tune_keeps_the_yaml_final_setting_unless_a_flag_says_otherwise(tmp_path):
    config = tmp_path / "tune.yaml"
    config.write_text(
        "data: {name: digits}\nmodel: {spec: 'mlp:8'}\nstop: {max_epochs: 1}\n"
        "tune:\n  trials: 1\n  final: false\n  space:\n    optimizer.lr: {low: 0.01, high: 0.1}\n"
    )
    kept = CliRunner().invoke(app, ["tune", str(config), "-q", "--out", str(tmp_path / "a")])
    assert kept.exit_code == 0, kept.output
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["final"] is None
    assert not (tmp_path / "a" / "best-run").exists()
    forced = CliRunner().invoke(app, ["tune", str(config), "-q", "--final", "--out", str(tmp_path / "b")])
    assert forced.exit_code == 0, forced.output
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["final"]["test_accuracy"] > 0
