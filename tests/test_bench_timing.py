"""The benches' verdicts: a ratio meets its goal only when every pass does."""

from __future__ import annotations

import pytest

from fpzo_ray.bench.timing import PassRatios


@pytest.mark.parametrize(
    ("values", "goal", "at_least", "verdict"),
    [
        ((2.6, 2.7, 3.0), 2.5, True, "met"),
        ((2.4, 2.7, 3.0), 2.5, True, "not separable from the goal"),
        ((2.0, 2.1, 2.4), 2.5, True, "missed"),
        ((0.20, 0.22, 0.24), 0.25, False, "met"),
        ((0.20, 0.26, 0.24), 0.25, False, "not separable from the goal"),
        ((0.30, 0.26, 0.28), 0.25, False, "missed"),
    ],
)
def test_a_spread_that_crosses_the_goal_is_not_separable_from_it(values, goal, at_least, verdict):
    ratios = PassRatios(values)
    assert ratios.verdict(goal, at_least) == verdict
    keys = ratios.keys("x", goal, at_least)
    assert keys == {
        "x": ratios.median,
        "x_spread": [min(values), max(values)],
        "x_verdict": verdict,
    }


def test_each_pass_is_its_own_ratio():
    ratios = PassRatios.of([10.0, 30.0, 20.0], [5.0, 10.0, 4.0])
    assert ratios.values == (2.0, 3.0, 5.0)
    assert ratios.median == 3.0
    assert ratios.spread == (2.0, 5.0)
    with pytest.raises(ValueError):
        PassRatios.of([1.0], [1.0, 2.0])
