"""Rich tables: one row per run (`runs_table`), or one row per configuration of a comparison (`compare_table`)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from cadence.engine import Run


def runs_table(runs: Sequence[Run], title: str = "Cadence: strategies compared") -> Table:
    """Test metric, updates, samples seen, seconds, samples/s and stop reason per run."""
    task_metric = "test_accuracy" if any("test_accuracy" in r.test_metrics for r in runs) else "test_mse"
    table = Table(title=title)
    for col in (
        "strategy",
        "optimizer",
        "lr",
        "batch",
        task_metric.replace("_", " "),
        "updates",
        "samples seen",
        "seconds",
        "samples/s",
        "stop reason",
    ):
        table.add_column(col, justify="left" if col in ("strategy", "optimizer", "stop reason") else "right")
    best = max(
        runs,
        key=lambda r: (
            r.test_metrics.get(task_metric, float("-inf")) * (1 if task_metric == "test_accuracy" else -1)
        ),
        default=None,
    )
    for r in runs:
        value = r.test_metrics.get(task_metric)
        shown = "-" if value is None else f"{value:.4f}"
        strategy = r.config.strategy.name
        table.add_row(
            strategy.value,
            r.config.optimizer.name,
            f"{r.config.optimizer.lr:g}",
            str(r.config.strategy.batch_size)
            if strategy == "mini-batch"
            else ("all" if strategy == "full-batch" else "1"),
            f"[bold green]{shown}[/]" if r is best else shown,
            f"{r.updates:,}",
            f"{r.samples_seen:,}",
            f"{r.seconds:.2f}",
            f"{r.samples_per_s:,.0f}",
            r.stop_reason.value,
        )
    return table


# The comparison table: one row per configuration, mean ± spread over seeds. Shared by the terminal
# table and the HTML report, so both show the same cells.
HEADERS = {
    "test_accuracy": "test accuracy",
    "test_r2": "test R²",
    "test_loss": "test loss",
    "updates": "updates",
    "samples_seen": "samples seen",
    "seconds": "wall s",
    "samples_per_s": "samples/s",
    "goal_seconds": "s to goal",
    "goal_samples": "samples to goal",
}
STAT_COLUMNS = ("test_loss", "updates", "samples_seen", "seconds", "samples_per_s", "goal_seconds", "goal_samples")
_DECIMALS = {"test_accuracy": 3, "test_r2": 3, "test_loss": 3, "seconds": 2, "goal_seconds": 2}


def format_stat(key: str, stats: dict) -> str:
    """`mean ± std` at the column's precision; the mean alone with one seed; an en dash when empty."""
    mean, std = stats["mean"], stats["std"]
    if mean is None:
        return "–"
    decimals = _DECIMALS.get(key, 0)
    text = f"{mean:,.{decimals}f}"
    if std is not None and not (decimals == 0 and std == 0):  # counts equal in every seed: no "± 0"
        text += f" ± {std:,.{decimals}f}"
    return text


def compare_columns(result: dict) -> list[str]:
    """The stat columns of the comparison table, main metric first."""
    return [result["metric"], *STAT_COLUMNS]


def compare_rows(result: dict) -> list[dict]:
    """Per configuration: its label, lr, the cells (text, best?) of each column, and its stop reasons."""
    rows = []
    for g in result["groups"]:
        cells = {}
        for key in compare_columns(result):
            text = format_stat(key, g["stats"][key])
            if key.startswith("goal_") and 0 < g["reached"] < g["n"]:
                text += f" ({g['reached']}/{g['n']} seeds)"
            cells[key] = (text, key in g["best"])
        stops = ", ".join(f"{reason} ×{count}" for reason, count in g["stop_reasons"].items())
        rows.append({"label": g["label"], "lr": f"{g['lr']:g}", "cells": cells, "stops": stops})
    return rows


def goal_text(result: dict) -> str:
    goal = result["goal"]
    if goal["value"] is None:
        return "no goal (no run was evaluated)"
    sign = "≤" if goal["metric"].endswith(("loss", "mse", "mae")) else "≥"
    how = " (automatic: the median configuration's best, rounded)" if goal["auto"] else ""
    return f"{goal['metric']} {sign} {goal['value']:g}{how}"


def compare_table(result: dict) -> Table:
    """The rich table of a comparison: mean ± spread over seeds; the best of each column in bold green."""
    data, budget, seeds = result["data"], result["budget"], len(result["compare"]["seeds"])
    table = Table(
        title=f"Cadence compare: {data['name']} · {budget['description']} · {seeds} seeds",
        caption=f"goal: {goal_text(result)}. Bold green: best in its column. ± is the standard deviation "
        "over seeds.",
    )
    table.add_column("configuration")
    table.add_column("lr", justify="right")
    for key in compare_columns(result):
        table.add_column(HEADERS.get(key, key), justify="right")
    table.add_column("stop reasons")
    for row in compare_rows(result):
        cells = [f"[bold green]{text}[/]" if best else text for text, best in row["cells"].values()]
        table.add_row(row["label"], row["lr"], *cells, row["stops"])
    return table
