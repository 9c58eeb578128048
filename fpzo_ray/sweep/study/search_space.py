"""Search spaces: which values a hyperparameter search tries for each configuration field.

A space maps dotted configuration fields to one of four Tune domains, written in a sweep file
as ``{kind: [arguments]}``:

- ``loguniform: [low, high]`` (``0 < low < high``) and ``uniform: [low, high]`` draw a
  number; on an integer field they draw an integer in ``[low, high]`` (both included);
- ``choice: [a, b, ...]`` draws one of the options;
- ``grid: [a, b, ...]`` tries every option: grid dimensions are crossed, and every grid point
  is tried ``num_samples`` times, each with fresh draws of the random dimensions (Tune's
  semantics for ``num_samples`` with ``grid_search``).

Draws come from Tune's own domains with a seeded generator: a space, a sample count and a
seed give the same candidates every time, and two cells with the same space are offered the
same candidates (equal tuning effort, common random numbers).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fpzo_ray.config import ConfigError, field_type

DOMAIN_KINDS = ("loguniform", "uniform", "choice", "grid")


@dataclass(frozen=True)
class Dimension:
    """One searched field: ``key`` (dotted), ``kind`` (a domain) and its arguments."""

    key: str
    kind: str
    values: tuple[Any, ...]  # (low, high) of a range, or the options (both ends checked)
    integer: bool = False

    @property
    def is_grid(self) -> bool:
        return self.kind == "grid"

    def tune_domain(self) -> Any:
        """The Tune domain this dimension samples from (random kinds only)."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        low, high = self.values
        if self.kind == "loguniform":
            return tune.lograndint(low, high + 1) if self.integer else tune.loguniform(low, high)
        if self.kind == "uniform":
            return tune.randint(low, high + 1) if self.integer else tune.uniform(low, high)
        raise ValueError(f"{self.kind} is not a random domain")

    def describe(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions a search draws, and its seeded candidates."""

    dimensions: tuple[Dimension, ...]
    where: str = "search.space"  # its place in the sweep file, for error messages

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.dimensions)

    def assignments(self, num_samples: int, seed: int) -> list[dict[str, Any]]:
        """Every candidate: ``num_samples`` x the grid points, each with fresh random draws.

        A space of grid dimensions only is tried once: a run is a function of its
        configuration, so another pass would repeat the very same runs.
        """
        grid = [d for d in self.dimensions if d.is_grid]
        random = [d for d in self.dimensions if not d.is_grid]
        domains = {d.key: d.tune_domain() for d in random}
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(num_samples if random else 1):
            for point in itertools.product(*(d.values for d in grid)):
                assignment = {d.key: v for d, v in zip(grid, point)}
                for d in random:
                    assignment[d.key] = _plain(domains[d.key].sample(random_state=rng))
                out.append({d.key: assignment[d.key] for d in self.dimensions})
        return out

    def size(self, num_samples: int) -> int:
        """How many candidates :meth:`assignments` makes, without making them."""
        grid = math.prod(len(d.values) for d in self.dimensions if d.is_grid)
        random = any(not d.is_grid for d in self.dimensions)
        return grid * (num_samples if random else 1)

    def describe(self) -> dict[str, dict[str, list[Any]]]:
        return {d.key: d.describe() for d in self.dimensions}


def _plain(value: Any) -> Any:
    """A Python scalar (Tune returns numpy ones); floats kept to 6 significant digits so that
    the values read well in MLflow and the table."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != 0 and math.isfinite(value):
        value = float(f"{value:.6g}")
    return value


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"config error: {where}: got {value!r}, must be a finite number")
    return value


def parse_dimension(where: str, key: str, raw: Any) -> Dimension:
    """One ``key: {kind: arguments}`` entry; ``where`` names it in error messages."""
    try:
        tp = field_type(key)
    except ConfigError as exc:
        detail = str(exc).split(": ", 2)[-1]
        raise ConfigError(f"config error: {where}: {detail}") from None
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ConfigError(
            f"config error: {where}: got {raw!r}, must be one of "
            f"{{{' | '.join(f'{k}: [...]' for k in DOMAIN_KINDS)}}}"
        )
    kind, args = next(iter(raw.items()))
    if kind not in DOMAIN_KINDS:
        raise ConfigError(
            f"config error: {where}: unknown domain {kind!r}, allowed: {', '.join(DOMAIN_KINDS)}"
        )
    if not isinstance(args, list) or not args:
        raise ConfigError(f"config error: {where}.{kind}: got {args!r}, must be a non-empty list")
    if kind in ("choice", "grid"):
        return Dimension(key, kind, tuple(args))
    if tp not in (int, float, object):  # object: a component's argument, typed by its bounds
        raise ConfigError(f"config error: {where}.{kind}: {key} is not numeric, use choice or grid")
    if len(args) != 2:
        raise ConfigError(f"config error: {where}.{kind}: got {args!r}, must be [low, high]")
    low, high = (_number(f"{where}.{kind}", v) for v in args)
    if tp is object:
        tp = int if all(isinstance(v, int) for v in (low, high)) else float
    if not low < high:
        raise ConfigError(f"config error: {where}.{kind}: got {args!r}, low must be < high")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"config error: {where}.{kind}: got {args!r}, low must be > 0")
    integer = tp is int
    if integer and not all(isinstance(v, int) for v in (low, high)):
        raise ConfigError(f"config error: {where}.{kind}: {key} is an integer field, got {args!r}")
    return Dimension(key, kind, (low, high), integer)


def parse_space(where: str, raw: Any) -> SearchSpace:
    """A ``{dotted field: {kind: arguments}}`` mapping; ``where`` is its place in the file."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(
            f"config error: {where}: got {raw!r}, must map config fields to "
            "domains, e.g. {training.server_lr: {loguniform: [0.001, 0.1]}}"
        )
    dims = []
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ConfigError(f"config error: {where}: key {key!r} must be a dotted field")
        dims.append(parse_dimension(f"{where}.{key}", key, value))
    return SearchSpace(tuple(dims), where)
