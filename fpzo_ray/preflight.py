"""Checks that need files, data or a model, run before any work starts.

The configuration validates itself field by field; what it cannot see without loading a data
set, a profiles file or a model (a partition that cannot be built, a missing data set, a
researcher's loader or model that fails, a bad device profile) is checked here, so that such
an error, too, stops before Ray starts, with one line naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fpzo_ray.config import ConfigError, RunConfig
from fpzo_ray.data import ArrayDataset, federated_data, load_dataset
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.protocol import zo_update_spec
from fpzo_ray.sim.devices import load_catalog
from fpzo_ray.zo.layerwise import blocks_for


def preflight(configs: Sequence[RunConfig]) -> None:
    """Raise :class:`ConfigError` for the first configuration that cannot run."""
    datasets: dict[str, ArrayDataset] = {}
    seen: set[tuple[str, ...]] = set()
    for cfg in configs:
        if cfg.devices.enabled:
            load_catalog(cfg.devices.profiles_file or None, cfg.devices.population)
        data = repr(cfg.data)  # its args (a dict) make the section unhashable
        if data not in datasets:
            datasets[data] = _load(cfg)
        if (data, str(cfg.seed)) not in seen:
            seen.add((data, str(cfg.seed)))
            federated_data(cfg, datasets[data])
        model = (data, repr(cfg.model), cfg.zo.perturbation_scope)
        if model not in seen:
            seen.add(model)
            _try_model(cfg, datasets[data])


def _load(cfg: RunConfig) -> ArrayDataset:
    """The data set, or one line naming the field: a missing file, or a researcher's loader
    that raises or returns something else than a data set."""
    try:
        return load_dataset(cfg.data)
    except FileNotFoundError as exc:
        raise ConfigError(f"config error: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a researcher's loader may raise anything
        if not cfg.data.target:
            raise
        raise ConfigError(_raised("data.target", cfg.data.target, exc)) from None


def _try_model(cfg: RunConfig, dataset: ArrayDataset) -> None:
    """Build the model and run it on two training inputs, as every actor will: a model that
    cannot be built, does not accept the data or cannot run the configured ZO variant stops
    here, before Ray starts."""
    field = "model.target" if cfg.model.target else "model.name"
    try:
        model = build_model(cfg, dataset.input_shape, dataset.num_classes, init_seed=0)
        flat, layout = bind_flat_buffer(model)
        with torch.no_grad():
            logits = model(dataset.train_batch(np.arange(min(2, dataset.num_train)))[0])
        if logits.shape[-1] != dataset.num_classes:
            raise ValueError(
                f"returns {logits.shape[-1]} outputs a sample, the data has "
                f"{dataset.num_classes} classes"
            )
    except Exception as exc:  # noqa: BLE001 - a researcher's model may raise anything
        raise ConfigError(_raised(field, cfg.model_name, exc)) from None
    try:  # the layer-wise variant needs a chain of stages
        blocks_for(zo_update_spec(cfg, clip_on_client=False), model, layout, None)
    except ValueError as exc:
        raise ConfigError(f"config error: {exc}") from None


def _raised(field: str, target: str, exc: Exception) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    prefix = f"{field}: "
    if first.startswith(prefix):  # already says which field
        return f"config error: {first}"
    return f"config error: {field}: {target}: {type(exc).__name__}: {first}"[:400]
