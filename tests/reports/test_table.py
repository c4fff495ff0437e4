"""Tables never cut a number: at 80 and 200 columns, piped, and as tsv, json and markdown."""

from __future__ import annotations

import csv
import io
import json
import re
import statistics

import pytest
from rich.console import Console
from rich.text import Text

from cadence.reports.layout import layout, print_table
from cadence.reports.table import compare_table

STRATEGIES = ("full-batch", "mini-batch 64", "online")
OPTIMIZERS = ("sgd", "momentum", "adam")


@pytest.fixture
def grid(make_comparison):
    """Nine configurations x three seeds, with six-digit throughputs, goals reached in some seeds only and
    early stops: the cells that were cut before (`489… ± 166…`, `early-stopp…`)."""
    groups = {}
    for i, strategy in enumerate(STRATEGIES):
        for j, optimizer in enumerate(OPTIMIZERS):
            k = 3 * i + j
            seeds = []
            for seed in range(3):
                t = 0.0125 + 0.001 * k + 0.0007 * seed  # 6,285 samples in ~0.013 s: ~480,000 samples/s
                reach = 0.91 if (k + seed) % 3 else 0.85  # some seeds stay below the 0.9 goal
                seeds.append(
                    {
                        "test_accuracy": 0.961 + 0.001 * k + 0.002 * seed,
                        "curve": [
                            (1000 + 97 * k, t / 3, 0.5),
                            (3000 + 113 * seed, t / 2, reach),
                            (6285, t, reach),
                        ],
                        "stop_reason": "early-stopped" if seed < 2 and k % 2 else "budget",
                    }
                )
            groups[f"{strategy} + {optimizer}"] = seeds
    return make_comparison(groups, goal=0.9).to_dict()


def expected_cells(tree: dict) -> dict[str, list[str]]:
    """The cells each configuration's row must show whole, computed here from the raw runs."""
    out = {}
    for g in tree["groups"]:
        runs = [r for r in tree["runs"] if r["group"] == g["group"]]

        def stat(values, spec):
            mean, std = statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None
            return f"{mean:{spec}}" + ("" if std is None else f" ± {std:{spec}}")

        reached = [r for r in runs if r["goal_seconds"] is not None]
        cells = [
            g["label"],
            stat([r["test_accuracy"] for r in runs], ".3f"),
            stat([r["seconds"] for r in runs], ".2f"),
            stat([r["samples_per_s"] for r in runs], ",.0f"),
            stat([r["goal_samples"] for r in reached], ",.0f"),
            f"{len(reached)}/{len(runs)}",
        ]
        stops = [r["stop_reason"] for r in runs]  # a list: it may break after a comma, never inside an item
        cells += [f"{s} ×{stops.count(s)}" for s in dict.fromkeys(stops)]
        out[g["label"]] = cells
    return out


def render(data, width: int | None, terminal: bool = True, color: bool = False) -> str:
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=width or 80,
        force_terminal=terminal,
        color_system="truecolor" if color else None,
        legacy_windows=False,
    )
    print_table(console, data)
    return Text.from_ansi(buf.getvalue()).plain if color else buf.getvalue()


def assert_whole(text: str, tree: dict, width: int | None = None) -> None:
    assert "…" not in text
    lines = text.splitlines()
    if width:
        assert max(len(line) for line in lines) <= width
    for label, cells in expected_cells(tree).items():
        for cell in cells:
            assert any(cell in line for line in lines), f"{label}: {cell!r} not whole on one line"


@pytest.mark.parametrize("width", [80, 200])
def test_every_number_appears_whole_at_80_and_200_columns(grid, width):
    text = render(compare_table(grid), width)
    assert_whole(text, grid, width)
    assert "early-stopped ×2" in text


def test_at_200_columns_each_configuration_is_one_row_with_all_its_cells(grid):
    text = render(compare_table(grid), 200)
    assert text.count("┃ configuration") == 1  # one table
    for label, cells in expected_cells(grid).items():
        (line,) = [line for line in text.splitlines() if f" {label} " in line]
        positions = [line.index(cell) for cell in cells]
        assert positions == sorted(positions), (label, line)  # in column order, on the row's one line


def test_at_80_columns_the_table_splits_and_every_part_names_its_rows(grid):
    data = compare_table(grid)
    plan = layout(data, 80, color=False)
    assert plan.kind == "split" and len(plan.parts) > 1
    text = render(data, 80)
    for label in expected_cells(grid):
        assert len(re.findall(rf"│ {re.escape(label)} +│", text)) == len(plan.parts)
    assert max(len(line) for line in text.splitlines()) <= 80


def test_a_narrow_terminal_gets_one_block_per_configuration(grid):
    data = compare_table(grid)
    assert layout(data, 44, color=False).kind == "blocks"
    text = render(data, 44)
    assert_whole(text, grid)
    assert "  samples to goal  " in text  # header: value lines


def test_colour_marks_the_best_cell_without_widening_it(grid):
    text = render(compare_table(grid), 80, color=True)
    assert_whole(text, grid, 80)
    assert " *" not in text and "Bold green: best in its column." in text.replace("\n", " ")


def test_piped_output_is_one_plain_wide_table(grid, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    text = render(compare_table(grid), None, terminal=False)
    assert not set("│┃━┏") & set(text)  # no box drawing
    assert all(line == line.rstrip() for line in text.splitlines())
    for label, cells in expected_cells(grid).items():
        (line,) = [line for line in text.splitlines() if line.lstrip().startswith(label + " ")]
        assert all(cell in line for cell in cells), (label, line)
    assert "*: best in its column." in text


def test_piped_output_with_columns_set_is_laid_out_for_that_width(grid, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = render(compare_table(grid), 80, terminal=False)
    assert_whole(text, grid, 80)


def test_tsv_and_json_hold_the_raw_values_at_full_precision(grid):
    data = compare_table(grid)
    buf = io.StringIO()
    print_table(Console(file=buf), data, "tsv")
    rows = list(csv.DictReader(io.StringIO(buf.getvalue()), delimiter="\t"))
    buf = io.StringIO()
    print_table(Console(file=buf), data, "json")
    records = json.loads(buf.getvalue())
    assert (
        [r["configuration"] for r in rows] == [r["configuration"] for r in records] == list(expected_cells(grid))
    )
    for g, row, record in zip(grid["groups"], rows, records, strict=True):
        acc = [r["test_accuracy"] for r in grid["runs"] if r["group"] == g["group"]]
        assert float(row["test_accuracy_mean"]) == record["test_accuracy_mean"] == statistics.fmean(acc)
        assert float(row["test_accuracy_std"]) == record["test_accuracy_std"] == statistics.stdev(acc)
        assert record["stop_reasons"] == g["stop_reasons"]


def test_markdown_is_a_table_with_the_best_cells_in_bold(grid):
    buf = io.StringIO()
    print_table(Console(file=buf), compare_table(grid), "markdown")
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 9 and len({line.count(" | ") for line in lines[2:]}) == 1
    best = max(grid["groups"], key=lambda g: g["stats"]["test_accuracy"]["mean"])
    (row,) = [line for line in lines if line.startswith(f"| {best['label']} |")]
    assert re.search(r"\| \*\*0\.9\d\d ± 0\.00\d\*\* \|", row)
