"""The comparison report: one self-contained HTML file (inline CSS, images as base64 data URIs, no scripts,
no network fetches), written by hand as one page of string formatting. It is a list of sections, each one
function of the `Page`; a new section (tuning, ...) is one function added to SECTIONS.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from xml.sax.saxutils import quoteattr

from cadence.comparison.config import dump_compare_file
from cadence.reports.recommend import Recommendation, recommend
from cadence.reports.table import HEADERS, compare_columns, compare_rows, goal_text

# The results table fits the page: a cell's `± std` sits under its mean, headers wrap between words, a list
# cell wraps after a comma. Under 1,200 px (an 800 px window) it would still overflow, so there it shows
# its first columns and a second table below repeats the configuration with the rest, as the terminal table
# splits. The recommended row is tinted and labelled by CSS, so its label cell's text stays the label.
NARROW = 1200
CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1d1d1f; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; } .warning { background: #fff3cd; padding: .6rem 1rem; border-radius: 6px; }
#recommendation { background: #eef6ee; padding: .8rem 1.2rem; border-radius: 8px; }
#recommendation .headline { font-size: 1.15rem; font-weight: 600; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .3rem .55rem; border-bottom: 1px solid #e5e5e5; text-align: right; vertical-align: top; }
th { vertical-align: bottom; font-weight: 600; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
table.results { width: 100%; margin-top: .6rem; }
.v { white-space: nowrap; } .sd { display: block; white-space: nowrap; color: #666; font-size: .85em; }
td.best { color: #0a6b2d; font-weight: 700; } td.best .sd { color: #0a6b2d; }
tr.recommended td { background: #dff0e3; }
tr.recommended td:first-child { box-shadow: inset 4px 0 0 #1e7b3a; font-weight: 700; }
tr.recommended td:first-child::after { content: "recommended"; display: block; font-size: .75rem;
       font-weight: 600; color: #1e7b3a; text-transform: uppercase; letter-spacing: .04em; }
table.second { display: none; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: 13px; white-space: pre-wrap; }
.note { color: #555; font-size: .9rem; }
@media (max-width: NARROWpx) {
  body { font-size: 14px; padding: 0 .5rem; margin-top: 1rem; }
  th, td { padding: .25rem .35rem; }
  table.results { font-size: 13.5px; }
  #summary .later { display: none; }
  table.second { display: table; }
}
""".replace("NARROW", str(NARROW))
# The columns the first table keeps under NARROW px; the second table shows the configuration and the rest.
FIRST = ("label", "lr", "test_accuracy", "test_r2", "test_loss", "updates", "samples_seen", "seconds")


@dataclass
class Page:
    """What every section reads: the comparison (results.json's dict), its plots and the recommendation."""

    result: dict
    plots: dict[str, Path]
    advice: Recommendation


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _size(path: Path) -> str:
    """`width="W" height="H"` from the PNG header (its IHDR chunk: bytes 16-24), so the browser lays the page
    out at its final size before any image is decoded: nothing moves when the plots arrive."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return ""
    width, height = struct.unpack(">II", head[16:24])
    return f'width="{width}" height="{height}"'


def _values(text: str) -> str:
    """`0.961 ± 0.010` as the mean with the `± std` under it (one text for copying: "0.961 ± 0.010")."""
    mean, _, std = text.partition(" ± ")
    return f'<span class="v">{escape(mean)}</span>' + (f'<span class="sd"> ± {escape(std)}</span>' if std else "")


def _items(text: str) -> str:
    """`early-stopped ×2, budget ×1` as unbreakable items that may wrap after their comma."""
    parts = text.split(", ")
    return " ".join(f'<span class="v">{escape(p)}{"," * (i < len(parts) - 1)}</span>' for i, p in enumerate(parts))


def _columns(result: dict) -> list[tuple[str, str, bool]]:
    """(key, header, numeric) of the results table, in order."""
    stats = [(k, HEADERS.get(k, k), True) for k in compare_columns(result)]
    return [
        ("label", "configuration", False),
        ("lr", "lr", True),
        *stats,
        ("at_goal", "at goal", True),
        ("stop_reasons", "stop reasons", False),
    ]


def _summary_table(page: Page, table_id: str, keys: list[str] | None = None) -> str:
    """The results table with the columns `keys` (all when None); columns after FIRST are marked `later`."""
    result, choice = page.result, page.advice.choice
    columns = [c for c in _columns(result) if keys is None or c[0] in keys]

    def attrs(key: str, numeric: bool, best: bool = False) -> str:
        classes = [*(["later"] if keys is None and key not in FIRST else []), *([] if numeric else ["text"])]
        classes += ["best"] if best else []
        return f' data-col="{key}"' + (f' class="{" ".join(classes)}"' if classes else "")

    head = "".join(f"<th{attrs(k, numeric)}>{escape(header)}</th>" for k, header, numeric in columns)
    rows = []
    for group, row in zip(result["groups"], compare_rows(result), strict=True):
        texts = {"label": escape(row["label"]), "lr": escape(row["lr"]), "at_goal": escape(row["at_goal"])}
        texts["stop_reasons"] = _items(row["stops"])
        cells = []
        for k, _, numeric in columns:
            if k in row["cells"]:
                text, best = row["cells"][k]
                cells.append(f"<td{attrs(k, numeric, best)}>{_values(text)}</td>")
            else:
                cells.append(f"<td{attrs(k, numeric)}>{texts[k]}</td>")
        mark = ' class="recommended" title="recommended"' if choice is not None and row["label"] == choice else ""
        rows.append(f'<tr data-group="{group["group"]}"{mark}>{"".join(cells)}</tr>')
    css = "results" if keys is None else "results second"
    body = f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
    return f'<table id="{table_id}" class="{css}">{body}</table>'


def _runs_table(result: dict) -> str:
    metric = result["metric"]
    cols = ("seed", metric, "test_loss", "updates", "samples_seen", "seconds", "samples_per_s", "goal_seconds")
    head = "".join(f"<th>{escape(c.replace('_', ' '))}</th>" for c in ("configuration", *cols))
    head += '<th class="text">engine</th><th class="text">stop reason</th>'
    body = []
    for run in result["runs"]:
        cells = []
        for c in cols:
            v = run.get(c)
            cells.append("–" if v is None else (f"{v:.4g}" if isinstance(v, float) else f"{v:,}"))
        reason = run.get("stop_reason", "")
        if run.get("error"):
            reason += f": {run['error']}"
        engine = _engine(run)
        body.append(
            f"<tr><td>{escape(run['label'])}</td>{''.join(f'<td>{c}</td>' for c in cells)}"
            f'<td class="text"{f" title={quoteattr(engine[1])}" if engine[1] else ""}>{escape(engine[0])}</td>'
            f'<td class="text">{escape(reason)}</td></tr>'
        )
    return f'<table id="runs" class="results"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _engine(run: dict) -> tuple[str, str]:
    """("c-kernel (cpu, 1 thread)", why no faster engine ran or ""): what trained the run, as the CLI says it."""
    if not run.get("engine"):  # a result saved before runs recorded their engine
        return "–", ""
    threads = run.get("threads")
    where = ", ".join(
        x for x in (run.get("device"), f"{threads} thread{'s' * (threads != 1)}" if threads else None) if x
    )
    return f"{run['engine']} ({where})" if where else run["engine"], run.get("engine_fallback") or ""


FIGURES = {
    "val_accuracy": "Validation accuracy against updates, samples seen and wall seconds.",
    "val_r2": "Validation R² against updates, samples seen and wall seconds.",
    "val_loss": "Validation loss against updates, samples seen and wall seconds (log scale).",
    "lr": "Learning rate over the run (shown because a schedule changed it).",
    "test": "Test metric per configuration (mean ± std over seeds); the leaders zoomed when the rest stretch "
    "the axis.",
}


# ---------------------------------------------------------------------------------------------------------
# The sections, in page order. Each returns its HTML, or "" to leave itself out.


def recommendation_section(page: Page) -> str:
    reasons = "".join(f"<li>{escape(r)}</li>" for r in page.advice.reasons)
    return (
        f'<section id="recommendation"><h2>Recommendation</h2>'
        f'<p class="headline">{escape(page.advice.headline)}</p><ul>{reasons}</ul></section>'
    )


def results_section(page: Page) -> str:
    later = ["label", *(k for k, _, _ in _columns(page.result) if k not in FIRST)]
    tables = _summary_table(page, "summary") + _summary_table(page, "summary-rest", later)
    return f"""<section id="results"><h2>Results</h2>{tables}
<p class="note">Mean ± standard deviation over seeds. Bold green: the best of its column (for the goal
columns, among configurations that reached the goal in every seed). At goal: the seeds that reached the goal,
which the goal columns average. Time and samples to the goal are measured at evaluations, so they are exact to
one evaluation interval. Interrupted or failed runs are left out of the statistics.</p></section>"""


def plots_section(page: Page) -> str:
    figures = "".join(
        f'<figure><img src="{_img(path)}" {_size(path)} decoding="sync" data-plot="{escape(name)}" '
        f'alt="{escape(FIGURES.get(name, name))}">'
        f"<figcaption>{escape(FIGURES.get(name, name))}</figcaption></figure>"
        for name, path in page.plots.items()
    )
    return f'<section id="plots"><h2>Plots</h2>{figures}</section>'


def tuning_section(page: Page) -> str:
    """The lr range test of each configuration (`cadence compare --tune-lr`, issue 13), or "". Drawn by
    reports/tuning.py, which also builds the page of `cadence tune`."""
    from cadence.reports.tuning import tuning_html

    return tuning_html(page.result)


def runs_section(page: Page) -> str:
    runs = page.result["runs"]
    return (
        f'<section id="every-run"><h2>Every run</h2><details><summary>{len(runs)} runs</summary>'
        f"{_runs_table(page.result)}</details></section>"
    )


def configuration_section(page: Page) -> str:
    config_yaml = dump_compare_file(page.result["config"], page.result["compare"])
    return (
        '<section id="configuration"><h2>Exact configuration</h2><p class="note">Rerun it with '
        "<code>cadence compare -c compare.yaml</code>; results.json holds each run's full config and history.</p>"
        f'<pre id="config">{escape(config_yaml)}</pre></section>'
    )


def machine_section(page: Page) -> str:
    result = page.result
    env = result.get("environment", {})
    rows = [(k, env.get(k)) for k in ("python", "platform", "cpu", "cpu_count", "usable_cores", "memory_gb")]
    rows += [("workers", result.get("workers")), ("torch threads per worker", result.get("threads_per_worker"))]
    rows += [(name, version) for name, version in env.get("libraries", {}).items()]
    body = "".join(f'<tr><td>{escape(str(k))}</td><td class="text">{escape(str(v))}</td></tr>' for k, v in rows)
    table = f'<table id="environment"><tbody>{body}</tbody></table>'
    return f'<section id="machine"><h2>Machine and libraries</h2>{table}</section>'


SECTIONS: tuple[Callable[[Page], str], ...] = (
    recommendation_section,
    results_section,
    plots_section,
    tuning_section,
    runs_section,
    configuration_section,
    machine_section,
)


def _header(page: Page) -> str:
    result = page.result
    data = result["data"]
    seeds = len(result["compare"]["seeds"])
    meta = (
        f"{escape(data['description'])} ({escape(data.get('split', ''))}) · "
        f"{result.get('n_configurations', len(result['groups']))} configurations × {seeds} seeds · "
        f"{escape(result['budget']['description'])} · goal: {escape(goal_text(result))} · "
        f"{result.get('workers', 1)} workers · {result.get('seconds', 0):.1f} s · "
        f"{escape(result.get('created', ''))}"
    )
    warning = ""
    if result.get("interrupted"):
        warning = (
            f'<p class="warning">Interrupted (Ctrl-C): {len(result["runs"])} of {result.get("n_runs")} runs '
            "are reported; runs still going were stopped and are marked interrupted.</p>"
        )
    command = (
        f'<p class="meta">Command: <code>{escape(result["command"])}</code></p>' if result.get("command") else ""
    )
    title = f"Cadence compare: {data['name']}"
    heading = f"<h1>{escape(title)}: which strategy, optimizer and schedule?</h1>"
    return f'{heading}<p class="meta">{meta}</p>{command}{warning}'


def render_html(result: dict, plots: dict[str, Path], advice: Recommendation | None = None) -> str:
    """The report as one HTML string; `plots` are inlined, so the file needs nothing else."""
    page = Page(result, plots, advice or recommend(result))
    body = "\n".join(part for part in (_header(page), *(section(page) for section in SECTIONS)) if part)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(f"Cadence compare: {result['data']['name']}")}</title><style>{CSS}</style></head>
<body>
{body}
</body></html>
"""


def write_html(
    result: dict, plots: dict[str, Path], path: str | Path, advice: Recommendation | None = None
) -> Path:
    """Write the self-contained report to `path`."""
    path = Path(path)
    path.write_text(render_html(result, plots, advice), encoding="utf-8")
    return path
