"""scikit-learn's bundled wine data set (178 wines, 13 measurements, 3 cultivars) as the
simulator's data: named in ``sweep.yaml`` as ``data: {target: "wine_data:load"}``.

The loader owns its normalisation: each measurement is standardised with the training
split's mean and standard deviation (``Standardisation``), so the test split is scaled by
statistics it did not contribute to.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

from fpzo_ray.data import ArrayDataset, Standardisation, from_arrays


def load(test_fraction: float = 0.25, split_seed: int = 0) -> ArrayDataset:
    """Train and test splits (stratified, fixed by ``split_seed`` so that runs with
    different seeds are evaluated on the same wines)."""
    bunch = load_wine()
    x = bunch.data.astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=split_seed
    )
    return from_arrays(
        train=(x_train, y_train),
        test=(x_test, y_test),
        num_classes=3,
        name="wine",
        normalisation=Standardisation.fit(x_train),
    )
