"""Data sets (a registry of loaders, or a researcher's arrays), the validation split, and how
the training pool is split across virtual clients."""

from __future__ import annotations

import numpy as np

from fpzo_ray.config import RunConfig
from fpzo_ray.data.arrays import (
    ArrayDataset,
    AsFloat32,
    PixelNormalisation,
    Standardisation,
    as_array_dataset,
    check_array_dataset,
    from_arrays,
    from_torch_datasets,
    load_target_dataset,
)
from fpzo_ray.data.partition import (
    PartitionError,
    check_partition,
    client_holdout,
    dirichlet_partition,
    iid_partition,
    label_histograms,
    make_partition,
    partition_dirichlet,
    partition_iid,
    partition_shards,
    shards_partition,
)
from fpzo_ray.data.registry import load_dataset
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
    "ArrayDataset",
    "AsFloat32",
    "PartitionError",
    "PixelNormalisation",
    "Standardisation",
    "as_array_dataset",
    "check_array_dataset",
    "check_partition",
    "client_holdout",
    "dirichlet_partition",
    "federated_data",
    "from_arrays",
    "from_torch_datasets",
    "hold_out_validation",
    "iid_partition",
    "label_histograms",
    "load_dataset",
    "load_target_dataset",
    "make_partition",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
    "shards_partition",
    "stratified_holdout",
]
