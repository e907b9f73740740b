"""How sure a benchmark figure is (edgesense.bench.uncertainty): the intervals and the paired test against values
published for them, and the report's fields built from them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgesense.bench.accuracy import classification_report, item_correctness
from edgesense.bench.uncertainty import (
    CONFIDENCE_LEVEL,
    mcnemar_p_value,
    operating_point_intervals,
    paired_comparison,
    paired_on_common_items,
    poisson_cdf,
    poisson_interval,
    rate_interval,
    wilson_interval,
)


@pytest.mark.parametrize(("right", "scored", "expected"), [
    (90, 100, (0.8256, 0.9448)),  # Wilson (1927) / Newcombe (1998)
    (0, 10, (0.0, 0.2775)),  # nothing right: from 0, never below it
    (10, 10, (0.7225, 1.0)),  # everything right: up to 1, never above it
    (81, 263, (0.2553, 0.3662)),  # Newcombe (1998), Table I, example of 81/263
    (1, 29, (0.0061, 0.1718)),  # Newcombe (1998), Table I, example of 1/29
])
def test_the_wilson_interval_is_the_published_one(right, scored, expected):
    low, high = wilson_interval(right, scored)
    assert (low, high) == pytest.approx(expected, abs=1e-4)


def test_the_wilson_interval_narrows_with_the_items_and_holds_the_share():
    widths = []
    for scored in (20, 200, 2000):
        low, high = wilson_interval(int(0.9 * scored), scored)
        assert low < 0.9 < high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.03
    # 451 clips at 90.5 %: about ± 2.7 points
    low, high = wilson_interval(408, 451)
    assert 0.050 < high - low < 0.058
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 10, confidence=1.5)


@pytest.mark.parametrize(("count", "expected"), [
    (0, (0.0, 3.6889)),  # −ln(0.025)
    (1, (0.0253, 5.5716)),
    (5, (1.6235, 11.6683)),
    (10, (4.7954, 18.3904)),
    (100, (81.3640, 121.6268)),  # Garwood (1936) / the chi-square quantiles
])
def test_the_poisson_interval_is_the_exact_garwood_one(count, expected):
    assert poisson_interval(count) == pytest.approx(expected, abs=1e-4)


def test_the_poisson_bounds_leave_the_tail_on_each_side():
    tail = (1 - CONFIDENCE_LEVEL) / 2
    for count in (1, 3, 17, 250):
        low, high = poisson_interval(count)
        assert poisson_cdf(count, high) == pytest.approx(tail, abs=1e-9)  # count or fewer at the upper bound
        assert 1 - poisson_cdf(count - 1, low) == pytest.approx(tail, abs=1e-9)  # count or more at the lower
    assert poisson_cdf(3, 0.0) == 1.0 and poisson_cdf(-1, 2.0) == 0.0
    assert poisson_cdf(2, 2.0) == pytest.approx(math.exp(-2) * (1 + 2 + 2), abs=1e-12)
    with pytest.raises(ValueError, match="count"):
        poisson_interval(-1)


def test_a_rate_interval_is_the_count_interval_over_the_exposure():
    # 5 false accepts in 2 hours of talk: 2.5 per hour, 0.81…5.83
    assert rate_interval(5, 2.0) == pytest.approx((1.6235 / 2, 11.6683 / 2), abs=1e-4)
    # none in 4 minutes is no evidence of a quiet detector: up to 55 per hour
    assert rate_interval(0, 4 / 60) == pytest.approx((0.0, 3.6889 * 15), abs=1e-3)
    assert rate_interval(3, 0.0) is None


@pytest.mark.parametrize(("first_only", "second_only", "expected"), [
    (0, 0, 1.0),  # nothing discordant: no evidence of a difference
    (7, 7, 1.0),
    (12, 6, 0.2379),  # 2 × P(X ≤ 6), X ~ B(18, 1/2) = 2 × 31180 / 2^18
    (10, 0, 0.0020),  # 2 / 2^10
    (0, 10, 0.0020),  # two-sided: the same either way round
    (15, 5, 0.0414),
])
def test_the_mcnemar_p_value_is_the_exact_binomial_one(first_only, second_only, expected):
    assert mcnemar_p_value(first_only, second_only) == pytest.approx(expected, abs=1e-4)


def test_a_paired_comparison_calls_a_difference_real_only_when_it_is():
    rng = np.random.default_rng(0)
    # 400 items, both right on 300, the model alone right on 40, the other alone on 12: real (p ≈ 1e-4)
    ours = np.array([True] * 300 + [True] * 40 + [False] * 12 + [False] * 48)
    theirs = np.array([True] * 300 + [False] * 40 + [True] * 12 + [False] * 48)
    order = rng.permutation(ours.size)
    real = paired_comparison(ours[order], theirs[order])
    assert (real["items"], real["model_right_other_wrong"], real["other_right_model_wrong"], real["discordant"]) == (
        400, 40, 12, 52)
    assert real["p_value"] == pytest.approx(1.275e-4, rel=1e-3) and real["differs_at_level"]  # not rounded to 0
    # 85 % against 83 % on the same 400 items, 8 discordant items apart: luck (the accuracies alone cannot say it)
    ours = np.array([True] * 320 + [True] * 20 + [False] * 12 + [False] * 48)
    theirs = np.array([True] * 320 + [False] * 20 + [True] * 12 + [False] * 48)
    luck = paired_comparison(ours, theirs)
    assert ours.mean() - theirs.mean() == pytest.approx(0.02)
    assert luck["p_value"] == pytest.approx(0.2153, abs=1e-4) and not luck["differs_at_level"]
    with pytest.raises(ValueError, match="same items"):
        paired_comparison([True, False], [True])


def test_the_pairs_are_the_items_both_scored_matched_by_key_not_by_place():
    ours_items, ours_right = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], [True, True, False, True]
    # the other read the photos in another order and could not read b.jpg; it scored one ours could not
    theirs_items, theirs_right = ["d.jpg", "c.jpg", "x.jpg", "a.jpg"], [False, True, True, False]
    paired = paired_on_common_items(ours_items, ours_right, theirs_items, theirs_right)
    assert (paired["items"], paired["model_right_other_wrong"], paired["other_right_model_wrong"]) == (3, 2, 1)
    assert paired_on_common_items(["a"], [True], ["b"], [True]) is None


def test_the_classification_report_gains_intervals_and_keeps_its_figures():
    true, named = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0])
    report = classification_report(true, named, ["a", "b", "c"])
    assert report["accuracy"] == 0.6667 and report["per_class"]["a"] == {"accuracy": 0.5, "count": 2}
    assert report["accuracy_interval"] == pytest.approx(wilson_interval(4, 6), abs=1e-4)
    assert report["per_class_interval"]["c"] == pytest.approx(wilson_interval(2, 3), abs=1e-4)
    assert report["per_class_interval"]["b"] == pytest.approx(wilson_interval(1, 1), abs=1e-4)
    assert classification_report(true, named, ["a", "b", "c", "d"])["per_class_interval"]["d"] is None
    assert item_correctness(true, named).tolist() == [True, False, True, True, True, False]


def _point(hits: int, words: int, talk_false_accepts: int, hours: float, other_words: int, on_words: int,
           in_pauses: int) -> dict:
    """An operating point as ``OperatingPoint.to_dict`` writes it (the fields read here)."""
    return {"hit_rate": round(hits / words, 4), "false_accepts_per_hour": round(talk_false_accepts / hours, 3),
            "false_accepts_per_100_words": round(100 * (on_words + in_pauses) / other_words, 3),
            "commands_stream": {"command_words": words, "hits": hits},
            "talk_stream": {"hours": hours, "false_accepts": talk_false_accepts},
            "words_stream": {"words": other_words, "false_accepts_on_words": on_words,
                             "false_accepts_on_background": in_pauses}}


def test_an_operating_points_intervals_hold_its_figures_from_its_counts():
    point = _point(hits=180, words=200, talk_false_accepts=5, hours=2.0, other_words=400, on_words=7, in_pauses=1)
    intervals = operating_point_intervals(point)
    assert intervals["hit_rate_interval"] == pytest.approx(wilson_interval(180, 200), abs=1e-4)
    assert intervals["false_accepts_per_hour_interval"] == pytest.approx((0.8117, 5.8342), abs=1e-4)
    # 8 false accepts on the words stream (7 on words, 1 in the pauses) per 4 hundred words
    low, high = poisson_interval(8)
    assert intervals["false_accepts_per_100_words_interval"] == pytest.approx((low / 4, high / 4), abs=1e-4)
    for key in ("hit_rate", "false_accepts_per_hour", "false_accepts_per_100_words"):
        low, high = intervals[f"{key}_interval"]
        assert low <= point[key] <= high
    # a split without other words said alone: that figure is not measured, nor is its interval
    assert operating_point_intervals({**point, "words_stream": None})["false_accepts_per_100_words_interval"] is None
    assert operating_point_intervals({}) == {"hit_rate_interval": None, "per_word_hit_rate_interval": None,
                                             "false_accepts_per_hour_interval": None,
                                             "false_accepts_per_100_words_interval": None}


def test_each_words_hit_rate_has_its_interval_from_its_own_counts():
    point = _point(hits=45, words=55, talk_false_accepts=0, hours=1.0, other_words=100, on_words=0, in_pauses=0)
    point["commands_stream"]["per_word_counts"] = {"yes": {"hits": 38, "said": 50}, "no": {"hits": 0, "said": 3},
                                                   "go": {"hits": 2, "said": 2}}
    intervals = operating_point_intervals(point)["per_word_hit_rate_interval"]
    assert list(intervals) == ["yes", "no", "go"]
    assert intervals["yes"] == pytest.approx((0.6259, 0.8570), abs=1e-4)  # 38 of 50, 76 %: 63–86 %
    assert intervals["no"] == pytest.approx((0.0, 0.5615), abs=1e-4)  # none of 3: from 0
    assert intervals["go"] == pytest.approx((0.3424, 1.0), abs=1e-4)  # both: up to 1
    assert all(bound == round(bound, 4) for interval in intervals.values() for bound in interval)
    # a point written before the counts: its per-word rates alone, no intervals
    del point["commands_stream"]["per_word_counts"]
    assert operating_point_intervals(point)["per_word_hit_rate_interval"] is None


def test_the_talk_interval_is_over_the_unrounded_hours_where_the_point_has_them():
    """--quick's 4 minutes of talk, 0.0667 h, written as 0.067: one false accept is 0.0253–5.5716 in 1/15 h,
    83.57 per hour at the top, not the 83.16 of the rounded hours."""
    point = _point(hits=9, words=10, talk_false_accepts=1, hours=0.067, other_words=100, on_words=0, in_pauses=0)
    point["talk_stream"]["hours_unrounded"] = 4 / 60
    assert operating_point_intervals(point)["false_accepts_per_hour_interval"] == pytest.approx(
        (0.0253 * 15, 5.5716 * 15), abs=2e-3)
    # a point written before the unrounded hours: over its rounded ones, as before
    del point["talk_stream"]["hours_unrounded"]
    assert operating_point_intervals(point)["false_accepts_per_hour_interval"] == pytest.approx(
        (0.0253 / 0.067, 5.5716 / 0.067), abs=2e-3)


def test_the_mcnemar_p_value_of_many_discordant_items_is_exact():
    """The binomial tail summed term by term from the one before: the same integers as math.comb (a C(n, i)
    computed afresh per term took minutes for 20,000 discordant items a side; now well under a second)."""
    from fractions import Fraction

    for first, second in ((0, 5), (3, 9), (40, 41), (117, 60)):
        n, rarer = first + second, min(first, second)
        tail = sum(math.comb(n, i) for i in range(rarer + 1))
        assert mcnemar_p_value(first, second) == float(min(Fraction(1), Fraction(2 * tail, 2 ** n)))
    assert mcnemar_p_value(20_000, 20_000) == 1.0 and mcnemar_p_value(19_000, 21_000) < 1e-20
