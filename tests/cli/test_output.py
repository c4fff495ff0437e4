"""What `cadence train` and `cadence compare` print: whole numbers at 80 columns and piped, `--format`."""

from __future__ import annotations

import csv
import io
import json
import typing

import pytest
from rich.console import Console
from typer.testing import CliRunner

import cadence.cli.app as cli
from cadence.cli.app import app
from cadence.reports.layout import FORMATS

# Adam at a high lr with patience 1 stops early within a few epochs (measured: 8 updates, test accuracy 0.70).
EARLY = ["--data", "digits", "--limit", "300", "--optimizer", "adam", "--lr", "0.05"]
EARLY += ["--early-stopping", "val_loss", "--patience", "1", "--epochs", "100"]
SMALL = ["--model", "mlp:16", "--limit", "400", "--workers", "1", "--seeds", "2", "--max-samples", "300"]
SMALL += ["--strategies", "mini-batch:32,online", "--optimizers", "sgd"]


def shown_as(cell: str, value: float, places: int) -> bool:
    """`cell` is `value` to `places` decimals, whole: summary.json rounds timings itself (seconds to 4 places,
    samples/s to 1), so the table's rounding of the unrounded figure may differ from it by one last digit."""
    return cell.count(".") == (places > 0) and abs(float(cell.replace(",", "")) - value) <= 10**-places


@pytest.fixture
def terminal(monkeypatch):
    """stdout as an 80-column terminal without colour."""
    buf = io.StringIO()
    monkeypatch.setattr(cli, "out_console", Console(file=buf, width=80, force_terminal=True, color_system=None))
    return buf


def test_train_at_80_columns_shows_the_test_accuracy_and_stop_reason_whole(tmp_path, terminal):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", *EARLY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "early-stopped"
    text = terminal.getvalue()
    lines = [line for line in text.splitlines() if not line.startswith("run directory: ")]  # a path: unbroken
    assert "…" not in text and max(len(line) for line in lines) <= 80
    assert any(line.split() == ["test", "accuracy", f"{summary['test_accuracy']:.4f}"] for line in lines)
    assert any(line.split() == ["stop", "reason", "early-stopped"] for line in lines)
    (speed,) = [line.split()[1] for line in lines if line.split()[:1] == ["samples/s"]]
    assert shown_as(speed, summary["samples_per_s"], 0)


def test_train_piped_prints_one_wide_row_and_json_format_prints_only_the_row(tmp_path, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    result = CliRunner().invoke(app, ["train", *EARLY, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    (row,) = [line for line in result.stdout.splitlines() if line.lstrip().startswith("mini-batch ")]
    cells = row.split()
    assert cells[:7] + cells[9:] == [
        "mini-batch",
        "adam",
        "0.05",
        "64",
        f"{summary['test_accuracy']:.4f}",
        f"{summary['updates']:,}",
        f"{summary['samples_seen']:,}",
        "early-stopped",
    ]
    assert shown_as(cells[7], summary["seconds"], 2) and shown_as(cells[8], summary["samples_per_s"], 0)
    result = CliRunner().invoke(app, ["train", *EARLY, "--out", str(tmp_path / "b"), "--format", "json"])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)  # all of stdout; the run directory line went to stderr
    assert record["stop_reason"] == "early-stopped" and record["batch_size"] == 64
    assert record["test_accuracy"] == json.loads((tmp_path / "b" / "summary.json").read_text())["test_accuracy"]
    assert f"run directory: {tmp_path / 'b'}" in result.stderr


def test_compare_tsv_is_all_of_stdout_with_one_line_per_configuration(tmp_path):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", *SMALL, "--out", str(out), "--format", "tsv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout), delimiter="\t"))
    tree = json.loads((out / "results.json").read_text())
    assert [r["configuration"] for r in rows] == [g["label"] for g in tree["groups"]]
    for row, group in zip(rows, tree["groups"], strict=True):
        assert float(row["samples_per_s_mean"]) == group["stats"]["samples_per_s"]["mean"]
        assert int(row["seeds"]) == 2 and row["stop_reasons"] == "budget=2"
    assert f"report: {out / 'report.html'}" in result.stderr and "Use " in result.stderr


def test_compare_at_80_columns_keeps_every_cell_whole(tmp_path, terminal):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", *SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = terminal.getvalue()
    lines = [line for line in text.splitlines() if not line.startswith("results: ")]  # a path: unbroken
    assert "…" not in text and max(len(line) for line in lines) <= 80
    tree = json.loads((out / "results.json").read_text())
    for g in tree["groups"]:
        speed = g["stats"]["samples_per_s"]
        cell = f"{speed['mean']:,.0f} ± {speed['std']:,.0f}"
        assert any(f"│ {g['label']} " in line and cell in line for line in text.splitlines()), cell


def test_format_choices_are_the_ones_the_tables_know_and_others_exit_2():
    assert typing.get_args(cli.Format) == FORMATS
    result = CliRunner().invoke(app, ["compare", "--format", "csv"])
    assert result.exit_code == 2 and "csv" in result.output
