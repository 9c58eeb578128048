"""Shared fixtures. Ray is started once per test session, only by tests that need it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Real MNIST for the tests that use it (skipped without it): FPZO_DATA_ROOT, else the shared
# data folder beside the checkout.
SHARED_MNIST = Path(os.environ.get("FPZO_DATA_ROOT")
                    or Path(__file__).resolve().parents[2] / "shared" / "data")


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
