"""Shared fixtures. Ray is started once per test session, only by tests that need it.

Markers (``make test-fast`` runs ``-m "not ray and not slow"``): a test that uses the session's
Ray (or the finished study) is marked ``ray`` and ``slow`` here; modules that start their own
Ray or subprocesses mark themselves.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from fpzo_ray.bench.common import data_root

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Real data sets (MNIST) for the tests that use them, skipped without: where the benches
# look, the folder in FPZO_DATA_ROOT (else ./data).
REAL_DATA_ROOT = data_root()


RAY_FIXTURES = {"ray_session", "finished_study", "mlflow_server"}
#: Logical GPUs of the session's Ray: Ray schedules against them, no CUDA device is needed.
LOGICAL_GPUS = 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        # "local": a Ray of the session's own, whatever cluster Ray last recorded here; two
        # logical GPUs (resources only, nothing runs CUDA) for the placement tests
        ray.init(
            address="local",
            num_cpus=2,
            num_gpus=LOGICAL_GPUS,
            include_dashboard=False,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def finished_study(ray_session, tmp_path_factory):
    """``studies.STUDY`` run once, uninterrupted, in this session's Ray, logged to a SQLite
    store of its own: what the study, report and MLflow UI tests read."""
    from studies import STUDY, write_sweep

    from fpzo_ray.sweep import load_sweep, run_sweep

    folder = tmp_path_factory.mktemp("finished_study")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        outcome = run_sweep(load_sweep(write_sweep(folder, STUDY)), folder / "results")
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return SimpleNamespace(
        outcome=outcome,
        results=folder / "results",
        tracking_uri=f"sqlite:///{folder / 'results' / 'mlflow.db'}",
        spec_path=folder / "study.yaml",
    )


@pytest.fixture(scope="session")
def digits():
    from fpzo_ray.config import DataConfig
    from fpzo_ray.data import load_dataset

    return load_dataset(DataConfig())
