"""Shared fixtures. Ray is started once per test session, only by tests that need it.

Markers (``make test-fast`` runs ``-m "not ray and not slow"``): a test that uses the session's
Ray (or the finished study) is marked ``ray`` and ``slow`` here; modules that start their own
Ray or subprocesses mark themselves.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from fpzo_ray.bench.common import data_root

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# One compute thread per test process, and per process a test starts: ``make test`` runs two
# pytest workers on two cores beside Ray's workers, and torch's spinning OpenMP threads, two
# per process, then slowed in-process training six-fold (measured: two example tests together
# took 75 s with the default threads, 22 s with one each).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

# Real data sets (MNIST) for the tests that use them, skipped without: where the benches
# look, the folder in FPZO_DATA_ROOT (else ./data).
REAL_DATA_ROOT = data_root()


RAY_FIXTURES = {"ray_session", "finished_study", "mlflow_server"}
#: Logical GPUs of the session's Ray: Ray schedules against them, no CUDA device is needed.
LOGICAL_GPUS = 2


#: ``make test`` spreads the tests over pytest-xdist workers (``--dist loadscope``,
#: refined by :func:`pytest_xdist_make_scheduler`). These modules' tests share one worker: a
#: module-scoped fixture is then built once, and the finished study, which several modules
#: read, runs once. Every other test goes to whichever worker is free. Checked at collection.
SHARED_WORKER = {
    "test_mlflow_ui.py": "finished_study",
    "test_report_e2e.py": "finished_study",
    "test_study_e2e.py": "finished_study",
    "test_checkpoint_files.py": "test_checkpoint_files.py",
    "test_engine.py": "test_engine.py",
    "test_examples.py": "test_examples.py",
    "test_memory.py": "test_memory.py",
    "test_multinode.py": "test_multinode.py",
    "test_tracking_server.py": "test_tracking_server.py",
    "test_user_data.py": "test_user_data.py",
}


def _module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1]


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with the scopes of :data:`SHARED_WORKER`: a group per listed
    module (or set of modules), every other test a scope of its own."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedWorkerScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SHARED_WORKER.get(_module_of(nodeid), nodeid)

    return SharedWorkerScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.slow)
    _check_shared_worker(items)
    # the groups, long chains of slow tests, are handed out first, so that none starts last
    # on one worker while the other idles
    items.sort(key=lambda item: _module_of(item.nodeid) not in SHARED_WORKER)


def _check_shared_worker(items: list[pytest.Item]) -> None:
    """Every module that reads the finished study or has a module-scoped fixture must be in
    :data:`SHARED_WORKER`, else the study or the fixture is built on each worker."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        definitions = info.name2fixturedefs.values() if info is not None else ()
        shared = "finished_study" in getattr(item, "fixturenames", ()) or any(
            d.scope == "module" for defs in definitions for d in defs
        )
        if shared and _module_of(item.nodeid) not in SHARED_WORKER:
            raise pytest.UsageError(
                f"{_module_of(item.nodeid)} has a module-scoped fixture or reads the finished "
                "study: add it to SHARED_WORKER in tests/conftest.py"
            )


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
    from fpzo_ray.sim.ray.ray_session import remove_session_folder, session_folder

    folder = session_folder()
    yield ray
    if folder is None:
        ray.shutdown()
    else:  # the tests leave nothing in the temp folder either
        remove_session_folder(folder)


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory):
    """``studies.STUDY`` run through its command line into a SQLite store of its own, killed
    (the driver and the Ray it started, SIGKILL) once the search is decided and a repeat has
    reported, then resumed with ``--resume`` to its end: what the resume test, the study,
    report and MLflow UI tests read. One study serves them all (an uninterrupted second one
    for comparison cost six minutes of CI); the resume test checks every trial against the
    in-process run of its own configuration instead."""
    import signal
    import subprocess
    import sys
    import time

    import pandas as pd
    from mlflow.tracking import MlflowClient
    from studies import STUDY, command_env, resume, write_sweep

    from fpzo_ray.report.sources import EXPERIMENT_TAG

    folder = tmp_path_factory.mktemp("finished_study")
    results = folder / "results"
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        driver = subprocess.Popen(
            [sys.executable, "-m", "fpzo_ray.sweep", str(write_sweep(folder, STUDY))]
            + ["--results-dir", str(results)],
            env=command_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 400
        while not list(results.glob("ray_results/*/repeat/*/result.json")):
            assert driver.poll() is None, driver.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "the repeat phase never started"
            time.sleep(0.2)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        driver.stdout.close()
        experiment_dir = next(results.glob("ray_results/study_*"))
        when_killed = {p.name for p in experiment_dir.iterdir()}
        resume("fpzo_ray.sweep", experiment_dir)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    tracking_uri = f"sqlite:///{results / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("study_e2e").experiment_id])
    (parent,) = [run for run in runs if EXPERIMENT_TAG in run.data.tags]
    return SimpleNamespace(
        experiment_dir=experiment_dir,
        files_when_killed=when_killed,
        parent_run_id=parent.info.run_id,
        summary=pd.read_csv(experiment_dir / "summary.csv"),
        trials=pd.read_csv(experiment_dir / "trials.csv"),
        results=results,
        tracking_uri=tracking_uri,
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
