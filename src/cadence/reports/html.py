"""The comparison report: one self-contained HTML file (inline CSS, images as base64 data URIs, no scripts,
no network fetches) with the recommendation, the table, the plots, every run, the exact configuration,
library versions and machine facts. Written by hand: it is one page of string formatting.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from cadence.comparison.config import dump_compare_file
from cadence.reports.recommend import Recommendation, recommend
from cadence.reports.table import HEADERS, compare_columns, compare_rows, goal_text

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1d1d1f; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; } .warning { background: #fff3cd; padding: .6rem 1rem; border-radius: 6px; }
#recommendation { background: #eef6ee; padding: .8rem 1.2rem; border-radius: 8px; }
#recommendation .headline { font-size: 1.15rem; font-weight: 600; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; } .wide { overflow-x: auto; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #e5e5e5; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text { text-align: left; }
td.best { color: #0a6b2d; font-weight: 700; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: 13px; }
.note { color: #555; font-size: .9rem; }
"""


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _summary_table(result: dict) -> str:
    keys = compare_columns(result)
    head = "".join(f"<th>{escape(HEADERS.get(k, k))}</th>" for k in keys)
    rows = []
    for group, row in zip(result["groups"], compare_rows(result), strict=True):
        cells = "".join(
            f'<td data-col="{k}"{" class=best" if best else ""}>{escape(text)}</td>'
            for k, (text, best) in row["cells"].items()
        )
        rows.append(
            f'<tr data-group="{group["group"]}"><td data-col="label">{escape(row["label"])}</td>'
            f'<td data-col="lr">{escape(row["lr"])}</td>{cells}'
            f'<td data-col="stop_reasons" class="text">{escape(row["stops"])}</td></tr>'
        )
    return (
        f'<table id="summary"><thead><tr><th>configuration</th><th>lr</th>{head}<th>stop reasons</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _runs_table(result: dict) -> str:
    metric = result["metric"]
    cols = ("seed", metric, "test_loss", "updates", "samples_seen", "seconds", "samples_per_s", "goal_seconds")
    head = "".join(f"<th>{escape(c)}</th>" for c in ("configuration", *cols, "stop reason"))
    body = []
    for run in result["runs"]:
        cells = []
        for c in cols:
            v = run.get(c)
            cells.append("–" if v is None else (f"{v:.4g}" if isinstance(v, float) else f"{v:,}"))
        reason = run.get("stop_reason", "")
        if run.get("error"):
            reason += f": {run['error']}"
        body.append(
            f"<tr><td>{escape(run['label'])}</td>{''.join(f'<td>{c}</td>' for c in cells)}"
            f'<td class="text">{escape(reason)}</td></tr>'
        )
    return f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _environment(result: dict) -> str:
    env = result.get("environment", {})
    rows = [(k, env.get(k)) for k in ("python", "platform", "cpu", "cpu_count", "usable_cores", "memory_gb")]
    rows += [("workers", result.get("workers")), ("torch threads per worker", result.get("threads_per_worker"))]
    rows += [(name, version) for name, version in env.get("libraries", {}).items()]
    body = "".join(f'<tr><td>{escape(str(k))}</td><td class="text">{escape(str(v))}</td></tr>' for k, v in rows)
    return f'<table id="environment"><tbody>{body}</tbody></table>'


FIGURES = {
    "val_accuracy": "Validation accuracy against updates, samples seen and wall seconds.",
    "val_r2": "Validation R² against updates, samples seen and wall seconds.",
    "val_loss": "Validation loss against updates, samples seen and wall seconds.",
    "lr": "Learning rate over the run.",
    "test": "Test metric per configuration (mean ± std over seeds).",
}


def render_html(result: dict, plots: dict[str, Path], advice: Recommendation | None = None) -> str:
    """The report as one HTML string; `plots` are inlined, so the file needs nothing else."""
    advice = advice or recommend(result)
    data = result["data"]
    seeds = len(result["compare"]["seeds"])
    title = f"Cadence compare: {data['name']}"
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
        f"<p class=meta>Command: <code>{escape(result['command'])}</code></p>" if result.get("command") else ""
    )
    reasons = "".join(f"<li>{escape(r)}</li>" for r in advice.reasons)
    figures = "".join(
        f'<figure><img src="{_img(path)}" alt="{escape(FIGURES.get(name, name))}">'
        f"<figcaption>{escape(FIGURES.get(name, name))}</figcaption></figure>"
        for name, path in plots.items()
    )
    config_yaml = dump_compare_file(result["config"], result["compare"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{escape(title)}: which strategy, optimizer and schedule?</h1>
<p class="meta">{meta}</p>{command}{warning}
<section id="recommendation"><h2>Recommendation</h2>
<p class="headline">{escape(advice.headline)}</p><ul>{reasons}</ul></section>
<section><h2>Results</h2><div class="wide">{_summary_table(result)}</div>
<p class="note">Mean ± standard deviation over seeds. Bold green: the best of its column (for the goal
columns, among configurations that reached the goal in every seed). Time and samples to the goal are
measured at evaluations, so they are exact to one evaluation interval. Interrupted or failed runs are
left out of the statistics.</p></section>
<section id="plots"><h2>Plots</h2>{figures}</section>{tuning_section(result)}
<section><h2>Every run</h2><details><summary>{len(result["runs"])} runs</summary>
<div class="wide">{_runs_table(result)}</div></details>
</section>
<section><h2>Exact configuration</h2><p class="note">Rerun it with <code>cadence compare -c compare.yaml</code>;
results.json holds each run's full config and history.</p><pre id="config">{escape(config_yaml)}</pre></section>
<section><h2>Machine and libraries</h2>{_environment(result)}</section>
</body></html>
"""


def tuning_section(result: dict, plots: dict[str, Path] | None = None) -> str:
    """The tuning section (issue 13), or "" when `result` holds no tuning: the lr range test of each
    configuration (`result["lr_find"]`, from `cadence compare --tune-lr`), batch-size advice
    (`result["batch_size"]`) and an Optuna study (`result["trials"]`, with its Optuna plots in `plots`).
    The pieces are drawn by reports/tuning.py; figures are inlined like the rest of the page."""
    from cadence.reports import tuning

    parts = []
    if result.get("lr_find"):
        parts.append(
            '<section id="lr-find"><h2>Learning rates from the range test</h2><p class="note">Each '
            "configuration's lr was set by a learning-rate range test (the lr growing exponentially over a "
            "short run of its first seed's model, loss smoothed, the rule's pick marked) before its runs, which "
            f"start from fresh weights.</p>{tuning.lr_find_html(result['lr_find'])}</section>"
        )
    if result.get("batch_size"):
        parts.append(
            f'<section id="batch-size"><h2>Batch size</h2>{tuning.batch_size_html(result["batch_size"])}</section>'
        )
    if result.get("trials") is not None and result.get("study"):
        parts.append(
            f'<section id="study"><h2>Hyperparameter search</h2>{tuning.study_html(result, plots or {})}</section>'
        )
    return "".join(parts)


def write_html(
    result: dict, plots: dict[str, Path], path: str | Path, advice: Recommendation | None = None
) -> Path:
    """Write the self-contained report to `path`."""
    path = Path(path)
    path.write_text(render_html(result, plots, advice), encoding="utf-8")
    return path
