"""Shared fixtures. Ray is started once per test session, only by tests that need it."""

from __future__ import annotations

import os

import pytest

from fpzo_ray.bench.common import data_root

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Real data sets (MNIST) for the tests that use them, skipped without: where the benches
# look, the folder in FPZO_DATA_ROOT (else ./data).
REAL_DATA_ROOT = data_root()


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits():
    from fpzo_ray.config import DataConfig
    from fpzo_ray.data import load_dataset

    return load_dataset(DataConfig())
