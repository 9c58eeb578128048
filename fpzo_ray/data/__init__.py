"""Data sets (a registry of loaders) and how they are split across virtual clients."""

from fpzo_ray.data.partition import (
    PartitionError,
    dirichlet_partition,
    iid_partition,
    label_histograms,
    make_partition,
    shards_partition,
)
from fpzo_ray.data.registry import DATASET_LOADERS, ImageDataset, load_dataset

__all__ = [
    "DATASET_LOADERS", "ImageDataset", "PartitionError", "dirichlet_partition",
    "iid_partition", "label_histograms", "load_dataset", "make_partition", "shards_partition",
]
