"""The recommendation on constructed comparisons whose right answer is known."""

from __future__ import annotations

from cadence.reports.recommend import recommend, time_fraction


def _curve(reach_seconds: float, reach_samples: int, final: float = 0.96) -> list[tuple]:
    """Three evaluations: below the 0.9 goal, at it (at the given time and samples), then `final`."""
    return [(reach_samples // 2, reach_seconds / 2, 0.5), (reach_samples, reach_seconds, 0.91), (4000, 9.0, final)]


def test_clear_winner_is_recommended_with_high_confidence(make_comparison):
    result = make_comparison(
        {
            "mini-batch + adam": [{"test_accuracy": a, "curve": _curve(1.0, 1000)} for a in (0.970, 0.968, 0.972)],
            "online + sgd": [{"test_accuracy": a, "curve": _curve(3.0, 800)} for a in (0.900, 0.905, 0.895)],
        },
        goal=0.9,
    ).to_dict()
    advice = recommend(result)
    assert advice.choice == "mini-batch + adam" and advice.confidence == "high"
    assert advice.headline.startswith("Use mini-batch + adam (lr 0.1). Confidence: high.")
    # spreads 0.002 and 0.005 pool to sqrt((0.002² + 0.005²) / 2) = 0.0038, and 0.070 / 0.0038 = 18.4
    assert "The gap (0.070) is 18.4× the seed-to-seed spread (0.004): clear." in advice.text


def test_gap_within_the_seed_spread_is_a_tie_broken_by_time_to_goal(make_comparison):
    online = [{"test_accuracy": a, "curve": _curve(t, 600)} for a, t in ((0.95, 5.0), (0.96, 4.0), (0.94, 6.0))]
    mini = [{"test_accuracy": a, "curve": _curve(t, 2000)} for a, t in ((0.948, 1.0), (0.958, 1.2), (0.938, 0.8))]
    far = [{"test_accuracy": a, "curve": [(4000, 9.0, 0.6)]} for a in (0.60, 0.61, 0.59)]
    result = make_comparison(
        {"online + sgd": online, "mini-batch + adam": mini, "full-batch + sgd": far}, goal=0.9
    )
    advice = recommend(result.to_dict())
    assert advice.choice == "mini-batch + adam"
    assert (
        "The gap (0.002) is within the seed-to-seed spread (0.010): on test accuracy they are tied." in advice.text
    )
    # times 5, 4, 6 s (std 1.0) against 1.0, 1.2, 0.8 s (std 0.2): pooled sqrt((1 + 0.04) / 2) = 0.72; 4.0 / 0.72
    assert (
        "Among those tied on test accuracy, mini-batch + adam reached 90% validation accuracy soonest (1.00 s), "
        "5.0× sooner than online + sgd; the next, online + sgd, took 4.00 s longer: 5.5× the seed spread."
    ) in advice.text
    assert advice.confidence == "high"
    assert "full-batch + sgd" not in advice.reasons[1]  # far behind on accuracy: not among the tied


def test_a_tie_on_both_accuracy_and_time_has_low_confidence(make_comparison):
    a = [{"test_accuracy": x, "curve": _curve(t, 600)} for x, t in ((0.95, 1.0), (0.96, 2.0), (0.94, 3.0))]
    b = [{"test_accuracy": x, "curve": _curve(t, 600)} for x, t in ((0.95, 1.5), (0.96, 2.5), (0.94, 3.5))]
    advice = recommend(make_comparison({"a + sgd": a, "b + sgd": b}, goal=0.9).to_dict())
    assert advice.choice == "a + sgd" and advice.confidence == "low"
    assert "took 0.50 s longer: within the seed spread: any of them will do." in advice.text


def test_between_one_and_two_spreads_is_moderate(make_comparison):
    result = make_comparison(
        {
            "a + sgd": [{"test_accuracy": a} for a in (0.93, 0.95, 0.97)],  # mean 0.95, std 0.02
            "b + sgd": [{"test_accuracy": a} for a in (0.90, 0.92, 0.94)],  # mean 0.92, std 0.02
        },
        goal=0.9,
    ).to_dict()
    advice = recommend(result)
    assert advice.choice == "a + sgd" and advice.confidence == "moderate"
    assert "exceeds the seed-to-seed spread (0.020) but not twice over" in advice.text


def test_one_seed_gives_low_confidence_and_asks_for_more_seeds(make_comparison):
    result = make_comparison(
        {"a + sgd": [{"test_accuracy": 0.99}], "b + sgd": [{"test_accuracy": 0.50}]}, goal=0.9
    ).to_dict()
    advice = recommend(result)
    assert advice.choice == "a + sgd" and advice.confidence == "low"
    assert "no spread to judge that gap by" in advice.text and "--seeds 3" in advice.text


def test_soonest_in_time_and_fewest_samples_are_both_named(make_comparison):
    result = make_comparison(
        {
            "mini-batch + adam": [{"test_accuracy": 0.97, "curve": _curve(1.0, 2000)} for _ in range(3)],
            "online + sgd": [{"test_accuracy": 0.96, "curve": _curve(5.0, 500)} for _ in range(3)],
        },
        goal=0.9,
    ).to_dict()
    text = recommend(result).text
    assert (
        "mini-batch + adam reached 90% validation accuracy in one fifth of the time of online + sgd "
        "(1.00 s vs 5.00 s); online + sgd reached it after fewer samples (500 vs 2,000)."
    ) in text


def test_configurations_short_of_the_goal_and_diverged_ones_are_named(make_comparison):
    result = make_comparison(
        {
            "mini-batch + adam": [{"test_accuracy": 0.97, "curve": _curve(1.0, 2000)} for _ in range(2)],
            "online + adam": [
                {"test_accuracy": 0.92, "curve": _curve(2.0, 900)},
                {"test_accuracy": 0.85, "curve": [(4000, 9.0, 0.85)]},
            ],
            "full-batch + sgd": [
                {"test_accuracy": 0.30, "curve": [(4000, 9.0, 0.3)], "stop_reason": "diverged", "lr": 3.0}
                for _ in range(2)
            ],
        },
        goal=0.9,
    ).to_dict()
    text = recommend(result).text
    assert "Reached 90% validation accuracy in some seeds only: online + adam (1/2 seeds)." in text
    assert "Never reached 90% validation accuracy within the budget: full-batch + sgd." in text
    assert "full-batch + sgd diverged in 2 of 2 seeds at lr 3: try a lower learning rate." in text


def test_nothing_finished_recommends_nothing(make_comparison):
    result = make_comparison({"a + sgd": [{"test_accuracy": 0.9, "stop_reason": "interrupted"}]}).to_dict()
    advice = recommend(result)
    assert advice.choice is None and advice.confidence == "none"


def test_time_fractions_read_as_words_when_close_to_one_over_n():
    assert time_fraction(0.2) == "one fifth of the time"
    assert time_fraction(0.51) == "half of the time"
    assert time_fraction(0.43) == "43% of the time"
