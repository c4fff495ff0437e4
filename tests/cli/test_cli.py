"""`cadence train` and `cadence compare` end to end: run the command, then read what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cadence.cli.app import app

SRC = str(Path(__file__).resolve().parents[2] / "src")


def cadence_cmd(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "cadence", *args], capture_output=True, text=True, env=env, timeout=300, **kw
    )


def test_train_json_prints_only_the_summary_and_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    proc = cadence_cmd(
        "train",
        "--data",
        "digits",
        "--model",
        "mlp:32",
        "--strategy",
        "mini-batch",
        "--batch-size",
        "32",
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--epochs",
        "3",
        "--seed",
        "1",
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert summary["stop_reason"] == "budget" and summary["epochs"] == 3.0
    assert summary["test_accuracy"] > 0.9 and summary["samples_per_s"] > 0  # measured 0.964
    assert json.loads((out / "summary.json").read_text())["updates"] == summary["updates"] == 120
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["updates"] for r in history] == [40, 80, 120]
    assert (out / "history.csv").read_text().startswith("epoch,updates,samples")
    assert "optimizer:\n  name: adam" in (out / "config.yaml").read_text()
    weights = load_file(str(out / "model.safetensors"))
    assert weights["1.weight"].shape == (32, 64) and torch.isfinite(weights["1.weight"]).all()


def test_train_with_yaml_config_and_flag_override(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "model:\n  spec: logreg\nstrategy:\n  name: online\noptimizer:\n  lr: 0.01\nstop:\n  max_epochs: 1\n"
    )
    result = CliRunner().invoke(
        app, ["train", "-c", str(cfg), "--lr", "0.02", "--out", str(tmp_path / "r"), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (
        summary["strategy"] == "online" and summary["lr"] == 0.02 and summary["updates"] == summary["samples_seen"]
    )


def test_bad_flag_value_exits_2_with_one_line_naming_the_key(tmp_path):
    result = CliRunner().invoke(app, ["train", "--lr", "-1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "'optimizer.lr' = -1.0: Input should be greater than 0" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_unknown_yaml_key_exits_2_naming_it(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("strategy:\n  batchsize: 10\n")
    result = CliRunner().invoke(app, ["train", "-c", str(cfg)])
    assert result.exit_code == 2 and "unknown key 'strategy.batchsize'" in result.output


def test_unknown_data_set_exits_2_listing_the_choices():
    result = CliRunner().invoke(app, ["train", "--data", "cifar"])
    assert (
        result.exit_code == 2
        and "unknown data set 'cifar'. Allowed: digits, fashion-mnist, mnist" in result.output
    )


def test_compare_prints_one_row_per_strategy(tmp_path):
    args = ["compare", "--epochs", "2", "--optimizers", "sgd", "--seeds", "1", "--workers", "1"]
    result = CliRunner().invoke(app, [*args, "--quiet", "--json", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["strategy"] for r in rows] == ["full-batch", "mini-batch", "online"]
    assert [r["updates"] for r in rows] == [2, 40, 2 * rows[2]["samples_seen"] // 2]
    assert len({r["samples_seen"] for r in rows}) == 1  # same budget: two epochs of the same data
