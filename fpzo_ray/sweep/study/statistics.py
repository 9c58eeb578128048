"""Means, spreads and confidence intervals over repeated runs (plain numpy/scipy).

A study repeats every cell's chosen configuration on N fresh seeds; what it reports about a
cell is the mean over those seeds with a two-sided 95 % Student-t interval, and what it
reports about a comparison of two cells is the interval of the mean *paired* difference: the
cells share their repeat seeds, hence their data partitions and initialisations, so the
per-seed differences cancel what the seed does to both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """Mean of ``n`` finite values, their sample standard deviation and the half-width of
    the two-sided 95 % confidence interval (NaN when ``n`` < 2)."""

    mean: float
    std: float
    ci95: float
    n: int


def t_interval(values: Sequence[float]) -> Estimate:
    """Mean and 95 % Student-t interval of the finite ``values`` (NaNs are left out)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(x.shape[0])
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, n)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return Estimate(mean, std, half, n)


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Estimate:
    """Mean and interval of ``a[s] - b[s]`` over the seeds ``s`` both have a value for."""
    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    return t_interval([a[s] - b[s] for s in seeds])


def value_at_budget(costs: Sequence[float], values: Sequence[float], budget: float) -> float:
    """The curve ``values`` over increasing ``costs`` read at ``budget``, interpolating
    linearly between the two evaluations around it (NaN before the first or past the last:
    no extrapolation)."""
    pairs = [(c, v) for c, v in zip(costs, values) if math.isfinite(c) and math.isfinite(v)]
    if not pairs or budget < pairs[0][0] or budget > pairs[-1][0]:
        return math.nan
    c = np.asarray([p[0] for p in pairs])
    v = np.asarray([p[1] for p in pairs])
    return float(np.interp(budget, c, v))


def first_reaching(values: Sequence[float], target: float) -> int | None:
    """Index of the first value >= ``target`` (None if never)."""
    for i, v in enumerate(values):
        if math.isfinite(v) and v >= target:
            return i
    return None


def seeds_to_separate(difference: Estimate, most: int = 1000) -> int | None:
    """How many paired seeds would make a 95 % interval as wide as this one's spread narrower
    than its mean, i.e. exclude 0 if the mean and spread held (None: no spread measured, a
    zero mean, or more than ``most``). What a study would need to call the difference."""
    from scipy import stats

    if not (math.isfinite(difference.std) and difference.std > 0 and difference.mean != 0):
        return None
    for n in range(2, most + 1):
        if float(stats.t.ppf(0.975, n - 1)) * difference.std / math.sqrt(n) < abs(difference.mean):
            return n
    return None
