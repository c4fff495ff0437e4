"""The tables Cadence prints: one row per run (`runs_table`) or per configuration of a comparison
(`compare_table`, whose cells the HTML report shares). layout.py shows them without cutting a number."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cadence.reports.layout import Column, TableData

if TYPE_CHECKING:
    from cadence.engine import Run


def _batch(config) -> tuple[str, int | None]:
    strategy = config.strategy.name.value
    if strategy == "mini-batch":
        return str(config.strategy.batch_size), config.strategy.batch_size
    if strategy == "full-batch":
        return "all", None
    return "1", 1


def runs_table(runs: Sequence[Run], title: str = "Cadence: strategies compared") -> TableData:
    """Test metric, updates, samples seen, seconds, samples/s and stop reason per run."""
    metric = "test_accuracy" if any("test_accuracy" in r.test_metrics for r in runs) else "test_mse"
    columns = [
        Column("strategy", "strategy", numeric=False),
        Column("optimizer", "optimizer", numeric=False),
        Column("lr", "lr"),
        Column("batch_size", "batch"),
        Column(metric, metric.replace("_", " ")),
        Column("updates", "updates"),
        Column("samples_seen", "samples seen"),
        Column("seconds", "seconds"),
        Column("samples_per_s", "samples/s"),
        Column("stop_reason", "stop reason", numeric=False),
    ]
    sign = 1 if metric == "test_accuracy" else -1
    scored = [r for r in runs if r.test_metrics.get(metric) is not None]
    best = max(scored, key=lambda r: sign * r.test_metrics[metric]) if len(runs) > 1 and scored else None
    rows, records, marks = [], [], []
    for r in runs:
        value = r.test_metrics.get(metric)
        shown, batch = _batch(r.config)
        rows.append(
            [
                r.config.strategy.name.value,
                r.config.optimizer.name,
                f"{r.config.optimizer.lr:g}",
                shown,
                "–" if value is None else f"{value:.4f}",
                f"{r.updates:,}",
                f"{r.samples_seen:,}",
                f"{r.seconds:.2f}",
                f"{r.samples_per_s:,.0f}",
                r.stop_reason.value,
            ]
        )
        records.append(
            {
                "strategy": r.config.strategy.name.value,
                "optimizer": r.config.optimizer.name,
                "lr": r.config.optimizer.lr,
                "batch_size": batch,
                metric: value,
                "updates": r.updates,
                "samples_seen": r.samples_seen,
                "seconds": r.seconds,
                "samples_per_s": r.samples_per_s,
                "stop_reason": r.stop_reason.value,
            }
        )
        marks.append({metric} if r is best else set())
    return TableData(title, columns, rows, records, marks, best_note=best is not None)


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
    """Per configuration: its label, lr, the cells (text, best?) of each stat column, how many seeds reached
    the goal (`at_goal`, "2/3": the goal columns average those) and its stop reasons."""
    rows = []
    for g in result["groups"]:
        cells = {key: (format_stat(key, g["stats"][key]), key in g["best"]) for key in compare_columns(result)}
        stops = ", ".join(f"{reason} ×{count}" for reason, count in g["stop_reasons"].items())
        at_goal = f"{g['reached']}/{g['n']}"
        rows.append(
            {"label": g["label"], "lr": f"{g['lr']:g}", "cells": cells, "at_goal": at_goal, "stops": stops}
        )
    return rows


def goal_text(result: dict) -> str:
    goal = result["goal"]
    if goal["value"] is None:
        return "no goal (no run was evaluated)"
    sign = "≤" if goal["metric"].endswith(("loss", "mse", "mae")) else "≥"
    how = " (automatic: the median configuration's best, rounded)" if goal["auto"] else ""
    return f"{goal['metric']} {sign} {goal['value']:g}{how}"


def compare_table(result: dict) -> TableData:
    """A comparison as a table: mean ± spread over seeds per configuration, the best of each column marked."""
    data, budget, seeds = result["data"], result["budget"], len(result["compare"]["seeds"])
    keys = compare_columns(result)
    columns = [
        Column("configuration", "configuration", numeric=False),
        Column("lr", "lr"),
        *(Column(k, HEADERS.get(k, k)) for k in keys),
        Column("at_goal", "at goal"),
        Column("stop_reasons", "stop reasons", numeric=False, sep=", "),
    ]
    rows, records, marks = [], [], []
    for g, row in zip(result["groups"], compare_rows(result), strict=True):
        cells = [text for text, _ in row["cells"].values()]
        rows.append([row["label"], row["lr"], *cells, row["at_goal"], row["stops"]])
        marks.append({k for k, (_, best) in row["cells"].items() if best})
        record = {k: g[k] for k in ("label", "strategy", "batch_size", "optimizer", "schedule", "lr")}
        record = {"configuration": record.pop("label"), **record, "seeds": g["n"], "seeds_at_goal": g["reached"]}
        for key in keys:
            record[f"{key}_mean"] = g["stats"][key]["mean"]
            record[f"{key}_std"] = g["stats"][key]["std"]
        records.append({**record, "stop_reasons": g["stop_reasons"], "best": list(g["best"])})
    notes = (
        f"goal: {goal_text(result)}. at goal: the seeds that reached it, which the goal columns average. "
        "± is the standard deviation over seeds."
    )
    title = f"Cadence compare: {data['name']} · {budget['description']} · {seeds} seeds"
    return TableData(title, columns, rows, records, marks, notes=notes, best_note=True)
