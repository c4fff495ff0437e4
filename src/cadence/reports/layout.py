"""How a `TableData` is shown without cutting a number: by terminal width one table, the table split into
parts, or one block per row; off a terminal one plain wide table; or tsv, json, markdown. The layout is
chosen here, not by rich: rich fits a table to the width by cutting cells with an ellipsis."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "tsv", "json", "markdown")
BEST_STYLE = "bold green"
BEST_MARK = " *"  # where there is no colour (a pipe, NO_COLOR, markdown is bold instead)


@dataclass(frozen=True)
class Column:
    """`key` names the column in tsv/json records; `numeric` columns are right-aligned; a cell of a column
    with a `sep` is a list that may break after the separator."""

    key: str
    header: str
    numeric: bool = True
    sep: str = ""  # a list column ("budget ×2, early-stopped ×1") may break after this separator


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
# Layouts for a terminal: every cell keeps its whole text on one line, except that a list column (stop
# reasons) may break after its separators; headers may wrap between words.


@dataclass
class Plan:
    """How a table is laid out at a width: `kind` (wide | split | blocks) and, per table part, the column
    indexes and each one's width."""

    kind: str
    parts: list[tuple[list[int], list[int]]]


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


def _items(col: Column, text: str) -> list[str]:
    if not col.sep:
        return [text]
    items = text.split(col.sep)
    return [item + col.sep.rstrip() for item in items[:-1]] + items[-1:]


def _fold(col: Column, text: str, width: int) -> str:
    """A list cell broken after separators into lines of at most `width` (an item is never broken)."""
    lines: list[str] = []
    for item in _items(col, text):
        if lines and cell_len(lines[-1]) + 1 + cell_len(item) <= width:
            lines[-1] += " " + item
        else:
            lines.append(item)
    return "\n".join(lines)


def _widths(data: TableData, cells: list[list[Text]], least: bool = False) -> list[int]:
    """Per column, the width that keeps its cells and header on one line each; with `least`, the width its
    longest cell needs (its longest item, for a list column), the header wrapping between words."""
    widths = []
    for j, col in enumerate(data.columns):
        if least:
            header = max((cell_len(w) for w in col.header.split()), default=0)
            texts = [item for row in cells for item in _items(col, row[j].plain)]
        else:
            header, texts = cell_len(col.header), [row[j].plain for row in cells]
        widths.append(max([header, *(cell_len(t) for t in texts)]))
    return widths


def _table_width(widths: Sequence[int]) -> int:
    # A boxed table with one space of padding each side: "│ a │ b │" is sum(widths) + 3 per column + 1.
    return sum(widths) + 3 * len(widths) + 1


def _lines(data: TableData, cells, cols: Sequence[int], widths: Sequence[int]) -> int:
    """Lines a table part takes: borders, its header (words wrapped) and its rows (list cells folded)."""
    header = 1
    for j, w in zip(cols, widths, strict=True):
        n, used = 1, 0
        for word in data.columns[j].header.split():
            used = cell_len(word) if used == 0 else used + 1 + cell_len(word)
            if used > w:
                n, used = n + 1, cell_len(word)
        header = max(header, n)
    rows = 0
    for row in cells:
        rows += max(
            _fold(data.columns[j], row[j].plain, w).count("\n") + 1 for j, w in zip(cols, widths, strict=True)
        )
    return 3 + header + rows


def _part(
    data: TableData, cols: list[int], least: list[int], natural: list[int], width: int
) -> tuple[list[int], list[int]]:
    """The part's widths: the least each column needs, then the room left given back to unfold list cells
    (which would cost lines in every row they fold), then to unwrap headers."""
    widths = {j: least[j] for j in cols}
    room = width - _table_width(list(widths.values()))
    for j in sorted(cols, key=lambda j: not data.columns[j].sep):
        extra = min(room, natural[j] - least[j])
        widths[j] += extra
        room -= extra
    return cols, [widths[j] for j in cols]


def _pack(least: Sequence[int], width: int) -> list[list[int]] | None:
    """Columns 1.. packed in order into parts that fit `width` next to column 0; None if one cannot."""
    parts: list[list[int]] = []
    current: list[int] = []
    for j in range(1, len(least)):
        if _table_width([least[0], least[j]]) > width:
            return None
        if _table_width([least[0], *(least[k] for k in current), least[j]]) <= width:
            current.append(j)
        else:
            parts.append(current)
            current = [j]
    if current:
        parts.append(current)
    return [[0, *p] for p in parts]


def layout(data: TableData, width: int | None, color: bool = True) -> Plan:
    """How to show `data` at a terminal `width` (None: as wide as it needs).

    Wide when the whole table fits (list cells folded if that makes it fit); otherwise the table split into
    parts or one block per row, whichever takes fewer lines (one row is always a block: a vertical form).
    """
    cells = _cells(data, color)
    natural, least = _widths(data, cells), _widths(data, cells, least=True)
    every = list(range(len(natural)))
    if width is None or _table_width(natural) <= width:
        return Plan("wide", [(every, natural)])
    if _table_width(least) <= width:
        return Plan("wide", [_part(data, every, least, natural, width)])
    packed = _pack(least, width) if len(cells) > 1 else None
    if packed is None:
        return Plan("blocks", [])
    parts = [_part(data, cols, least, natural, width) for cols in packed]
    split_lines = sum(_lines(data, cells, cols, widths) for cols, widths in parts)
    block_lines = len(cells) * len(data.columns)
    return Plan("split", parts) if split_lines <= block_lines else Plan("blocks", [])


def _rich_table(data: TableData, cells, cols, widths, title: str | None, caption: str | None, plain: bool):
    table = Table(
        title=title,
        caption=caption,
        box=box.SIMPLE_HEAD if plain else box.HEAVY_HEAD,
        show_edge=not plain,
        title_justify="left" if plain else "center",
        caption_justify="left",
    )
    for j, w in zip(cols, widths, strict=True):
        col = data.columns[j]
        # fold, never an ellipsis: were a cell ever narrower than its text, it would continue on the next line
        table.add_column(col.header, justify="right" if col.numeric else "left", width=w, overflow="fold")
    for row in cells:
        table.add_row(
            *(
                Text(_fold(data.columns[j], row[j].plain, w)) if data.columns[j].sep else row[j]
                for j, w in zip(cols, widths, strict=True)
            )
        )
    return table


def caption(data: TableData, color: bool, markdown: bool = False) -> str:
    """The notes, and how the best cells are marked where the table marks them."""
    if not data.best_note:
        return data.notes
    how = "Bold" if markdown else ("Bold green" if color else BEST_MARK.strip())
    return f"{data.notes} {how}: best in its column.".strip()


def _blocks(data: TableData, cells, width: int | None) -> list[Text]:
    """One block per row: its first cell as a heading when that names the row (unique), then `header  value`
    lines, a list value folded under itself; a blank line between blocks."""
    keyed = len(cells) > 1 and len({row[0].plain for row in cells}) == len(cells)
    first = 1 if keyed else 0
    pad = max((cell_len(c.header) for c in data.columns[first:]), default=0)
    lines: list[Text] = []
    for i, row in enumerate(cells):
        if i:
            lines.append(Text(""))
        if keyed:
            lines.append(Text(row[0].plain, style="bold"))
        for col, cell in zip(data.columns[first:], row[first:], strict=True):
            line = Text(f"  {col.header.ljust(pad)}  ", no_wrap=True, overflow="ignore")
            if col.sep and width:
                folded = _fold(col, cell.plain, max(1, width - line.cell_len))
                cell = Text(folded.replace("\n", "\n" + " " * line.cell_len))
            lines.append(line.append_text(cell))
    return lines


def renderables(data: TableData, width: int | None, color: bool = True, plain: bool = False) -> list:
    """What to print for a terminal `width` (None: as wide as the table needs)."""
    plan = layout(data, width, color)
    cells = _cells(data, color)
    note = caption(data, color)
    if plan.kind == "blocks":
        return [Text(data.title, style="bold"), *_blocks(data, cells, width), *([Text(note)] if note else [])]
    if len(plan.parts) == 1:
        ((cols, widths),) = plan.parts
        return [_rich_table(data, cells, cols, widths, data.title, note or None, plain)]
    # Split: the caption goes under the last part at the full width, not squeezed to that part's width.
    parts = [
        _rich_table(data, cells, cols, widths, data.title if i == 0 else None, None, plain)
        for i, (cols, widths) in enumerate(plan.parts)
    ]
    return [*parts, *([Text(note)] if note else [])]


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
        width=max(console.width, _table_width(layout(data, None, color).parts[0][1])),
        color_system=console.color_system,
        highlight=False,
        emoji=False,
    )
    for part in renderables(data, None, color=color, plain=True):
        wide.print(part, crop=False)
    console.file.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))
    console.file.flush()
