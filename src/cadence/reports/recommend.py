"""The recommendation in words, derived only from a comparison's measurements (results.json's dict).

Rules, in order: rank configurations by the mean test metric; judge the gap between the top two against
their seed-to-seed spread (pooled standard deviation); among the configurations within that spread of the
best, prefer the one that reached the goal soonest in wall time. Then say who was fastest in time and who
needed the fewest samples, who never reached the goal, and who diverged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cadence.engine.evaluate import lower_is_better

# Confidence from the gap between the top two over their pooled seed spread (an effect size): a gap of two
# spreads rarely comes from seed noise alone, a gap under one spread often does.
CLEAR, LIKELY = 2.0, 1.0
FRACTIONS = {2: "half", 3: "one third", 4: "a quarter", 5: "one fifth", 6: "one sixth", 7: "one seventh"}
FRACTIONS |= {8: "one eighth", 9: "one ninth", 10: "one tenth"}


@dataclass
class Recommendation:
    """`choice` is the recommended configuration's label (None when nothing finished)."""

    choice: str | None
    confidence: str  # high | moderate | low | none
    headline: str
    reasons: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join([self.headline, *self.reasons])


def _mean(g: dict, key: str) -> float | None:
    return g["stats"][key]["mean"]


def _std(g: dict, key: str) -> float | None:
    return g["stats"][key]["std"]


def pooled_spread(a: dict, b: dict, key: str) -> float | None:
    """sqrt((s_a^2 + s_b^2) / 2): the typical seed-to-seed standard deviation of the two; None with one seed."""
    sa, sb = _std(a, key), _std(b, key)
    if sa is None or sb is None:
        return None
    return math.sqrt((sa**2 + sb**2) / 2)


def time_fraction(ratio: float) -> str:
    """0.2 -> 'one fifth of the time'; 0.43 -> '43% of the time'."""
    inverse = 1 / ratio if ratio > 0 else math.inf
    nearest = round(inverse) if math.isfinite(inverse) else 0
    if nearest in FRACTIONS and abs(inverse - nearest) <= 0.25:
        return f"{FRACTIONS[nearest]} of the time"
    return f"{ratio:.0%} of the time"


def goal_phrase(goal: dict) -> str:
    value, metric = goal["value"], goal["metric"]
    if metric == "val_accuracy":
        return f"{value:.0%} validation accuracy"
    sign = "≤" if lower_is_better(metric) else "≥"
    return f"{metric} {sign} {value:g}"


def _fmt(g: dict, key: str) -> str:
    mean, std = _mean(g, key), _std(g, key)
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def _ranking(ranked: list[dict], metric: str, name: str) -> tuple[str, str, list[dict]]:
    """(confidence, sentence, contenders within seed noise of the best)."""
    best = ranked[0]
    if len(ranked) == 1:
        return "low", f"Only {best['label']} finished a run, so there is nothing to rank it against.", [best]
    second = ranked[1]
    sign = -1 if lower_is_better(metric) else 1
    gap = sign * (_mean(best, metric) - _mean(second, metric))
    lead = (
        f"{best['label']} had the best {name}, {_fmt(best, metric)}; the runner-up, {second['label']}, "
        f"had {_fmt(second, metric)}."
    )
    spread = pooled_spread(best, second, metric)
    if spread is None:
        return (
            "low",
            lead + " With one seed per configuration there is no spread to judge that gap by: treat the "
            "ranking as a first guess and rerun with --seeds 3 or more.",
            [best],
        )
    ratio = gap / spread if spread > 0 else (math.inf if gap > 0 else 0.0)
    contenders = [best] + [
        g
        for g in ranked[1:]
        if (s := pooled_spread(best, g, metric)) is not None
        and sign * (_mean(best, metric) - _mean(g, metric)) <= s
    ]
    if ratio >= CLEAR:
        shown = "more than" if math.isinf(ratio) else f"{ratio:.1f}×"
        return (
            "high",
            lead + f" The gap ({gap:.3f}) is {shown} the seed-to-seed spread ({spread:.3f}): clear.",
            [best],
        )
    if ratio >= LIKELY:
        return (
            "moderate",
            lead + f" The gap ({gap:.3f}) exceeds the seed-to-seed spread ({spread:.3f}) but not twice over: "
            "likely, not certain; more seeds would settle it.",
            [best],
        )
    return (
        "low",
        lead + f" The gap ({gap:.3f}) is within the seed-to-seed spread ({spread:.3f}): on {name} they are tied.",
        contenders,
    )


def _all_reached(g: dict) -> bool:
    return g["n"] > 0 and g["reached"] == g["n"]


def _speed(groups: list[dict], goal: dict) -> list[str]:
    if goal["value"] is None:
        return []
    phrase = goal_phrase(goal)
    reached = [g for g in groups if _all_reached(g)]
    out = []
    if not reached:
        out.append(f"No configuration reached {phrase} in every seed within the budget.")
    else:
        fastest = min(reached, key=lambda g: _mean(g, "goal_seconds"))
        fewest = min(reached, key=lambda g: _mean(g, "goal_samples"))
        t_fast, t_other = _mean(fastest, "goal_seconds"), _mean(fewest, "goal_seconds")
        n_fast, n_other = _mean(fastest, "goal_samples"), _mean(fewest, "goal_samples")
        if fastest is fewest:
            out.append(
                f"{fastest['label']} reached {phrase} both soonest in wall time ({t_fast:.2f} s) and after the "
                f"fewest samples ({n_fast:,.0f})."
            )
        else:
            out.append(
                f"{fastest['label']} reached {phrase} in {time_fraction(t_fast / t_other)} of {fewest['label']} "
                f"({t_fast:.2f} s vs {t_other:.2f} s); {fewest['label']} reached it after fewer samples "
                f"({n_other:,.0f} vs {n_fast:,.0f})."
            )
    partly = [f"{g['label']} ({g['reached']}/{g['n']} seeds)" for g in groups if 0 < g["reached"] < g["n"]]
    never = [g["label"] for g in groups if g["n"] > 0 and g["reached"] == 0]
    if partly:
        out.append(f"Reached {phrase} in some seeds only: {', '.join(partly)}.")
    if never:
        out.append(f"Never reached {phrase} within the budget: {', '.join(never)}.")
    return out


def _troubles(groups: list[dict]) -> list[str]:
    out = []
    for g in groups:
        total = sum(g["stop_reasons"].values())
        if k := g["stop_reasons"].get("diverged"):
            out.append(
                f"{g['label']} diverged in {k} of {total} seeds at lr {g['lr']:g}: try a lower learning rate."
            )
        if k := g["stop_reasons"].get("error"):
            out.append(f"{g['label']} failed with an error in {k} of {total} seeds (see results.json).")
    interrupted = sum(g["stop_reasons"].get("interrupted", 0) for g in groups)
    if interrupted:
        out.append(f"{interrupted} interrupted run{'s were' if interrupted > 1 else ' was'} left out.")
    return out


def _judge(gap: float, spread: float | None) -> tuple[str, str]:
    """(confidence, words) for a gap against the pooled seed spread of the two sides."""
    if spread is None:
        return "low", "with one seed there is no spread to judge that by"
    ratio = gap / spread if spread > 0 else (math.inf if gap > 0 else 0.0)
    if ratio >= CLEAR:
        return "high", "more than the seed spread" if math.isinf(ratio) else f"{ratio:.1f}× the seed spread"
    if ratio >= LIKELY:
        return "moderate", f"{ratio:.1f}× the seed spread: likely, not certain"
    return "low", "within the seed spread: any of them will do"


def _tie_break(choice: dict, rivals: list[dict], best: dict, goal: dict, name: str) -> tuple[str, str]:
    """Among configurations tied on the metric, the pick is the soonest to the goal; confidence from the
    time gap to the next soonest against the seed spread of their times."""
    t = _mean(choice, "goal_seconds")
    text = f"Among those tied on {name}, {choice['label']} reached {goal_phrase(goal)} soonest ({t:.2f} s)"
    if choice is not best and _all_reached(best):
        text += f", {_mean(best, 'goal_seconds') / t:.1f}× sooner than {best['label']}"
    if not rivals:
        return "moderate", text + "; it is the only one of them to reach it in every seed."
    nxt = min(rivals, key=lambda g: _mean(g, "goal_seconds"))
    gap = _mean(nxt, "goal_seconds") - t
    confidence, words = _judge(gap, pooled_spread(choice, nxt, "goal_seconds"))
    text += f"; the next, {nxt['label']}, took {gap:.2f} s longer: {words}."
    return confidence, text


def recommend(result: dict) -> Recommendation:
    """Which configuration to use and why, with a confidence judged from the seed spread.

    Args:
        result: a comparison as `CompareResult.to_dict()` returns it (what results.json holds).
    """
    metric = result["metric"]
    name = metric.replace("_", " ").replace("r2", "R²")
    groups = result["groups"]
    finished = [g for g in groups if _mean(g, metric) is not None]
    if not finished:
        return Recommendation(None, "none", "No configuration finished a run, so there is nothing to recommend.")
    sign = -1 if lower_is_better(metric) else 1
    ranked = sorted(finished, key=lambda g: -sign * _mean(g, metric))
    confidence, ranking, contenders = _ranking(ranked, metric, name)
    best = ranked[0]
    choice = best
    reasons = [ranking]
    quick = [g for g in contenders if _all_reached(g)]
    if len(contenders) > 1 and quick:  # tied on the metric: the one that reaches the goal soonest
        choice = min(quick, key=lambda g: _mean(g, "goal_seconds"))
        confidence, why = _tie_break(choice, [g for g in quick if g is not choice], best, result["goal"], name)
        reasons.append(why)
    reasons += _speed(finished, result["goal"])
    reasons += _troubles(groups)
    seeds = len(result["compare"]["seeds"])
    reasons.append(
        f"Measured over {seeds} seed{'s' if seeds > 1 else ''} per configuration under "
        f"{result['budget']['description']} on {result['data']['name']}."
    )
    lr = "" if "(lr " in choice["label"] else f" (lr {choice['lr']:g})"  # labels of repeated optimizers hold it
    headline = f"Use {choice['label']}{lr}. Confidence: {confidence}."
    return Recommendation(choice["label"], confidence, headline, reasons)
