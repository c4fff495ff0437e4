"""Rich tables of runs: one row per run, the columns users compare strategies by."""

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
