"""Tuning's figures and tables: the lr range test curve, the batch-size measurements, Optuna's own plots
(optimization history, parallel coordinate, parameter importance: its matplotlib backend, no plotly), rich
tables for the terminal, and the HTML pieces html.tuning_section assembles. Reads JSON-ready dicts
(LRRangeResult.to_dict(), BatchSizeAdvice.to_dict(), TuneResult.to_dict()), except the Optuna plots,
which need the study itself. html.tuning_section puts `tuning_html` into the comparison report.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from html import escape
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.table import Table


def png_bytes(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)  # Agg explicitly: no display, no pyplot global state
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def save_png(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig))
    return path


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _finite(values) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def lr_find_figure(record: dict) -> Figure:
    """Loss against lr on a log axis: each update's loss, the smoothed curve, the suggestion marked."""
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    lrs, losses, smoothed = record["lrs"], _finite(record["losses"]), _finite(record["smoothed"])
    ax.plot(lrs, losses, ".", color="0.7", markersize=3, label="loss of each update")
    ax.plot(lrs, smoothed, color="tab:blue", linewidth=2, label="smoothed (bias-corrected EMA)")
    for rule, lr in record.get("suggestions", {}).items():
        if lr is None:
            continue
        chosen = rule == record["rule"]
        i = min(range(len(lrs)), key=lambda j: abs(math.log(lrs[j]) - math.log(lr)))
        ax.axvline(lr, color="tab:red" if chosen else "0.5", linestyle="--", linewidth=1.2 if chosen else 0.8)
        ax.plot([lr], [smoothed[i]], "o", color="tab:red" if chosen else "0.5", label=f"{rule}: lr {lr:.3g}")
    if record.get("suggestion") is None:
        ax.text(
            0.02,
            0.95,
            "no suggestion: the loss never decreased",
            transform=ax.transAxes,
            va="top",
            color="tab:red",
        )
    finite = [v for v in smoothed + losses if math.isfinite(v)]
    if finite:  # the divergence can be orders of magnitude above the valley: keep the valley readable
        low, start = min(finite), next((v for v in smoothed if math.isfinite(v)), max(finite))
        span = max(start - low, 1e-3 * abs(start) + 1e-12)
        top = min(max(finite), start + span)
        ax.set_ylim(low - 0.05 * (top - low), top + 0.05 * (top - low))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test{': ' + record['label'] if record.get('label') else ''}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower left", fontsize=9, frameon=False)
    return fig


def batch_size_figure(advice: dict) -> Figure:
    """Two panels against batch size: samples per second here, and the estimated time to a given loss."""
    rows = advice["rows"]
    sizes = [r["batch_size"] for r in rows]
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    left.plot(sizes, [r["samples_per_s"] for r in rows], "o-", color="tab:blue")
    left.set_ylabel("samples per second (this machine)")
    right.plot(sizes, [r["time_rel"] for r in rows], "o-", color="tab:green", label="time to a given loss")
    right.plot(sizes, [r["updates_rel"] for r in rows], ":", color="0.5", label="updates needed")
    right.plot(sizes, [r["samples_rel"] for r in rows], "--", color="0.5", label="samples needed")
    right.axvline(
        advice["critical"],
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label=f"critical ≈ {advice['critical']:.0f}",
    )
    right.plot([advice["best"]], [1.0], "o", color="tab:red", markersize=9, label=f"advice: {advice['best']}")
    right.set_yscale("log")
    right.set_ylabel("relative to the best size (log scale)")
    right.legend(fontsize=9, frameon=False)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (log scale)")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"Batch size: gradient noise scale B_simple ≈ {advice['noise']['b_simple']:.0f}")
    fig.subplots_adjust(wspace=0.28)
    return fig


OPTUNA_PLOTS = {
    "history": "Optimization history: each trial's objective value and the best so far.",
    "parallel": "Parallel coordinates: each complete trial's parameters, coloured by its objective value.",
    "importance": "Parameter importance (Optuna's PED-ANOVA evaluator) for the objective.",
}


def optuna_figures(study, out_dir: str | Path) -> tuple[dict[str, Path], list[str]]:
    """Optuna's matplotlib plots of `study` as PNG files; returns (paths by name, notes on plots left out).

    Optuna draws through pyplot and sets the ggplot style globally; both are fenced in here (rc_context,
    figures closed), so later figures in the process are not restyled.
    """
    import matplotlib
    from matplotlib import pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    makers = {
        "history": lambda: ovm.plot_optimization_history(study),
        "parallel": lambda: ovm.plot_parallel_coordinate(study),
        "importance": lambda: ovm.plot_param_importances(study),
    }
    paths: dict[str, Path] = {}
    notes: list[str] = []
    for name, make in makers.items():
        if name != "history" and len(complete) < 2:
            notes.append(f"{name}: needs at least 2 complete trials; the study has {len(complete)}")
            continue
        with matplotlib.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)
            try:
                ax = make()
            except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. importance of a constant
                notes.append(f"{name}: {err}")
                plt.close("all")
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(9, 4.8)
            path = out_dir / f"optuna_{name}.png"
            fig.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(fig)
            paths[name] = path
    return paths, notes


# ---- terminal tables ----------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trials_table(summary: dict, limit: int = 15) -> Table:
    """The best `limit` complete trials, best first, then a count of every trial by state."""
    direction = summary["direction"]
    trials = summary["trials"]
    scored = sorted(
        (t for t in trials if t["value"] is not None and t["state"] == "complete"),
        key=lambda t: t["value"],
        reverse=direction == "maximize",
    )
    table = Table(title=f"Study {summary['study']}: {len(trials)} trials, {summary['metric']} ({direction})")
    for col, justify in (("trial", "right"), (summary["metric"], "right"), ("seed", "right"), ("s", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    table.add_column("parameters", overflow="fold")
    for t in scored[:limit]:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items())
        table.add_row(str(t["number"]), f"{t['value']:.4f}", _fmt(t["seed"]), f"{t['seconds'] or 0:.1f}", params)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    table.caption = " · ".join(f"{state} {n}" for state, n in sorted(counts.items()))
    return table


def batch_size_table(advice: dict) -> Table:
    table = Table(
        title=f"Batch sizes (critical ≈ {advice['critical']:.0f}, B_simple from {advice['noise']['draws']} draws)"
    )
    for col in ("batch", "samples/s", "s/update", "peak MiB", "updates", "samples", "time"):
        table.add_column(col, justify="right")
    for r in advice["rows"]:
        table.add_row(
            str(r["batch_size"]),
            f"{r['samples_per_s']:,.0f}",
            f"{r['seconds_per_update']:.4g}",
            _fmt(r["peak_memory_mib"]),
            f"{r['updates_rel']:.2f}x",
            f"{r['samples_rel']:.2f}x",
            f"{r['time_rel']:.2f}x" + (" ←" if r["batch_size"] == advice["best"] else ""),
        )
    table.caption = (
        f"peak MiB: {advice['memory']}. updates, samples, time: estimated to reach a given loss, relative "
        "to the best size"
    )
    return table


# ---- HTML pieces ----------------------------------------------------------------------------------------


def _figure(png: bytes, caption: str) -> str:
    alt = escape(caption)
    return f'<figure><img src="{data_uri(png)}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


def lr_find_html(records: list[dict]) -> str:
    """A table of each configuration's range test and its curve."""
    rows = "".join(
        f"<tr><td>{escape(r.get('label', ''))}</td><td>{_fmt(r.get('suggestion'))}</td>"
        f"<td>{_fmt(r.get('lr_used'))}</td><td>{escape(r['rule'])}</td>"
        f'<td class="text" style="white-space: normal">{escape(r["message"])}</td></tr>'
        for r in records
    )
    table = (
        '<table id="lr-find"><thead><tr><th>configuration</th><th>suggested lr</th><th>lr used</th><th>rule</th>'
        f"<th>note</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    figures = "".join(
        _figure(png_bytes(lr_find_figure(r)), f"LR range test: {r.get('label', '')} (loss against lr, log scale)")
        for r in records
    )
    return f'<div class="wide">{table}</div>{figures}'


def batch_size_html(advice: dict) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("batch", "samples/s", "peak MiB", "updates", "samples", "time"))
    body = "".join(
        f"<tr><td>{r['batch_size']}</td><td>{r['samples_per_s']:,.0f}</td><td>{_fmt(r['peak_memory_mib'])}</td>"
        f"<td>{r['updates_rel']:.2f}x</td><td>{r['samples_rel']:.2f}x</td><td>{r['time_rel']:.2f}x</td></tr>"
        for r in advice["rows"]
    )
    caption = "Batch size: throughput here, and estimated time to a given loss (McCandlish et al. 2018)."
    return (
        f'<p class="headline">{escape(advice["advice"])}</p><table id="batch-size"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>{_figure(png_bytes(batch_size_figure(advice)), caption)}"
    )


def study_html(summary: dict, plots: dict[str, Path]) -> str:
    """Best trial, its test-split run, the trials and Optuna's plots."""
    best = summary.get("best")
    final = summary.get("final") or {}
    lines = []
    if best:
        params = ", ".join(f"{k} = {_fmt(v)}" for k, v in best["params"].items())
        lines.append(
            f"Best: trial {best['number']}, {summary['metric']} {best['value']:.4f} "
            f"(seed {best['seed']}): {params}."
        )
    test = {k: v for k, v in final.items() if k.startswith("test_") and isinstance(v, float)}
    if test:
        how = "on train + validation (refit)" if summary.get("refit") else "on the train split"
        lines.append(
            f"The best config, trained once more {how}, on the test split: "
            + ", ".join(f"{k} {v:.4f}" for k, v in test.items())
            + "."
        )
    trials = summary["trials"]
    keys = sorted({k for t in trials for k in t["params"]})
    head = "".join(
        f"<th>{escape(c)}</th>"
        for c in ("trial", "state", summary["metric"], *keys, "seed", "seconds", "retry of")
    )
    body = "".join(
        f"<tr><td>{t['number']}</td><td>{escape(t['state'])}</td><td>{_fmt(t['value'])}</td>"
        + "".join(f"<td>{escape(_fmt(t['params'].get(k)))}</td>" for k in keys)
        + f"<td>{_fmt(t['seed'])}</td><td>{_fmt(t['seconds'])}</td><td>{_fmt(t['retry_of'])}</td></tr>"
        for t in trials
    )
    figures = "".join(
        f'<figure><img src="{data_uri(Path(path).read_bytes())}" alt="{escape(OPTUNA_PLOTS.get(name, name))}">'
        f"<figcaption>{escape(OPTUNA_PLOTS.get(name, name))}</figcaption></figure>"
        for name, path in plots.items()
    )
    notes = "".join(
        f'<p class="note">{escape(n)}</p>' for n in [*summary.get("notes", []), *summary.get("plot_notes", [])]
    )
    return (
        "".join(f'<p class="headline">{escape(line)}</p>' for line in lines)
        + f'<details><summary>{len(trials)} trials</summary><div class="wide"><table id="trials">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div></details>{figures}{notes}"
    )


def tuning_html(result: dict, plots: dict[str, Path] | None = None) -> str:
    """The tuning sections, or "" when `result` holds no tuning: the lr range test of each configuration
    (`result["lr_find"]`, from `cadence compare --tune-lr`), batch-size advice (`result["batch_size"]`) and an
    Optuna study (`result["trials"]`, with its Optuna plots in `plots`). Figures are inlined."""
    parts = []
    if result.get("lr_find"):
        parts.append(
            '<section id="lr-find"><h2>Learning rates from the range test</h2><p class="note">Each '
            "configuration's lr was set by a learning-rate range test (the lr growing exponentially over a "
            "short run of its first seed's model, loss smoothed, the rule's pick marked) before its runs, which "
            f"start from fresh weights.</p>{lr_find_html(result['lr_find'])}</section>"
        )
    if result.get("batch_size"):
        parts.append(
            f'<section id="batch-size"><h2>Batch size</h2>{batch_size_html(result["batch_size"])}</section>'
        )
    if result.get("trials") is not None and result.get("study"):
        parts.append(
            f'<section id="study"><h2>Hyperparameter search</h2>{study_html(result, plots or {})}</section>'
        )
    return "".join(parts)


def write_tuning_report(summary: dict, plots: dict[str, Path], path: str | Path) -> Path:
    """The study's self-contained HTML page (report.html of `cadence tune`)."""
    from cadence.reports.html import CSS

    title = f"Cadence tune: {summary.get('data', {}).get('name', '')}"
    meta = (
        f"{escape(summary.get('data', {}).get('description', ''))} · study {escape(summary['study'])} in "
        f"{escape(summary['storage'])} · {summary.get('workers', 1)} workers · "
        f"{summary.get('search_seconds', 0):.1f} s · {escape(summary.get('created', ''))}"
    )
    command = (
        f"<p class=meta>Command: <code>{escape(summary['command'])}</code></p>" if summary.get("command") else ""
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body><h1>{escape(title)}</h1><p class="meta">{meta}</p>{command}
{tuning_html(summary, plots)}
</body></html>
"""
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


__all__ = [
    "batch_size_figure",
    "batch_size_html",
    "batch_size_table",
    "lr_find_figure",
    "lr_find_html",
    "optuna_figures",
    "png_bytes",
    "save_png",
    "study_html",
    "trials_table",
    "tuning_html",
    "write_tuning_report",
]
