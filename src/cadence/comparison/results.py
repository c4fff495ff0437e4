"""The tidy result of a comparison: one record per run (every raw number and its history), the goal each run
raced to, and one summary per configuration (mean and spread over seeds, the best of each column).

`CompareResult.to_dict()` is exactly what results.json holds, and what the reports read.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from cadence.engine.evaluate import lower_is_better

FORMAT = "cadence-compare/1"

# Columns summarized per configuration: (key in each run record, which way is better; None: no "best").
COLUMNS = (
    ("test_loss", "lower"),
    ("updates", None),
    ("samples_seen", None),
    ("seconds", "lower"),
    ("samples_per_s", "higher"),
    ("goal_seconds", "lower"),
    ("goal_samples", "lower"),
)
FINISHED = ("budget", "converged", "early-stopped", "diverged")


def main_metric(task: str) -> str:
    """The test metric configurations are ranked by."""
    return "test_accuracy" if task == "classification" else "test_r2"


def default_goal_metric(task: str) -> str:
    return "val_accuracy" if task == "classification" else "val_r2"


def reach(history: list[dict], metric: str, value: float) -> dict | None:
    """The first evaluation at which `metric` reached `value` (>= it, or <= for losses and errors)."""
    lower = lower_is_better(metric)
    for record in history:
        got = record.get(metric)
        if got is not None and math.isfinite(got) and (got <= value if lower else got >= value):
            return record
    return None


def auto_goal(runs: list[dict], metric: str) -> float | None:
    """The median over configurations of their mean best validation value, rounded towards easier:
    about half of the configurations reach it, so the time to reach it separates them."""
    lower = lower_is_better(metric)
    by_group: dict[int, list[float]] = {}
    for run in runs:
        values = [r[metric] for r in run.get("history", []) if _finite(r.get(metric))]
        if values:
            by_group.setdefault(run["group"], []).append(min(values) if lower else max(values))
    if not by_group:
        return None
    median = statistics.median(statistics.fmean(v) for v in by_group.values())
    if lower:  # round up to two significant digits
        scale = 10 ** (math.floor(math.log10(abs(median))) - 1) if median else 1.0
        return math.ceil(median / scale) * scale
    return math.floor(median * 100) / 100


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _stats(values: list[float]) -> dict:
    values = [float(v) for v in values if _finite(v)]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def json_safe(value):
    """NaN and infinities become null, so results.json is strict JSON any reader accepts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@dataclass
class CompareResult:
    """Every finished run of a comparison plus what it was run with (`meta`: configs, budget, machine)."""

    runs: list[dict]
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # the dataclass repr would print every run's history
        data = self.meta.get("data", {}).get("name", "?")
        budget = self.meta.get("budget", {}).get("description", "?")
        return f"CompareResult({len(self.runs)} runs on {data}, {budget})"

    def to_pandas(self):
        """One row per run (its config columns, metrics, stop reason and goal times; no history): pandas."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "CompareResult.to_pandas() needs pandas. Fix: pip install 'cadence[pandas]'."
            ) from None
        skip = ("history", "run_config")
        return pd.DataFrame.from_records(
            [{k: v for k, v in r.items() if k not in skip} for r in self.annotated_runs()]
        )

    @property
    def task(self) -> str:
        return self.meta.get("data", {}).get("task", "classification")

    @property
    def metric(self) -> str:
        return main_metric(self.task)

    def goal(self) -> dict:
        """{'metric', 'value', 'auto'}: the given goal, or the automatic one from the runs."""
        settings = self.meta.get("compare", {})
        metric = settings.get("goal_metric") or default_goal_metric(self.task)
        value = settings.get("goal")
        auto = value is None
        if auto:
            value = auto_goal([r for r in self.runs if r.get("stop_reason") in FINISHED], metric)
        return {"metric": metric, "value": value, "auto": auto}

    def annotated_runs(self) -> list[dict]:
        """The runs with goal_updates / goal_samples / goal_seconds: where each first reached the goal."""
        goal = self.goal()
        out = []
        for run in self.runs:
            hit = (
                reach(run.get("history", []), goal["metric"], goal["value"]) if goal["value"] is not None else None
            )
            out.append(
                {
                    **run,
                    "goal_updates": hit["updates"] if hit else None,
                    "goal_samples": hit["samples"] if hit else None,
                    "goal_seconds": hit["seconds"] if hit else None,
                }
            )
        return out

    def groups(self) -> list[dict]:
        """One summary per configuration, in grid order: stats over its finished seeds and `best` columns.

        Interrupted and failed runs are counted but left out of the statistics.
        """
        runs = self.annotated_runs()
        metric = self.metric
        columns = ((metric, "lower" if lower_is_better(metric) else "higher"), *COLUMNS)
        groups: dict[int, dict] = {}
        for run in runs:
            g = groups.setdefault(
                run["group"],
                {
                    **{k: run[k] for k in ("group", "label", "strategy", "batch_size", "optimizer", "schedule")},
                    "lr": run["lr"],
                    "seeds": [],
                    "stop_reasons": {},
                    "_runs": [],
                },
            )
            g["seeds"].append(run["seed"])
            reason = run.get("stop_reason", "error")
            g["stop_reasons"][reason] = g["stop_reasons"].get(reason, 0) + 1
            if reason in FINISHED:
                g["_runs"].append(run)
        for g in groups.values():
            done = g.pop("_runs")
            g["n"] = len(done)
            g["reached"] = sum(r["goal_seconds"] is not None for r in done)
            g["stats"] = {key: _stats([r.get(key) for r in done]) for key, _ in columns}
            g["best"] = []
        ordered = [groups[k] for k in sorted(groups)]
        for key, better in columns:
            if better is None:
                continue
            eligible = [g for g in ordered if g["stats"][key]["mean"] is not None]
            if key.startswith("goal_"):  # only configurations that reached the goal in every seed
                eligible = [g for g in eligible if g["reached"] == g["n"] > 0]
            if eligible:
                sign = 1 if better == "lower" else -1
                best = min(sign * g["stats"][key]["mean"] for g in eligible)
                for g in eligible:
                    if sign * g["stats"][key]["mean"] == best:
                        g["best"].append(key)
        return ordered

    def to_dict(self) -> dict:
        """What results.json holds: meta, goal, per-configuration summaries and every run with its history."""
        return json_safe(
            {
                "format": FORMAT,
                **self.meta,
                "metric": self.metric,
                "goal": self.goal(),
                "groups": self.groups(),
                "runs": self.annotated_runs(),
            }
        )

    def save(self, path: str | Path) -> Path:
        """Write results.json atomically (a partial file is never left behind by Ctrl-C)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CompareResult:
        """Read a results.json written by `save` (derived fields are recomputed from the runs)."""
        tree = json.loads(Path(path).read_text())
        derived = ("format", "metric", "goal", "groups", "runs")
        runs = [{k: v for k, v in r.items() if not k.startswith("goal_")} for r in tree["runs"]]
        return cls(runs=runs, meta={k: v for k, v in tree.items() if k not in derived})
