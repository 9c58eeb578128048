"""Sweep definitions: a YAML file of ``name``, ``base``, ``grid`` and ``max_concurrent_trials``.

``base`` overrides the defaults of ``config.py`` for every trial; ``grid`` maps dotted keys to
lists of values, the trials being their cross product. Every trial configuration is validated
when the file is loaded. The resolved spec is saved beside the Tune experiment so that an
interrupted sweep can be resumed exactly as it was started.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from fpzo_ray.config import (
    ConfigError,
    RunConfig,
    config_from_dict,
    merge,
    parse_overrides,
    read_yaml,
    set_dotted,
)

DEFAULT_SWEEP = "sweeps/quick.yaml"
SPEC_FILE = "fpzo_sweep.yaml"  # the resolved spec, saved in the Tune experiment folder
_SWEEP_KEYS = ("name", "description", "base", "grid", "max_concurrent_trials")


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    max_concurrent_trials: int

    def trial_overrides(self) -> list[dict[str, Any]]:
        """One ``{dotted key: value}`` per grid point, in grid order."""
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]

    def trial_config(self, point: dict[str, Any]) -> dict[str, Any]:
        tree = merge(self.base, {})
        for key, value in point.items():
            set_dotted(tree, key, value)
        return tree

    def validated_configs(self) -> list[RunConfig]:
        """Every trial's configuration, validated: the first bad one raises ConfigError."""
        return [config_from_dict(self.trial_config(p)) for p in self.trial_overrides()]


def find_sweep_file(path: str) -> Path:
    """``path`` as given, else relative to the project root (so the default works anywhere)."""
    given = Path(path)
    if given.is_file() or given.is_absolute():
        return given
    beside_package = Path(__file__).resolve().parent.parent / path
    return beside_package if beside_package.is_file() else given


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    raw = read_yaml(path)
    unknown = sorted(set(raw) - set(_SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"config error: {unknown[0]}: unknown sweep key, "
                          f"allowed: {', '.join(_SWEEP_KEYS)}")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        raise ConfigError("config error: grid: must map dotted keys to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"config error: grid.{key}: got {values!r}, must be a non-empty list")
    concurrent = raw.get("max_concurrent_trials", 2)
    if isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1:
        raise ConfigError(f"config error: max_concurrent_trials: got {concurrent!r}, "
                          "must be an integer >= 1")
    # An override of a grid key pins that axis to the one value given.
    overrides = list(overrides)
    pinned = {item.split("=", 1)[0].strip() for item in overrides} & set(grid)
    base = merge(raw.get("base") or {}, parse_overrides(overrides))
    grid = {k: v for k, v in grid.items() if k not in pinned}
    spec = SweepSpec(str(raw.get("name", Path(path).stem)), base, grid, concurrent)
    spec.validated_configs()
    return spec


def get_dotted(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def short_name(key: str) -> str:
    return {"zo.num_perturbations": "K", "pruning.sparsity": "sparsity",
            "data.alpha": "alpha"}.get(key, key.split(".")[-1])


def save_spec(spec: SweepSpec, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC_FILE).write_text(yaml.safe_dump(
        {"name": spec.name, "base": spec.base, "grid": spec.grid,
         "max_concurrent_trials": spec.max_concurrent_trials}, sort_keys=False))


def load_saved_spec(folder: Path) -> SweepSpec:
    """The spec a sweep in ``folder`` (a Tune experiment folder) was started with."""
    if not (folder / SPEC_FILE).is_file():
        raise ConfigError(f"config error: --resume: {folder} is not a sweep's experiment folder "
                          f"(no {SPEC_FILE})")
    return load_sweep(folder / SPEC_FILE)
