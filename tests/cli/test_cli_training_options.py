"""Schedules, penalties and training tricks chosen from CLI flags and from a YAML file, end to end: run
`cadence train`, then read the run directory it wrote."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from cadence.cli.app import app

BASE = ["train", "--data", "digits", "--limit", "500", "--model", "mlp:16", "--threads", "1", "--json"]


def run_cli(*args: str):
    result = CliRunner().invoke(app, [*BASE, *args])
    return result


def test_flags_set_schedule_penalty_and_tricks_and_the_run_follows_them(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        *("--epochs", "3", "--batch-size", "25", "--optimizer", "momentum", "--lr", "0.05"),
        *("--schedule", "step", "--step-size", "1", "--gamma", "0.5", "--schedule-per", "epoch"),
        *("--l2", "0.001", "--clip-norm", "5", "--accumulate", "2", "--init", "glorot", "--precision", "bf16"),
        *("--out", str(out)),
    )
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["schedule"] == {
        **config["schedule"],
        "name": "step",
        "step_size": 1,
        "gamma": 0.5,
        "per": "epoch",
    }
    assert config["regularization"]["l2"] == 0.001
    assert config["optimizer"]["clip_norm"] == 5.0
    assert config["strategy"]["accumulate"] == 2
    assert config["model"]["init"] == "xavier"
    assert config["precision"] == "bf16"
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    # the lr recorded after epoch e is the one epoch e+1 runs with: 0.05 * 0.5^(e+1)
    assert [h["lr"] for h in history] == pytest.approx([0.025, 0.0125, 0.00625])
    summary = json.loads(result.stdout)
    assert summary["updates"] == 3 * 7  # 350 training samples, 2 x 25 per accumulated update


def test_yaml_config_with_plateau_augmentation_and_ensemble(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"standardize": "global"},
                "optimizer": {"name": "adam", "lr": 0.003},
                "schedule": {"name": "cosine", "warmup_updates": 5, "plateau": {"metric": "val_accuracy"}},
                "augment": {"shift": 1, "rotate": 10.0},
                "regularization": {"l1": 1e-5},
                "ensemble": {"members": 2},
                "stop": {"max_epochs": 2},
            }
        )
    )
    out = tmp_path / "ens"
    result = run_cli("--config", str(cfg), "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ensemble"]["members"] == 2 and 0.0 < summary["ensemble"]["test_accuracy"] <= 1.0
    assert [m["seed"] for m in summary["members"]] == [0, 1]
    member = yaml.safe_load((out / "member-1" / "config.yaml").read_text())
    assert member["schedule"]["plateau"]["metric"] == "val_accuracy"
    assert member["augment"] == {"shift": 1, "flip": False, "rotate": 10.0}
    assert json.loads((out / "ensemble.json").read_text())["ensemble"] == summary["ensemble"]


def test_a_schedule_missing_its_parameter_exits_2_naming_the_fix(tmp_path):
    result = run_cli("--schedule", "exponential", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert "needs gamma" in result.output and "schedule.gamma" in result.output
