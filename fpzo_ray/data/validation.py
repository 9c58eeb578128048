"""The validation split: what hyperparameter searches, schedulers and "best round" read.

Test metrics are reported, never optimised: anything that selects a configuration or stops a
trial early looks at a validation split instead. It is a stratified slice of the training
pool (every class loses the same fraction, rounded per class; targets that are not class
indices, a plain random slice of that fraction), drawn from the run seed and
held out *before* the pool is partitioned across clients, so no client ever trains on it and
it is the same whatever the partition, the number of clients or the worker count.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fpzo_ray.data.arrays import ArrayDataset, has_class_labels
from fpzo_ray.seeding import Purpose, derive_seed


def stratified_holdout(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` sorted index arrays: ``round(fraction * n_c)`` of each class out."""
    labels = np.asarray(labels)
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = int(round(fraction * members.shape[0]))
        held.append(rng.permutation(members)[:take])
    held_out = np.sort(np.concatenate(held)).astype(np.int64)
    kept = np.setdiff1d(np.arange(labels.shape[0]), held_out).astype(np.int64)
    return kept, held_out


def hold_out_validation(dataset: ArrayDataset, fraction: float, run_seed: int) -> ArrayDataset:
    """The data set with a validation split taken out of its training inputs (a copy; any
    input shape: only the leading, per-sample axis is indexed)."""
    if fraction <= 0:
        return dataset
    rng = np.random.default_rng(derive_seed(run_seed, Purpose.VALIDATION_SPLIT))
    labels = dataset.train_labels
    if has_class_labels(labels):
        kept, held_out = stratified_holdout(labels, fraction, rng)
    else:
        held_out = np.sort(rng.permutation(labels.shape[0])[: round(fraction * labels.shape[0])])
        kept = np.setdiff1d(np.arange(labels.shape[0]), held_out)
    return dataclasses.replace(
        dataset,
        train_inputs=dataset.train_inputs[kept],
        train_labels=dataset.train_labels[kept],
        val_inputs=dataset.train_inputs[held_out],
        val_labels=dataset.train_labels[held_out],
    )


def validation_subset(labels: np.ndarray, size: int, run_seed: int) -> np.ndarray:
    """Sorted indices of about ``size`` validation samples (rounded per class), stratified like
    the split itself (class labels; otherwise a plain random draw of ``size``), drawn from the
    run seed: the fixed sample the server scores every round (``training.eval_subset``), the
    same for every method of a study. All of them when ``size`` covers the split."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(derive_seed(run_seed, Purpose.VALIDATION_SUBSET))
    if not has_class_labels(labels):
        return np.sort(rng.permutation(n)[:size]).astype(np.int64)
    _, chosen = stratified_holdout(labels, size / n, rng)
    return chosen
