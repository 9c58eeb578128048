"""Side-by-side timing for noisy shared machines: run the candidates round-robin, many times,
and compare medians, so a burst of load elsewhere hits every candidate alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def interleaved_medians(
    candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call of each candidate, measured in alternation."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width table."""
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    for row in rows:
        lines.append("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class PassRatios:
    """A ratio measured once per interleaved pass: its median and its spread (min, max)."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, numerators: Sequence[float], denominators: Sequence[float]) -> PassRatios:
        """Pass i's ratio is numerators[i] / denominators[i]: both measured in the same pass,
        so a slow spell of the machine hits both sides of each ratio alike."""
        return cls(tuple(n / d for n, d in zip(numerators, denominators, strict=True)))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.values), max(self.values)

    def verdict(self, goal: float, at_least: bool = True) -> str:
        """``met`` when every pass is on the goal's side, ``missed`` when none is, else
        ``not separable from the goal``: a spread that crosses the goal has not met it."""
        low, high = self.spread
        good = (low >= goal) if at_least else (high <= goal)
        bad = (high < goal) if at_least else (low > goal)
        return "met" if good else "missed" if bad else "not separable from the goal"

    def keys(self, name: str, goal: float, at_least: bool = True) -> dict[str, object]:
        """The JSON form: ``name`` (the median), ``name_spread`` ([min, max] over the
        passes) and ``name_verdict`` (against ``goal``)."""
        return {
            name: self.median,
            f"{name}_spread": list(self.spread),
            f"{name}_verdict": self.verdict(goal, at_least),
        }

    def text(self, goal: float, at_least: bool = True) -> str:
        low, high = self.spread
        sign = ">=" if at_least else "<="
        return (
            f"{self.median:.3g} (passes {low:.3g}-{high:.3g}; goal {sign} {goal:g}: "
            f"{self.verdict(goal, at_least)})"
        )
