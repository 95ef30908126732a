"""The over-optimisation turn against hand-computed trailing means."""

import pytest

from algos.overoptimisation import moving_average, overoptimised, turning_point

GOLD = [0.1, 0.2, 0.3, 0.3, 0.2, 0.1, 0.0, 0.0]
PROXY = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


def test_moving_average_is_trailing():
    assert moving_average([1, 2, 3, 4, 5, 6], window=3) == [1, 1.5, 2, 3, 4, 5]
    assert moving_average([4, 2], window=1) == [4, 2]


def test_turning_point_finds_the_gold_peak_and_the_proxy_rise_after_it():
    turn = turning_point(GOLD, PROXY, window=5)
    # 5-point trailing means of gold: .1 .15 .2 .225 .22 .22 .18 .12; full windows from the fifth: peak at index 4
    assert turn.peak == 4
    assert turn.gold_at_peak == pytest.approx(0.22)
    assert turn.gold_now == pytest.approx(0.12)
    assert turn.gold_fall == pytest.approx(0.1)
    # proxy means at 4 and 7: .2 and .5
    assert turn.proxy_rise == pytest.approx(0.3)


def test_a_lucky_first_iteration_is_not_the_peak():
    gold = [0.9, 0.0, 0.0, 0.3, 0.6, 0.6, 0.3, 0.0, 0.0]  # 3-means: .9 .45 .3 .1 .3 .5 .5 .3 .1
    turn = turning_point(gold, [0.1 * i for i in range(9)], window=3)
    assert (turn.peak, turn.gold_at_peak, turn.gold_now) == (5, pytest.approx(0.5), pytest.approx(0.1))
    assert turn.proxy_rise == pytest.approx(0.3)  # proxy 3-means at 5 and 8: .4 and .7
    assert turning_point([0.2, 0.5], [0.0, 0.0], window=3).peak == 1  # no full window yet: the means there are


def test_the_first_peak_counts_on_a_tie():
    assert turning_point([0.5, 0.2, 0.5], [0.0, 0.0, 0.0], window=1).peak == 0


def test_the_watch_warns_once_gold_has_fallen_enough_while_the_proxy_rose():
    # the full-window 5-means: .22 .22 .18 .12; the fall from .22: .04 at 7 points, .1 at 8
    assert overoptimised(GOLD[:7], PROXY[:7], window=5, drop=0.1) is None
    assert overoptimised(GOLD, PROXY, window=5, drop=0.1).peak == 4  # .22 - .12 < .1 in floats: counts as .1
    assert overoptimised(GOLD, PROXY, window=5, drop=0.11) is None
    assert overoptimised([0.3, 0.2], [0.0, 0.5], window=1, drop=0.1).gold_fall == pytest.approx(0.1)
    assert overoptimised([0.3, 0.2], [0.0, 0.5], window=3, drop=0.01) is None  # not before a full window


def test_no_warning_where_the_proxy_fell_too_or_there_is_no_history():
    falling_proxy = [0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    assert overoptimised(GOLD, falling_proxy, window=5, drop=0.1) is None  # the RM did not mislead: all fell
    assert overoptimised(GOLD, GOLD, window=5, drop=0.0) is None  # gold as the reward: proxy = gold, never
    assert overoptimised([], [], window=5, drop=0.1) is None
    assert overoptimised([], [], window=1, drop=0.1) is None
    with pytest.raises(ValueError, match="as many proxy as gold"):
        turning_point([0.1, 0.2], [0.1], window=2)
