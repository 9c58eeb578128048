"""Checks that need files or data, run before any work starts.

The configuration validates itself field by field; what it cannot see without loading a
data set or a profiles file (a partition that cannot be built, a missing data set, a bad
device profile) is checked here, so that such an error, too, stops before Ray starts, with
one line naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence

from fpzo_ray.config import ConfigError, RunConfig
from fpzo_ray.data import federated_data, load_dataset
from fpzo_ray.sim.devices import load_catalog


def preflight(configs: Sequence[RunConfig]) -> None:
    """Raise :class:`ConfigError` for the first configuration that cannot run."""
    datasets: dict = {}
    seen = set()
    for cfg in configs:
        if cfg.devices.enabled:
            load_catalog(cfg.devices.profiles_file or None, cfg.devices.population)
        data = repr(cfg.data)  # its args (a dict) make the section unhashable
        if (data, cfg.seed) in seen:
            continue
        seen.add((data, cfg.seed))
        if data not in datasets:
            try:
                datasets[data] = load_dataset(cfg.data)
            except FileNotFoundError as exc:
                raise ConfigError(f"config error: {exc}") from None
        federated_data(cfg, datasets[data])
