"""PNG plots of a comparison (matplotlib, Agg): validation curves against updates, samples seen and wall
seconds, the three axes strategies differ on, with a band of one standard deviation over seeds; lr over
time; the test metric per configuration. Reads results.json's dict; draws nothing it does not hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

AXES = (("updates", "updates (log scale)"), ("samples", "samples seen"), ("seconds", "wall seconds"))


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


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


def _draw_curves(fig: Figure, result: dict, metric: str, axes_spec, title: str, logy: bool = False) -> None:
    groups = result["groups"]
    runs = _runs_by_group(result)
    colors = _colors(len(groups))
    goal = result["goal"]
    axes = fig.subplots(1, len(axes_spec))
    axes = np.atleast_1d(axes)
    for ax, (x, xlabel) in zip(axes, axes_spec, strict=True):
        log = x == "updates"
        for g, color in zip(groups, colors, strict=True):
            band = seed_band(runs[g["group"]], x, metric, log=log)
            if band is None:
                continue
            xs, mean, std = band
            low, high = mean - std, mean + std
            if logy:  # a band below zero cannot be drawn on a log axis: clip it at a tenth of the mean
                low = np.maximum(low, mean / 10)
            ax.plot(xs, mean, color=color, label=g["label"], marker="." if len(xs) < 3 else None)
            ax.fill_between(xs, low, high, color=color, alpha=0.2, linewidth=0)
        if metric == goal["metric"] and goal["value"] is not None:
            ax.axhline(goal["value"], color="0.4", linestyle="--", linewidth=0.8, label="goal")
        if log:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), frameon=False)
    fig.subplots_adjust(bottom=0.18 + 0.05 * ((len(labels) - 1) // 4), top=0.88, wspace=0.25)


def _test_bars(fig: Figure, result: dict) -> None:
    metric = result["metric"]
    groups = [g for g in result["groups"] if g["stats"][metric]["mean"] is not None]
    ax = fig.subplots()
    colors = _colors(len(result["groups"]))
    index = {g["group"]: i for i, g in enumerate(result["groups"])}
    y = np.arange(len(groups))
    means = [g["stats"][metric]["mean"] for g in groups]
    errs = [g["stats"][metric]["std"] or 0.0 for g in groups]
    ax.barh(y, means, xerr=errs, color=[colors[index[g["group"]]] for g in groups], capsize=3)
    ax.set_yticks(y, [g["label"] for g in groups])
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric.replace('_', ' ')} (mean ± std over seeds)")
    ax.grid(axis="x", alpha=0.3)
    fig.subplots_adjust(left=0.3)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)  # Agg explicitly: no display, no pyplot global state
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def write_plots(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write the plots into `out_dir`; return {name: path} in report order.

    val_<metric>.png and val_loss.png: three panels (against updates, samples seen, wall seconds);
    lr.png: the learning rate against updates and samples seen; test.png: the test metric per configuration.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = len(result["compare"]["seeds"])
    band = " (band: ± one std over seeds)" if seeds > 1 else ""
    val_metric = "val_accuracy" if result["metric"] == "test_accuracy" else "val_r2"
    paths = {}
    fig = Figure(figsize=(15, 4.6))
    _draw_curves(fig, result, val_metric, AXES, f"Validation {val_metric[4:]}{band}")
    paths[val_metric] = _save(fig, out_dir / f"{val_metric}.png")
    fig = Figure(figsize=(15, 4.6))
    _draw_curves(fig, result, "val_loss", AXES, f"Validation loss{band}", logy=True)
    paths["val_loss"] = _save(fig, out_dir / "val_loss.png")
    fig = Figure(figsize=(10, 4.2))
    _draw_curves(fig, result, "lr", AXES[:2], "Learning rate over the run", logy=True)
    paths["lr"] = _save(fig, out_dir / "lr.png")
    fig = Figure(figsize=(8, 0.5 + 0.4 * len(result["groups"])))
    _test_bars(fig, result)
    paths["test"] = _save(fig, out_dir / "test.png")
    return paths
