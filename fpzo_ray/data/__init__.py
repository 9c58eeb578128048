"""Data sets (a registry of loaders), the validation split, and how the training pool is split
across virtual clients."""

from __future__ import annotations

import numpy as np

from fpzo_ray.config import RunConfig
from fpzo_ray.data.partition import (
    PartitionError,
    dirichlet_partition,
    iid_partition,
    label_histograms,
    make_partition,
    shards_partition,
)
from fpzo_ray.data.registry import DATASET_LOADERS, ArrayDataset, load_dataset
from fpzo_ray.data.validation import hold_out_validation, stratified_holdout


def federated_data(
    cfg: RunConfig, loaded: ArrayDataset | None = None
) -> tuple[ArrayDataset, list[np.ndarray]]:
    """What a run trains and evaluates on: the data set with its validation split held out,
    and the partition of the remaining training pool. ``loaded``: the data set as loaded
    (``load_dataset(cfg.data)``), when the caller has it already."""
    dataset = hold_out_validation(
        loaded if loaded is not None else load_dataset(cfg.data),
        cfg.data.validation_fraction,
        cfg.seed,
    )
    return dataset, make_partition(cfg.data, dataset.train_labels, cfg.seed)


__all__ = [
    "DATASET_LOADERS",
    "ArrayDataset",
    "PartitionError",
    "dirichlet_partition",
    "federated_data",
    "hold_out_validation",
    "iid_partition",
    "label_histograms",
    "load_dataset",
    "make_partition",
    "shards_partition",
    "stratified_holdout",
]
