"""PNG plots of a comparison (matplotlib, Agg): validation curves against updates, samples seen and wall
seconds, the three axes strategies differ on, with a band of one standard deviation over seeds; lr over
time when a schedule varies it; the test metric per configuration on a zoomed axis. Reads results.json's
dict; draws nothing it does not hold.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

AXES = (("updates", "updates (log scale)"), ("samples", "samples seen"), ("seconds", "wall seconds"))
DPI = 100
# Sizes for the report page: a figure 10 in wide is 1,000 px; shown at 768 px (an 800 px window) an 11 pt
# tick label (15 px) is still 11.7 px. Wider figures shrank tick labels to ~7 px there.
WIDTH_IN, FONT_PT = 10.0, 11
RC = {"font.size": FONT_PT}
LINESTYLES = ("-", "--", ":", "-.")  # one per strategy (mini-batch sizes count as strategies)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")  # one per optimizer entry and schedule
LOSS_NAMES = {"classification": "mean cross-entropy", "regression": "mean squared error"}


def styles(groups: list[dict]) -> dict[int, dict]:
    """Per configuration (group id): its own colour, a line style for its strategy and a marker for its
    optimizer (with lr and schedule), so two lines differ in at least two of the three."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(groups) <= 10 else "tab20"]
    strategies = list(dict.fromkeys((g["strategy"], g.get("batch_size")) for g in groups))
    optimizers = list(dict.fromkeys((g["optimizer"], g["lr"], g.get("schedule")) for g in groups))
    return {
        g["group"]: {
            "color": cmap(i % cmap.N),
            "linestyle": LINESTYLES[strategies.index((g["strategy"], g.get("batch_size"))) % len(LINESTYLES)],
            "marker": MARKERS[optimizers.index((g["optimizer"], g["lr"], g.get("schedule"))) % len(MARKERS)],
        }
        for i, g in enumerate(groups)
    }


def _runs_by_group(result: dict) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {g["group"]: [] for g in result["groups"]}
    for run in result["runs"]:
        if run.get("history") and run.get("stop_reason") not in ("error", "interrupted"):
            out[run["group"]].append(run)
    return out


def seed_band(runs: list[dict], x: str, y: str, log: bool = False, points: int = 80):
    """Mean and standard deviation of `y` over the runs, interpolated on a common grid of `x`.

    The grid spans the x range every run covers (log-spaced if `log`); with one run its own points are
    returned (std zero).
    """
    curves = []
    for run in runs:
        pts = [(r[x], r[y]) for r in run["history"] if r.get(x) is not None and r.get(y) is not None]
        if pts:
            curves.append(np.array(pts, dtype=float))
    if not curves:
        return None
    if len(curves) == 1:
        c = curves[0]
        return c[:, 0], c[:, 1], np.zeros(len(c))
    lo = max(c[0, 0] for c in curves)
    hi = min(c[-1, 0] for c in curves)
    if not hi > lo:
        xs = np.array([hi])
    elif log and lo > 0:
        xs = np.geomspace(lo, hi, points)
    else:
        xs = np.linspace(lo, hi, points)
    ys = np.stack([np.interp(xs, c[:, 0], c[:, 1]) for c in curves])
    return xs, ys.mean(axis=0), ys.std(axis=0, ddof=1)


def lr_varies(result: dict) -> bool:
    """Whether any run's learning rate changed during the run (a schedule, warm-up or plateau cut)."""
    for run in result["runs"]:
        lrs = [r["lr"] for r in run.get("history", []) if isinstance(r.get("lr"), int | float)]
        if lrs and not math.isclose(min(lrs), max(lrs), rel_tol=1e-9):
            return True
    return False


def _legend(ax, handles: list, labels: list[str]) -> None:
    ax.axis("off")
    ax.legend(handles, labels, loc="center", frameon=False, ncol=1 if len(labels) <= 12 else 2, handlelength=3)


def _draw_curves(fig: Figure, result: dict, metric: str, axes_spec, title: str, ylabel: str, logy=False) -> list:
    """One panel per x axis plus a legend cell, two panels to a row; returns the panels."""
    groups = result["groups"]
    runs = _runs_by_group(result)
    style = styles(groups)
    goal = result["goal"]
    grid = fig.add_gridspec(2, 2, hspace=0.38, wspace=0.28)
    cells = [grid[0, 0], grid[0, 1], grid[1, 0], grid[1, 1]] if len(axes_spec) == 3 else [grid[0, 0], grid[0, 1]]
    panels = [fig.add_subplot(cell) for cell in cells[: len(axes_spec)]]
    handles, labels = [], []
    for ax, (x, xlabel) in zip(panels, axes_spec, strict=True):
        log = x == "updates"
        for k, g in enumerate(groups):
            band = seed_band(runs[g["group"]], x, metric, log=log)
            if band is None:
                continue
            xs, mean, std = band
            low, high = mean - std, mean + std
            if logy:  # a band below zero cannot be drawn on a log axis: clip it at a tenth of the mean
                low = np.maximum(low, mean / 10)
            s = style[g["group"]]
            # About six markers per line, shifted per configuration so that lines on top of each other
            # still show each one's markers.
            every = max(1, len(xs) // 6)
            ax.plot(xs, mean, label=g["label"], linewidth=1.6, markersize=6, markevery=(k % every, every), **s)
            ax.fill_between(xs, low, high, color=s["color"], alpha=0.15, linewidth=0)
        if metric == goal["metric"] and goal["value"] is not None:
            ax.axhline(goal["value"], color="0.35", linestyle=(0, (6, 3)), linewidth=0.9, label="goal")
        if log:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if not handles:
            handles, labels = ax.get_legend_handles_labels()
    fig.suptitle(title)
    legend_cell = grid[1, 1] if len(axes_spec) == 3 else grid[1, :]
    _legend(fig.add_subplot(legend_cell), handles, labels)
    return panels


def _zoom(groups: list[dict], metric: str) -> list[dict] | None:
    """The leading configurations, when the others stretch the axis so far that the leaders' differences
    vanish: those within a tenth of the whole range of the best, if their spread is under a quarter of it."""
    means = [g["stats"][metric]["mean"] for g in groups]
    best, span = max(means), max(means) - min(means)
    top = [g for g in groups if g["stats"][metric]["mean"] >= best - 0.1 * span]
    if len(top) < 2 or len(top) == len(groups):
        return None
    reach = max(_extent(top, metric)) - min(_extent(top, metric))
    return top if reach < 0.25 * (max(_extent(groups, metric)) - min(_extent(groups, metric))) else None


def _extent(groups: list[dict], metric: str) -> list[float]:
    out = []
    for g in groups:
        stats = g["stats"][metric]
        std = stats["std"] or 0.0
        out += [stats["mean"] - std, stats["mean"] + std, stats["min"], stats["max"]]
    return out


def _dots(ax, groups: list[dict], result: dict, metric: str, style: dict, runs: dict) -> None:
    """Mean ± std per configuration with its seeds as small dots, on an axis fitted to them (not 0-1)."""
    y = np.arange(len(groups))
    for i, g in enumerate(groups):
        stats, s = g["stats"][metric], style[g["group"]]
        seeds = [r[metric] for r in runs[g["group"]] if isinstance(r.get(metric), int | float)]
        ax.plot(seeds, [i] * len(seeds), linestyle="none", marker="o", markersize=4, color=s["color"], alpha=0.45)
        ax.errorbar(stats["mean"], i, xerr=stats["std"] or 0.0, color=s["color"], marker=s["marker"],
                    markersize=8, capsize=4, linewidth=1.6)  # fmt: skip
        text = f"{stats['mean']:.3f}" + (f" ± {stats['std']:.3f}" if stats["std"] is not None else "")
        ax.annotate(text, (1, i), xycoords=("axes fraction", "data"), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=FONT_PT - 1)  # fmt: skip
    lo, hi = min(_extent(groups, metric)), max(_extent(groups, metric))
    pad = max(0.08 * (hi - lo), 1e-3)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_yticks(y, [g["label"] for g in groups])
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)


def _test_plot(fig: Figure, result: dict) -> list:
    """The test metric per configuration; a second, zoomed panel for the leaders when the rest stretch the
    axis (0.961 and 0.969 one pixel apart on a 0-1 axis). Returns the panels."""
    metric = result["metric"]
    groups = [g for g in result["groups"] if g["stats"][metric]["mean"] is not None]
    if not groups:
        return []
    style, runs = styles(result["groups"]), _runs_by_group(result)
    top = _zoom(groups, metric)
    rows = [groups, top] if top else [groups]
    panels = fig.subplots(len(rows), 1, squeeze=False, height_ratios=[len(r) for r in rows])[:, 0]
    name = metric.replace("_", " ").replace("r2", "R²")
    for ax, shown in zip(panels, rows, strict=True):
        _dots(ax, shown, result, metric, style, runs)
    panels[0].set_xlabel(f"{name}: mean ± std over seeds (dots: the seeds)")
    if top:
        panels[1].set_xlabel(f"{name}: the leaders, zoomed")
    fig.subplots_adjust(hspace=0.45 if top else 0.2)
    return list(panels)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)  # Agg explicitly: no display, no pyplot global state
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def figures(result: dict) -> dict[str, Figure]:
    """The plots as matplotlib figures, {name: figure} in report order.

    val_<metric> and val_loss: three panels (against updates, samples seen, wall seconds) and the legend;
    lr, only when some run's lr changed: against updates and samples seen; test: the test metric per
    configuration (none when no run finished).
    """
    seeds = len(result["compare"]["seeds"])
    band = " (band: ± one std over seeds)" if seeds > 1 else ""
    val_metric = "val_accuracy" if result["metric"] == "test_accuracy" else "val_r2"
    name = val_metric[4:].replace("r2", "R²")
    loss = LOSS_NAMES.get(result["data"].get("task", "classification"), "loss")
    out = {}
    with matplotlib.rc_context(RC):
        out[val_metric] = Figure(figsize=(WIDTH_IN, 7.6))
        _draw_curves(out[val_metric], result, val_metric, AXES, f"Validation {name}{band}", f"validation {name}")
        out["val_loss"] = Figure(figsize=(WIDTH_IN, 7.6))
        title, ylabel = f"Validation loss: {loss}, log scale{band}", f"validation loss: {loss}"
        _draw_curves(out["val_loss"], result, "val_loss", AXES, title, ylabel, logy=True)
        if lr_varies(result):
            out["lr"] = Figure(figsize=(WIDTH_IN, 6.4))
            _draw_curves(
                out["lr"], result, "lr", AXES[:2], "Learning rate over the run", "learning rate", logy=True
            )
        test = Figure(figsize=(WIDTH_IN - 2, 1.4 + 0.6 * len(result["groups"])))
        if _test_plot(test, result):
            out["test"] = test
    return out


def write_plots(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write `figures(result)` into `out_dir` as <name>.png; return {name: path} in report order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(RC):  # tick labels are made when a figure is drawn: the sizes must hold then
        return {name: _save(fig, out_dir / f"{name}.png") for name, fig in figures(result).items()}
