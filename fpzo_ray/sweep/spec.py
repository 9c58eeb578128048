"""Sweep files: a grid of cells, optionally a search per cell, optionally a study.

A sweep file holds:

- ``name``, ``description``, ``max_concurrent_trials``, ``max_trials`` (default
  10,000: a larger sweep is refused unless this is raised; the count is taken from the
  axes' lengths before anything is expanded);
- ``storage`` (optional): where trials and their artifacts persist, a path every node mounts
  or a URI (``s3://bucket/prefix``; see ``fpzo_ray.storage``); ``--storage`` overrides it;
- ``max_failures`` (default 3): how often a trial whose node, process or actors were lost is
  restarted from its last checkpoint;
- ``base``: overrides of the defaults of ``config.py`` shared by every trial;
- ``grid``: the axes whose cross product are the *cells*. An axis is either a config field
  with a list of values (``data.alpha: [0.1, 1.0]``) or a *named* axis: a mapping of names to
  bundles of overrides (``method: {dense_zo: {pruning: {method: dense}}, ...}``). A named
  value may carry its own ``search`` space, which replaces ``search.space`` for its cells
  (BP FedAvg tunes its client learning rate, ZO its server learning rate);
- ``search`` (optional): per cell, which values to try (``space``, see
  ``study.search_space``), ``num_samples``, the selection ``metric`` (``val_accuracy`` or
  ``val_loss``: never a test metric) and ``mode``, ``scope`` (``last`` evaluation or ``best``
  one), ``rounds`` (of the search trials; default the full run), ``seed`` (of the draws) and
  an optional early-stopping ``scheduler`` (``{type: asha, grace_period, reduction_factor}``,
  over rounds, per cell);
- ``study`` (optional): ``seeds`` N, re-runs of each cell's chosen configuration for the full
  rounds on N seeds the search never saw (data partition, validation split, model
  initialisation, perturbations all re-drawn), ``flops_budgets`` and ``target_accuracy`` for
  the summary.

The phases: ``grid`` (no search, no study: one trial per cell), ``search`` (the candidates
of every cell), ``repeat`` (the study's fresh seeds). Every trial configuration is validated
when the file is loaded, and so are the ends of every search range, so that a bad value
stops before any work with one line naming its place in the file. Above
``FULL_VALIDATION_LIMIT`` first-phase trials, validation is linear in the axes instead (every
axis value against the base, then the first and last cell): it never scales with their
product.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from fpzo_ray.artifacts import SPEC_FILE
from fpzo_ray.config import (
    ConfigError,
    RunConfig,
    check_text,
    config_from_dict,
    field_type,
    flatten,
    merge,
    metric_key,
    metric_names,
    parse_overrides,
    read_yaml,
    set_dotted,
    show,
)
from fpzo_ray.sweep.study.search_space import SearchSpace, parse_space

DEFAULT_SWEEP = "sweeps/quick.yaml"
SWEEP_KEYS = (
    "name",
    "description",
    "max_concurrent_trials",
    "max_trials",
    "max_failures",
    "storage",
    "base",
    "grid",
    "search",
    "study",
)
SEARCH_KEYS = ("space", "num_samples", "metric", "mode", "scope", "rounds", "seed", "scheduler")
SCHEDULER_KEYS = ("type", "grace_period", "reduction_factor")
STUDY_KEYS = ("seeds", "flops_budgets", "target_accuracy")
#: Metrics a search may select and stop on by default, and the direction each is optimised
#: in; any other validation metric the task reports (``task.metrics``: ``val_<name>``) with
#: its direction given as ``search.mode``.
SELECTION_METRICS = {"val_accuracy": "max", "val_loss": "min", "val_macro_f1": "max"}
SCOPES = ("last", "best")
#: Sweeps larger than this are refused unless the file raises ``max_trials``.
DEFAULT_MAX_TRIALS = 10_000
#: Restarts of a failed trial from its last checkpoint: what a lost node or process needs
#: (an error of the trial's own code gets one restart only, see ``sweep.callbacks.TrialMirror``).
DEFAULT_MAX_FAILURES = 3
#: Up to this many first-phase trials every one is validated; above, the axes one by one.
FULL_VALIDATION_LIMIT = 2_000
#: The longest sweep name (see ``_sweep_name``).
MAX_NAME_LENGTH = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _located(where: str, exc: ConfigError) -> ConfigError:
    """``exc`` about field ``f``, re-addressed as ``where.f`` (its place in the sweep file)."""
    return ConfigError(f"config error: {where}.{str(exc).removeprefix('config error: ')}")


def _int(where: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"config error: {where}: got {value!r}, must be an integer >= {low}")
    return value


def _mapping(where: str, value: Any, allowed: Sequence[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config error: {where}: got {value!r}, must be a mapping")
    unknown = sorted(set(value) - set(allowed), key=str)
    if unknown:
        raise ConfigError(
            f"config error: {where}.{unknown[0]}: unknown key, allowed: {', '.join(allowed)}"
        )
    return dict(value)


def short_name(key: str) -> str:
    return {"zo.num_perturbations": "K", "pruning.sparsity": "sparsity", "data.alpha": "alpha"}.get(
        key, key.split(".")[-1]
    )


def get_dotted(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


# -- the parts of a sweep ------------------------------------------------------------------
@dataclass(frozen=True)
class AxisValue:
    """One value of a grid axis: a field's value, or a named bundle of overrides."""

    label: str
    value: Any  # the field's value (field axes) or the label (named axes)
    overrides: dict[str, Any]  # nested, like ``base``
    space: SearchSpace | None = None  # named values only: replaces ``search.space``


@dataclass(frozen=True)
class Axis:
    """One axis of the grid: a config field or a name, and its values."""

    key: str  # a config field (``data.alpha``) or a name (``method``)
    named: bool
    values: tuple[AxisValue, ...]
    column: str  # its name in tables and cell labels


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: a combination of axis values, and its search space."""

    label: str  # e.g. ``method=ntk_sap_90,partition=dirichlet_0.1``
    coordinates: dict[str, Any]  # column -> value
    overrides: dict[str, Any]
    space: SearchSpace | None


@dataclass(frozen=True)
class SchedulerSettings:
    """``search.scheduler``: ASHA's grace period and reduction factor."""

    grace_period: int
    reduction_factor: float


@dataclass(frozen=True)
class SearchSettings:
    """``search.*``: what to search in each cell, how, and what to select on."""

    space: SearchSpace | None
    num_samples: int
    metric: str
    mode: str
    scope: str
    rounds: int | None
    seed: int
    scheduler: SchedulerSettings | None


@dataclass(frozen=True)
class StudySettings:
    """``study.*``: the repeats on fresh seeds, FLOPs budgets, the target accuracy."""

    seeds: int
    flops_budgets: tuple[float, ...]
    target_accuracy: float


@dataclass(frozen=True)
class TrialPlan:
    """One trial: a whole federated run, and where it belongs in the sweep."""

    cell: str
    coordinates: dict[str, Any]
    phase: str  # grid | search | repeat
    sample: int  # index of the candidate within its cell's search
    seed: int
    hyperparameters: dict[str, Any]  # the searched fields and the values tried
    run: dict[str, Any]  # the run configuration (nested overrides of the defaults)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SweepSpec:
    """A sweep file, parsed and validated: its cells, search, study and trial plans."""

    name: str
    description: str
    raw: dict[str, Any]  # the file with ``--set`` applied: what ``--resume`` re-reads
    base: dict[str, Any]
    axes: tuple[Axis, ...]
    search: SearchSettings | None
    study: StudySettings | None
    max_concurrent_trials: int
    max_trials: int = DEFAULT_MAX_TRIALS
    #: How often a failed trial is restarted from its last checkpoint (see ``trial``).
    max_failures: int = DEFAULT_MAX_FAILURES
    #: Where trials persist (``storage.resolve_storage``); None: the default.
    storage: str | None = None

    @property
    def cell_count(self) -> int:
        return math.prod(len(axis.values) for axis in self.axes)

    @property
    def trial_count(self) -> int:
        """How many trials the sweep runs at most (search candidates plus repeats), counted
        from the axes' lengths and the spaces' sizes, without expanding the grid."""
        first = 0
        if self.phases[0] != "repeat":
            samples = self.search.num_samples if self.search else 1
            base = self.search.space if self.search else None
            # a named value with a space of its own replaces the base space in its cells
            per_value = [
                [v.space.size(samples) if v.space else None for v in axis.values]
                for axis in self.axes
            ]
            if all(size is None for sizes in per_value for size in sizes):
                first = self.cell_count * (base.size(samples) if base else 1)
            else:
                first = sum(cell.space.size(samples) if cell.space else 1 for cell in self.cells())
        return first + (self.cell_count * self.study.seeds if self.study else 0)

    @property
    def kind(self) -> str:
        return "study" if self.study else "search" if self.search else "grid"

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases in order: ``grid``; ``search``; ``search, repeat``; or ``repeat``."""
        first = ("search",) if self.search else () if self.study else ("grid",)
        return first + (("repeat",) if self.study else ())

    def cells(self) -> list[Cell]:
        cells = []
        for combo in itertools.product(*(axis.values for axis in self.axes)):
            overrides: dict[str, Any] = {}
            space = self.search.space if self.search else None
            for value in combo:
                overrides = merge(overrides, value.overrides)
                space = value.space or space
            label = (
                ",".join(f"{axis.column}={value.label}" for axis, value in zip(self.axes, combo))
                or self.name
            )
            coordinates = {axis.column: value.value for axis, value in zip(self.axes, combo)}
            cells.append(Cell(label, coordinates, overrides, space))
        return cells

    def run_config(
        self,
        cell: Cell,
        hyperparameters: Mapping[str, Any],
        seed: int | None = None,
        rounds: int | None = None,
    ) -> dict[str, Any]:
        """The run configuration of a trial of ``cell`` (nested overrides of the defaults)."""
        tree = merge(self.base, cell.overrides)
        for key, value in hyperparameters.items():
            set_dotted(tree, key, value)
        if seed is not None:
            tree["seed"] = seed
        if rounds is not None:
            set_dotted(tree, "training.rounds", rounds)
        return tree

    def search_seed(self, cell: Cell) -> int:
        return config_from_dict(self.run_config(cell, {})).seed

    def repeat_seeds(self, cell: Cell) -> list[int]:
        """The study's fresh seeds: after the search seed, never equal to it."""
        assert self.study is not None
        first = self.search_seed(cell) + 1
        return list(range(first, first + self.study.seeds))

    def first_phase_plans(self) -> list[TrialPlan]:
        """The trials of the grid or search phase (none for a study without a search)."""
        if self.phases[0] == "repeat":
            return []
        phase = self.phases[0]
        plans = []
        for cell in self.cells():
            candidates: list[dict[str, Any]] = [{}]
            if self.search is not None and cell.space is not None:
                candidates = cell.space.assignments(self.search.num_samples, self.search.seed)
            rounds = self.search.rounds if self.search else None
            for sample, assignment in enumerate(candidates):
                run = self.run_config(cell, assignment, rounds=rounds)
                plans.append(
                    TrialPlan(
                        cell.label,
                        cell.coordinates,
                        phase,
                        sample,
                        config_from_dict(run).seed,
                        assignment,
                        run,
                    )
                )
        return plans

    def repeat_plans(self, chosen: Mapping[str, tuple[int, Mapping[str, Any]]]) -> list[TrialPlan]:
        """The study's repeats: ``chosen`` maps a cell label to the (sample, hyperparameters)
        its search picked (a study without a search repeats every cell as it is)."""
        plans = []
        for cell in self.cells():
            if self.search is not None and cell.label not in chosen:
                continue  # every candidate of the cell failed: nothing to repeat
            sample, hyperparameters = chosen.get(cell.label, (0, {}))
            for seed in self.repeat_seeds(cell):
                plans.append(
                    TrialPlan(
                        cell.label,
                        cell.coordinates,
                        "repeat",
                        sample,
                        seed,
                        dict(hyperparameters),
                        self.run_config(cell, hyperparameters, seed=seed),
                    )
                )
        return plans

    def validated_configs(self) -> list[RunConfig]:
        """Every first-phase trial's configuration (and one repeat per cell), validated, and
        the ends of every search range; the first bad one raises ConfigError. Above
        ``FULL_VALIDATION_LIMIT`` trials, see :meth:`_validated_by_axis`."""
        if self.trial_count > FULL_VALIDATION_LIMIT:
            return self._validated_by_axis()
        configs = []
        for cell in self.cells():
            for dim in cell.space.dimensions if cell.space else ():
                for corner in dim.values:
                    try:
                        config_from_dict(self.run_config(cell, {dim.key: corner}))
                    except ConfigError as exc:
                        assert cell.space is not None
                        raise _located(cell.space.where, exc) from None
            configs.append(config_from_dict(self.run_config(cell, {})))
            if self.study is not None:
                configs.append(
                    config_from_dict(self.run_config(cell, {}, self.repeat_seeds(cell)[-1]))
                )
        full_runs = list(configs)
        configs += [config_from_dict(p.run) for p in self.first_phase_plans()]
        self._check_against_configs(configs, full_runs)
        return configs

    def _validated_by_axis(self) -> list[RunConfig]:
        """Linear validation for very large sweeps: each axis value on the base, the ends of
        the search ranges on the base, and the first and last cell. A bad combination of
        values that are each valid then fails as its trial (an ERROR row), not before."""
        empty = Cell(self.name, {}, {}, self.search.space if self.search else None)
        configs = []
        for axis in self.axes:
            if not axis.named:  # named values were checked on the base as they were parsed
                configs += [config_from_dict(merge(self.base, v.overrides)) for v in axis.values]
        spaces = [empty.space] + [v.space for a in self.axes for v in a.values]
        for space in filter(None, spaces):
            for dim in space.dimensions:
                for corner in dim.values:
                    try:
                        configs.append(config_from_dict(self.run_config(empty, {dim.key: corner})))
                    except ConfigError as exc:
                        raise _located(space.where, exc) from None
        corners = [tuple(a.values[0] for a in self.axes), tuple(a.values[-1] for a in self.axes)]
        for combo in corners:
            overrides: dict[str, Any] = {}
            for value in combo:
                overrides = merge(overrides, value.overrides)
            configs.append(config_from_dict(merge(self.base, overrides)))
        self._check_against_configs(configs, configs)
        return configs

    def _check_against_configs(self, configs: list[RunConfig], full_runs: list[RunConfig]) -> None:
        """Rules between the sweep's settings and its trials (``full_runs``: the cells' own
        configurations, before a search shortens them)."""
        search = self.search
        if search is None:
            return
        full = min(cfg.training.rounds for cfg in full_runs)
        if search.rounds is not None and search.rounds > full:
            raise ConfigError(
                f"config error: search.rounds: got {search.rounds}, must be <= "
                f"training.rounds ({full}): a search trial is a shortened run, never a longer one"
            )
        for cfg in configs:
            reported = {"loss", *map(metric_key, metric_names(cfg.task.loss, cfg.task.metrics))}
            if search.metric[4:] not in reported:
                raise ConfigError(
                    f"config error: search.metric: {search.metric} is not reported (task.loss "
                    f"{cfg.task.loss}, task.metrics {cfg.task.metrics!r}: "
                    f"{', '.join(sorted(f'val_{k}' for k in reported))})"
                )
        if search.metric.startswith("val_"):
            for cfg in configs:
                if cfg.data.validation_fraction <= 0:
                    raise ConfigError(
                        f"config error: data.validation_fraction: search.metric "
                        f"{search.metric} needs a validation split, got 0"
                    )
        rounds = min(cfg.training.rounds for cfg in configs)
        if search.scheduler is not None and search.scheduler.grace_period > rounds:
            raise ConfigError(
                f"config error: search.scheduler.grace_period: got "
                f"{search.scheduler.grace_period}, must be <= the rounds of a "
                f"search trial ({rounds})"
            )

    def search_space_description(self) -> dict[str, Any]:
        """What was searched, per cell: for the record (MLflow, the summary)."""
        out: dict[str, Any] = {"kind": self.kind, "phases": list(self.phases)}
        if self.search is not None:
            s = self.search
            out["search"] = {
                "num_samples": s.num_samples,
                "metric": s.metric,
                "mode": s.mode,
                "scope": s.scope,
                "rounds": s.rounds,
                "seed": s.seed,
                "scheduler": asdict(s.scheduler) if s.scheduler else None,
            }
            out["cells"] = {c.label: c.space.describe() if c.space else {} for c in self.cells()}
        if self.study is not None:
            out["study"] = asdict(self.study)
            out["repeat_seeds"] = {c.label: self.repeat_seeds(c) for c in self.cells()}
        return out


# -- reading a sweep file ------------------------------------------------------------------
def _apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``--set`` items: ``search.*``/``study.*``/top-level sweep keys change the sweep file;
    ``<named axis>=<name>`` keeps that one value of a named axis (``--set method=dense_zo``);
    anything else is a config value for every trial, which pins a grid axis or search
    dimension over that field and wins over every named value."""
    raw = merge(raw, {})
    config_items = []
    grid = raw.get("grid")
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if isinstance(grid, dict) and isinstance(grid.get(key), Mapping):
            label = item.split("=", 1)[1].strip() if "=" in item else ""
            if label not in grid[key]:
                raise ConfigError(
                    f"config error: --set {key}: got {label!r}, the named axis holds "
                    f"{', '.join(map(str, grid[key]))}"
                )
            grid[key] = {label: grid[key][label]}
        elif key.split(".")[0] in SWEEP_KEYS and key.split(".")[0] not in ("base", "grid"):
            for dotted, value in flatten(parse_overrides([item])).items():
                set_dotted(raw, dotted, value)
        else:
            config_items.append(item)
    pinned = parse_overrides(config_items)
    pinned_keys = set(flatten(pinned))
    raw["base"] = merge(raw.get("base") or {}, pinned)
    grid = raw.get("grid")
    if isinstance(grid, Mapping):
        kept: dict[str, Any] = {}
        for name, entry in grid.items():
            if name in pinned_keys:
                continue
            if isinstance(entry, Mapping):
                entry = {label: _without(body, pinned_keys) for label, body in entry.items()}
            kept[name] = entry
        raw["grid"] = kept
    search = raw.get("search")
    if isinstance(search, Mapping) and isinstance(search.get("space"), Mapping) and pinned_keys:
        space = {k: v for k, v in search["space"].items() if k not in pinned_keys}
        raw["search"] = {k: v for k, v in search.items() if k != "space"}
        if space:
            raw["search"]["space"] = space
    return raw


def _without(body: Any, keys: set[str]) -> Any:
    """A named value's overrides without the pinned fields (and its space without them)."""
    if not isinstance(body, Mapping):
        return body
    out = merge(body, {})
    for key in keys:
        *sections, leaf = key.split(".")
        node: Any = out
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    if isinstance(out.get("search"), Mapping):
        out["search"] = {k: v for k, v in out["search"].items() if k not in keys}
        if not out["search"]:
            del out["search"]
    return out


def _parse_axis(name: Any, entry: Any, base: dict[str, Any]) -> Axis:
    where = f"grid.{name}"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"config error: grid: axis {name!r} must be a config field or a name")
    if isinstance(entry, list):
        try:
            field_type(name)
        except ConfigError as exc:
            raise ConfigError(f"config error: {where}: {str(exc).split(': ', 2)[-1]}") from None
        if not entry:
            raise ConfigError(f"config error: {where}: got [], must be a non-empty list")
        values = []
        for value in entry:
            overrides: dict[str, Any] = {}
            set_dotted(overrides, name, value)
            values.append(AxisValue(str(value), value, overrides))
        return Axis(name, False, tuple(values), short_name(name))
    if isinstance(entry, Mapping):
        if not entry:
            raise ConfigError(f"config error: {where}: got {{}}, must name at least one value")
        if "." in name:
            raise ConfigError(
                f"config error: {where}: a named axis (a mapping of names to "
                "overrides) needs a plain name, a config field a list of values"
            )
        values = []
        for label, body in entry.items():
            place = f"{where}.{label}"
            check_text(where, str(label))  # a label names runs and folders
            if body is not None and not isinstance(body, Mapping):
                raise ConfigError(
                    f"config error: {place}: got {body!r}, must be a mapping of "
                    "overrides, like base"
                )
            body = dict(body or {})
            space = None
            if "search" in body:
                space = parse_space(f"{place}.search", body.pop("search"))
            try:
                config_from_dict(merge(base, body))
            except ConfigError as exc:
                raise _located(place, exc) from None
            values.append(AxisValue(str(label), str(label), body, space))
        return Axis(name, True, tuple(values), name)
    raise ConfigError(
        f"config error: {where}: got {entry!r}, must be a list of values (a "
        "config field) or a mapping of names to overrides (a named axis)"
    )


def _parse_search(raw: Any) -> SearchSettings:
    section = _mapping("search", raw, SEARCH_KEYS)
    space = parse_space("search.space", section["space"]) if "space" in section else None
    metric = section.get("metric", "val_accuracy")
    if not (isinstance(metric, str) and metric.startswith("val_") and metric[4:].isidentifier()):
        why = ": selection must never read test metrics" if str(metric).startswith("test") else ""
        raise ConfigError(
            f"config error: search.metric: got {metric!r}{why}; allowed: "
            f"{', '.join(SELECTION_METRICS)}, or val_<name> of a metric in task.metrics"
        )
    if metric not in SELECTION_METRICS and "mode" not in section:
        raise ConfigError(
            f"config error: search.mode: {metric} is a metric of your own: say whether it is "
            "maximised or minimised (max or min)"
        )
    mode = section.get("mode", SELECTION_METRICS.get(metric))
    if mode not in ("max", "min"):
        raise ConfigError(f"config error: search.mode: got {mode!r}, allowed: max, min")
    if metric in SELECTION_METRICS and mode != SELECTION_METRICS[metric]:
        raise ConfigError(
            f"config error: search.mode: got {mode!r}, {metric} is "
            f"{'maximised' if SELECTION_METRICS[metric] == 'max' else 'minimised'}"
        )
    scope = section.get("scope", "last")
    if scope not in SCOPES:
        raise ConfigError(
            f"config error: search.scope: got {scope!r}, allowed: {', '.join(SCOPES)}"
        )
    rounds = section.get("rounds")
    if rounds is not None:
        rounds = _int("search.rounds", rounds, 1)
    scheduler = None
    if section.get("scheduler") is not None:
        s = _mapping("search.scheduler", section["scheduler"], SCHEDULER_KEYS)
        if s.get("type", "asha") != "asha":
            raise ConfigError(
                f"config error: search.scheduler.type: got {s['type']!r}, allowed: asha"
            )
        factor = s.get("reduction_factor", 3)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
            raise ConfigError(
                f"config error: search.scheduler.reduction_factor: got "
                f"{factor!r}, must be a number > 1"
            )
        scheduler = SchedulerSettings(
            _int("search.scheduler.grace_period", s.get("grace_period", 1), 1), float(factor)
        )
    return SearchSettings(
        space,
        _int("search.num_samples", section.get("num_samples", 1), 1),
        metric,
        mode,
        scope,
        rounds,
        _int("search.seed", section.get("seed", 0), 0),
        scheduler,
    )


def _parse_study(raw: Any) -> StudySettings:
    section = _mapping("study", raw, STUDY_KEYS)
    if "seeds" not in section:
        raise ConfigError(
            "config error: study.seeds: missing, the number of fresh seeds each "
            "cell's chosen configuration is repeated on"
        )
    seeds = _int("study.seeds", section["seeds"], 2)
    budgets = section.get("flops_budgets") or []
    if not isinstance(budgets, list) or not all(
        not isinstance(b, bool) and isinstance(b, (int, float)) and b > 0 for b in budgets
    ):
        raise ConfigError(
            f"config error: study.flops_budgets: got {budgets!r}, must be a list "
            "of client-FLOPs budgets > 0"
        )
    target = section.get("target_accuracy", 0.0)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 <= target <= 1:
        raise ConfigError(f"config error: study.target_accuracy: got {target!r}, must be in [0, 1]")
    return StudySettings(seeds, tuple(float(b) for b in budgets), float(target))


def _sweep_name(name: Any, given: bool) -> str:
    """The sweep's name, which starts its experiment folder's name (``<name>_<time>``):
    ASCII letters, digits, ``.``, ``_`` and ``-`` only, starting with a letter or digit, at
    most ``MAX_NAME_LENGTH`` characters, so that the folder can be made on any file system
    (their names hold at most 255 bytes) and is neither hidden nor taken for an option."""
    source = "" if given else " (the sweep file's name: the file sets no name)"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"config error: name: got {show(name)}{source}, must be ASCII letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"config error: name: got {show(name)}{source} ({len(name)} characters), must be "
            f"at most {MAX_NAME_LENGTH}"
        )
    return name


def parse_sweep(raw: Mapping[str, Any], default_name: str = "sweep") -> SweepSpec:
    """A sweep from the mapping of a sweep file (``--set`` already applied)."""
    raw = _mapping("sweep", raw, SWEEP_KEYS)
    base = raw.get("base") or {}
    if not isinstance(base, Mapping):
        raise ConfigError(f"config error: base: got {base!r}, must be a mapping")
    grid = raw.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise ConfigError(
            "config error: grid: must map config fields to lists of values, or "
            "names to mappings of named overrides"
        )
    axes = tuple(_parse_axis(name, entry, dict(base)) for name, entry in grid.items())
    columns = [a.column for a in axes]
    axes = tuple(
        Axis(a.key, a.named, a.values, a.key if columns.count(a.column) > 1 else a.column)
        for a in axes
    )
    search = _parse_search(raw["search"]) if raw.get("search") is not None else None
    study = _parse_study(raw["study"]) if raw.get("study") is not None else None
    spaced = [f"grid.{a.key}.{v.label}.search" for a in axes for v in a.values if v.space]
    if spaced and search is None:
        raise ConfigError(
            f"config error: {spaced[0]}: a per-value search space needs a search section"
        )
    for a in axes:
        for b in axes:
            if a is not b and any(v.space for v in a.values) and any(v.space for v in b.values):
                raise ConfigError(
                    f"config error: grid.{b.key}: only one axis may carry "
                    "search spaces (they replace search.space for a cell)"
                )
    if study is not None:
        if "seed" in grid:
            raise ConfigError(
                "config error: grid.seed: a study draws its own seeds (the "
                "search seed from base.seed, then fresh repeat seeds)"
            )
        spaces = [search.space] if search and search.space else []
        spaces += [v.space for a in axes for v in a.values if v.space]
        if any("seed" in s.keys for s in spaces):
            raise ConfigError("config error: search.space.seed: a study draws its own seeds")
    concurrent = _int("max_concurrent_trials", raw.get("max_concurrent_trials", 2), 1)
    max_trials = _int("max_trials", raw.get("max_trials", DEFAULT_MAX_TRIALS), 1)
    max_failures = _int("max_failures", raw.get("max_failures", DEFAULT_MAX_FAILURES), 0)
    storage = raw.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        raise ConfigError(
            f"config error: storage: got {storage!r}; name a path every node mounts or a "
            "URI (s3://bucket/prefix)"
        )
    name = _sweep_name(raw.get("name", default_name), "name" in raw)
    # the raw file keeps the name it was given, so that a saved copy reads back the same
    spec = SweepSpec(
        name,
        str(raw.get("description", "")),
        {"name": name, **raw},
        dict(base),
        axes,
        search,
        study,
        concurrent,
        max_trials,
        max_failures,
        storage,
    )
    if spec.trial_count > max_trials:
        sizes = " x ".join(str(len(a.values)) for a in axes)
        parts = f"{spec.cell_count} cell{'s' if spec.cell_count > 1 else ''}" + (
            f" ({sizes})" if len(axes) > 1 else ""
        )
        if search is not None and spec.phases[0] == "search":
            parts += f" x {search.num_samples} search samples"
        if study is not None:
            parts += f", then {study.seeds} repeats each"
        raise ConfigError(
            f"config error: max_trials: the sweep has {spec.trial_count} trials "
            f"({parts}), above max_trials {max_trials}; set max_trials in the "
            "sweep file (or --set max_trials=N) to run it anyway"
        )
    spec.validated_configs()
    return spec


def find_sweep_file(path: str) -> Path:
    """``path`` as given, else relative to the project root (so the default works anywhere)."""
    given = Path(path)
    if given.is_file() or given.is_absolute():
        return given
    beside_package = Path(__file__).resolve().parent.parent / path
    return beside_package if beside_package.is_file() else given


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    raw = read_yaml(path)
    if not raw:
        raise ConfigError(
            f"config error: {path}: the sweep file is empty; it needs at least "
            "a grid, a base or a search (see sweeps/quick.yaml)"
        )
    raw = _apply_overrides(raw, overrides)
    return parse_sweep(raw, Path(path).stem)


def save_spec(spec: SweepSpec, folder: Path) -> None:
    """The sweep file as resolved, in the experiment folder, signed (``signing``): it names
    import paths, which resuming imports."""
    from fpzo_ray.signing import sign

    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC_FILE).write_text(yaml.safe_dump(spec.raw, sort_keys=False))
    sign(folder, [SPEC_FILE])


def load_saved_spec(folder: Path, what: str = "--resume") -> SweepSpec:
    """The spec a sweep in ``folder`` (its experiment folder) was started with, once its
    signature is checked (``what``: the option that named the folder, for the error)."""
    from fpzo_ray.signing import verify

    if not (folder / SPEC_FILE).is_file():
        raise ConfigError(
            f"config error: {what}: {folder} is not a sweep's experiment folder (no {SPEC_FILE})"
        )
    verify(folder, [SPEC_FILE], what)
    return load_sweep(folder / SPEC_FILE)
