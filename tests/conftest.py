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
    _group_for_workers(items)


def _group_for_workers(items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``), and the
    longest first.

    Every reader of the finished study shares one worker (the study runs once per worker
    that needs it), and so do the tests of a module with a module-scoped fixture (built once).
    Other tests go wherever a worker is free. The groups, long chains of slow tests, are
    handed out first, so that they do not start last on one worker while the other idles.
    """
    shared_modules = {
        item.module.__name__
        for item in items
        if item.module is not None
        and any(
            definition.scope == "module"
            for definitions in item._fixtureinfo.name2fixturedefs.values()
            for definition in definitions
        )
    }

    def group(item: pytest.Item) -> str | None:
        if "finished_study" in getattr(item, "fixturenames", ()):
            return "finished_study"
        module = item.module.__name__ if item.module is not None else None
        return module if module in shared_modules else None

    groups = {item: group(item) for item in items}
    for item, name in groups.items():
        if name is not None:
            item.add_marker(pytest.mark.xdist_group(name))
    items.sort(key=lambda item: {"finished_study": 0, None: 2}.get(groups[item], 1))


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


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """An S3-compatible server on a free local port (moto's server mode, as Ray's own storage
    tests use) with the bucket ``studies.BUCKET``: a boto3 client of it and its
    ``host:port``, for pyarrow's ``endpoint_override``."""
    pytest.importorskip("moto.server", reason="moto[server] (the test extra) is not installed")
    import subprocess
    import sys
    import time

    import boto3
    from studies import BUCKET, S3_CREDENTIALS, free_port

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, **S3_CREDENTIALS},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    deadline = time.time() + 60
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:  # noqa: BLE001 - not listening yet
            assert server.poll() is None, log.read_text()
            assert time.time() < deadline, "the S3 server did not come up in 60 s"
            time.sleep(0.5)
    yield client, f"127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)
