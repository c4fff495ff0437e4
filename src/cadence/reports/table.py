"""Tables of runs (`runs_table`) and of a comparison (`compare_table`) that never cut a number.

A `TableData` holds the cells as text once; `print_table` shows it as one rich table when it fits the width,
else split into parts that repeat the first column, else one `header  value` block per row (whichever
takes fewer lines); off a terminal as one plain table as wide as it needs; or as tsv, json or markdown.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from cadence.engine import Run

FORMATS = ("table", "tsv", "json", "markdown")
BEST_STYLE = "bold green"
BEST_MARK = " *"  # where there is no colour (a pipe, NO_COLOR, markdown is bold instead)


@dataclass(frozen=True)
class Column:
    """`key` names the column in tsv/json records; `numeric` columns are right-aligned."""

    key: str
    header: str
    numeric: bool = True


@dataclass
class TableData:
    """One table, independent of how it is shown.

    `rows` hold each column's text; `best[i]` the keys of row i's cells that are best in their column;
    `records` the same rows as raw values (full precision) for tsv and json; `notes` the caption, which
    `best_note` extends with how the best cells are marked.
    """

    title: str
    columns: list[Column]
    rows: list[list[str]]
    records: list[dict]
    best: list[set[str]] = field(default_factory=list)
    notes: str = ""
    best_note: bool = False

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from renderables(self, options.max_width, color=console.color_system is not None)


# ---------------------------------------------------------------------------------------------------------
# Layouts for a terminal: every cell keeps its whole text on one line; headers may wrap between words.


def _cells(data: TableData, color: bool) -> list[list[Text]]:
    out = []
    for i, row in enumerate(data.rows):
        best = data.best[i] if i < len(data.best) else set()
        line = []
        for col, text in zip(data.columns, row, strict=True):
            if col.key in best:
                line.append(Text(text, style=BEST_STYLE) if color else Text(text + BEST_MARK))
            else:
                line.append(Text(text))
        out.append(line)
    return out


def _widths(data: TableData, cells: list[list[Text]]) -> list[int]:
    """Per column: its longest cell, or its header's longest word if that is longer."""
    widths = []
    for j, col in enumerate(data.columns):
        longest_word = max((cell_len(w) for w in col.header.split()), default=0)
        widths.append(max([longest_word, *(cell_len(row[j].plain) for row in cells)]))
    return widths


def _table_width(widths: Sequence[int]) -> int:
    # A boxed table with one space of padding each side: "│ a │ b │" is sum(widths) + 3 per column + 1.
    return sum(widths) + 3 * len(widths) + 1


def _header_lines(data: TableData, cols: Sequence[int], widths: Sequence[int]) -> int:
    lines = 1
    for j in cols:
        words, n, used = data.columns[j].header.split(), 1, 0
        for w in words:
            used = cell_len(w) if used == 0 else used + 1 + cell_len(w)
            if used > widths[j]:
                n, used = n + 1, cell_len(w)
        lines = max(lines, n)
    return lines


def _parts(widths: Sequence[int], width: int) -> list[list[int]] | None:
    """Columns 1.. packed in order into parts that fit `width` next to column 0; None if one cannot."""
    parts: list[list[int]] = []
    current: list[int] = []
    for j in range(1, len(widths)):
        if _table_width([widths[0], *(widths[k] for k in current), widths[j]]) <= width:
            current.append(j)
        elif current:
            parts.append(current)
            current = [j]
        else:
            return None
        if _table_width([widths[0], widths[j]]) > width:
            return None
    if current:
        parts.append(current)
    return [[0, *p] for p in parts]


def layout(data: TableData, width: int | None, color: bool = True) -> tuple[str, list[list[int]]]:
    """("wide" | "split" | "blocks", the column indexes of each table part) for a terminal `width`.

    Wide when the whole table fits; otherwise the split table or the blocks, whichever is fewer lines
    (a table of one row is always blocks: a vertical form reads better than a part per column group).
    """
    cells = _cells(data, color)
    widths = _widths(data, cells)
    everything = [list(range(len(widths)))]
    if width is None or _table_width(widths) <= width:
        return "wide", everything
    parts = _parts(widths, width) if len(data.rows) > 1 else None
    if parts is None:
        return "blocks", everything
    split_lines = sum(len(data.rows) + 3 + _header_lines(data, p, widths) for p in parts)
    block_lines = len(data.rows) * len(data.columns)
    return ("split", parts) if split_lines <= block_lines else ("blocks", everything)


def _rich_table(data: TableData, cells, widths, cols, title: str | None, caption: str | None, plain: bool):
    table = Table(
        title=title,
        caption=caption,
        box=box.SIMPLE_HEAD if plain else box.HEAVY_HEAD,
        show_edge=not plain,
        title_justify="left" if plain else "center",
        caption_justify="left",
    )
    for j in cols:
        col = data.columns[j]
        # fold, never an ellipsis: were a cell ever narrower than its text, it would continue on the next line
        table.add_column(col.header, justify="right" if col.numeric else "left", width=widths[j], overflow="fold")
    for row in cells:
        table.add_row(*(row[j] for j in cols))
    return table


def caption(data: TableData, color: bool, markdown: bool = False) -> str:
    if not data.best_note:
        return data.notes
    how = "bold" if markdown else ("bold green" if color else "*")
    return f"{data.notes} {how.capitalize() if how != '*' else how}: best in its column.".strip()


def _blocks(data: TableData, cells) -> list[Text]:
    """One block per row: its first cell as a heading when that names the row (unique), then `header  value`
    lines; a blank line between blocks."""
    keyed = len(cells) > 1 and len({row[0].plain for row in cells}) == len(cells)
    fields = data.columns[1:] if keyed else data.columns
    pad = max((cell_len(c.header) for c in fields), default=0)
    lines: list[Text] = []
    for i, row in enumerate(cells):
        if i:
            lines.append(Text(""))
        if keyed:
            lines.append(Text(row[0].plain, style="bold", no_wrap=True, overflow="ignore"))
        for col, cell in zip(fields, row[1:] if keyed else row, strict=True):
            line = Text(f"  {col.header.ljust(pad)}  ", no_wrap=True, overflow="ignore")
            lines.append(line.append_text(cell))
    return lines


def renderables(data: TableData, width: int | None, color: bool = True, plain: bool = False) -> list:
    """What to print for a terminal `width` (None: as wide as the table needs)."""
    kind, parts = layout(data, width, color)
    cells = _cells(data, color)
    widths = _widths(data, cells)
    note = caption(data, color)
    if kind == "blocks":
        return [Text(data.title, style="bold"), *_blocks(data, cells), *([Text(note)] if note else [])]
    out = []
    for i, cols in enumerate(parts):
        title = data.title if i == 0 else None
        cap = note if i == len(parts) - 1 and note else None
        out.append(_rich_table(data, cells, widths, cols, title, cap, plain))
    return out


# ---------------------------------------------------------------------------------------------------------
# Formats for files and documents.


def _flat(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return ",".join(str(v) for v in value)
    return str(value)  # repr-exact floats: a tsv keeps every digit


def to_tsv(data: TableData) -> str:
    """Raw values, one record per line, tab-separated, with a header line of the record keys."""
    keys = list(dict.fromkeys(k for r in data.records for k in r))
    lines = ["\t".join(keys)]
    lines += ["\t".join(_flat(r.get(k)).replace("\t", " ") for k in keys) for r in data.records]
    return "\n".join(lines) + "\n"


def to_json(data: TableData) -> str:
    """The records as one JSON list (NaN and infinities as null)."""

    def safe(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: safe(x) for k, x in v.items()}
        if isinstance(v, list | tuple | set):
            return [safe(x) for x in (sorted(v) if isinstance(v, set) else v)]
        return v

    return json.dumps([safe(r) for r in data.records], indent=1) + "\n"


def to_markdown(data: TableData) -> str:
    """A GitHub-flavoured markdown table of the displayed cells; the best cells in bold."""

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    head = "| " + " | ".join(esc(c.header) for c in data.columns) + " |"
    rule = "|" + "|".join("---:" if c.numeric else ":---" for c in data.columns) + "|"
    body = []
    for i, row in enumerate(data.rows):
        best = data.best[i] if i < len(data.best) else set()
        cells = [f"**{esc(t)}**" if c.key in best else esc(t) for c, t in zip(data.columns, row, strict=True)]
        body.append("| " + " | ".join(cells) + " |")
    note = caption(data, color=True, markdown=True)
    return "\n".join([f"**{esc(data.title)}**", "", head, rule, *body, *(["", note] if note else [])]) + "\n"


def print_table(console: Console, data: TableData, fmt: str = "table") -> None:
    """Print `data` in `fmt` (table | tsv | json | markdown) to `console`.

    A table on a terminal takes the layout that fits its width. Off a terminal (a pipe, a file, a CI log) it
    is one plain table as wide as it needs, unless COLUMNS is set: then it is laid out for that width.
    """
    if fmt != "table":
        text = {"tsv": to_tsv, "json": to_json, "markdown": to_markdown}[fmt](data)
        console.file.write(text)
        console.file.flush()
        return
    color = console.color_system is not None
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        for part in renderables(data, console.width, color):
            console.print(part, crop=False)
        return
    # Off a terminal rich would lay the table out for 80 columns: render it as wide as it needs instead,
    # and strip the padding rich adds to the right of each line (noise in a file or a diff).
    buffer = io.StringIO()
    wide = Console(
        file=buffer,
        width=max(console.width, _table_width(_widths(data, _cells(data, color)))),
        color_system=console.color_system,
        highlight=False,
        emoji=False,
    )
    for part in renderables(data, None, color=color, plain=True):
        wide.print(part, crop=False)
    console.file.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))
    console.file.flush()


# ---------------------------------------------------------------------------------------------------------
# The two tables.


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


def compare_table(result: dict) -> TableData:
    """A comparison as a table: mean ± spread over seeds per configuration, the best of each column marked."""
    data, budget, seeds = result["data"], result["budget"], len(result["compare"]["seeds"])
    keys = compare_columns(result)
    columns = [
        Column("configuration", "configuration", numeric=False),
        Column("lr", "lr"),
        *(Column(k, HEADERS.get(k, k)) for k in keys),
        Column("stop_reasons", "stop reasons", numeric=False),
    ]
    rows, records, marks = [], [], []
    for g, row in zip(result["groups"], compare_rows(result), strict=True):
        rows.append([row["label"], row["lr"], *(text for text, _ in row["cells"].values()), row["stops"]])
        marks.append({k for k, (_, best) in row["cells"].items() if best})
        record = {k: g[k] for k in ("label", "strategy", "batch_size", "optimizer", "schedule", "lr")}
        record = {"configuration": record.pop("label"), **record, "seeds": g["n"], "seeds_at_goal": g["reached"]}
        for key in keys:
            record[f"{key}_mean"] = g["stats"][key]["mean"]
            record[f"{key}_std"] = g["stats"][key]["std"]
        records.append({**record, "stop_reasons": g["stop_reasons"], "best": list(g["best"])})
    notes = f"goal: {goal_text(result)}. ± is the standard deviation over seeds."
    title = f"Cadence compare: {data['name']} · {budget['description']} · {seeds} seeds"
    return TableData(title, columns, rows, records, marks, notes=notes, best_note=True)
