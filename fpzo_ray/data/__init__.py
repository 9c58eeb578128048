"""Data sets (a registry of loaders) and how they are split across virtual clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fpzo_ray.config import ConfigError

from fpzo_ray.data.partition import (
    PartitionError,
    dirichlet_partition,
    iid_partition,
    label_histograms,
    make_partition,
    shards_partition,
)
from fpzo_ray.data.registry import DATASET_LOADERS, ImageDataset, load_dataset


def check_partitions(configs: "list[RunConfig]") -> None:
    """Build every distinct partition the configurations ask for, so that an impossible one
    stops with a :class:`ConfigError` before any work starts (data sets load once each)."""
    datasets: dict = {}
    seen = set()
    for cfg in configs:
        key = (cfg.data, cfg.seed)
        if key in seen:
            continue
        seen.add(key)
        if cfg.data not in datasets:
            try:
                datasets[cfg.data] = load_dataset(cfg.data)
            except FileNotFoundError as exc:
                raise ConfigError(f"config error: {exc}") from None
        make_partition(cfg.data, datasets[cfg.data].train_labels, cfg.seed)

if TYPE_CHECKING:
    from fpzo_ray.config import RunConfig

__all__ = [
    "check_partitions",
    "DATASET_LOADERS", "ImageDataset", "PartitionError", "dirichlet_partition",
    "iid_partition", "label_histograms", "load_dataset", "make_partition", "shards_partition",
]
