"""Sweeps on a Ray cluster whose nodes share no disk: a head (drivers only, no CPUs for
trials) and two worker nodes in private mount namespaces (``cluster_nodes``).

- a bare local path of the head is refused before any trial, naming the option and the node;
- a sweep submitted as a Ray job with a shared path as storage loses a worker node mid-sweep:
  its trials restart from their last checkpoint on the node left and end with the in-process
  runs' results, every metric point logged once, every artifact in MLflow;
- the head lost mid-sweep, the sweep on an S3 endpoint (moto's server, the real pyarrow
  client): ``--resume`` on a new head, from the bucket, finishes it with the uninterrupted
  results, and the bucket holds every file of the sweep.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cluster_nodes import LocalCluster, namespaces_unavailable
from mlflow.tracking import MlflowClient
from studies import (
    BUCKET,
    S3_CREDENTIALS,
    all_runs,
    assert_logged_once,
    bucket_keys,
    command_env,
    ray_cli,
    reference_metrics,
)

from fpzo_ray.tracking import RUN_ARTIFACTS

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # clusters of its own, in subprocesses

_WHY_NOT = namespaces_unavailable()
if _WHY_NOT:
    pytestmark.append(pytest.mark.skip(reason=f"no multi-node fixture: {_WHY_NOT}"))


def _base(rounds: int, experiment: str) -> dict:
    """A federation small enough for seconds per trial, a checkpoint every 4 rounds, its
    server and worker spread over the nodes (so that losing either worker node hits it)."""
    return {
        "data": {"num_clients": 24, "partition": "dirichlet", "alpha": 0.3},
        "pruning": {"sparsity": 0.6, "iterations": 2, "clients_per_iteration": 5},
        "zo": {"num_perturbations": 6},
        "training": {"rounds": rounds, "clients_per_round": 7, "eval_every": 4},
        "simulation": {
            "num_workers": 1,
            "worker_cpus": 0.4,
            "server_cpus": 0.1,
            "checkpoint_every": 4,
            "placement": "spread",
        },
        "tracking": {"experiment": experiment},
    }


def _sweep(folder: Path, name: str, rounds: int, **settings) -> tuple[Path, dict]:
    base = _base(rounds, name)
    spec = {
        "name": name,
        "max_concurrent_trials": 2,
        "base": base,
        "grid": {"zo.num_perturbations": [6, 3]},
        **settings,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path, base


def _check_runs(client: MlflowClient, name: str, base: dict) -> None:
    """Every trial's run FINISHED with the in-process run's metrics, each round logged once,
    and its artifacts and figures; the parent FINISHED with the tables and the report."""
    runs = all_runs(client, name)
    assert {r.info.status for r in runs} == {"FINISHED"}, [r.info.status for r in runs]
    trials = [r for r in runs if r.data.tags.get("phase") == "grid"]
    assert len(trials) == 2
    for run in trials:
        K = int(run.data.params["zo.num_perturbations"])
        raw = {**base, "zo": {"num_perturbations": K}}
        raw["simulation"] = {**base["simulation"], "checkpoint_every": 0}
        assert_logged_once(client, run.info.run_id, reference_metrics(raw))
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert set(RUN_ARTIFACTS) <= names, names
        assert client.list_artifacts(run.info.run_id, "figures"), "no figures logged"
    (parent,) = [r for r in runs if r.data.tags.get("phase") != "grid"]
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "summary.csv"} <= parent_files, parent_files


def _driver(cluster: LocalCluster, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m fpzo_ray.sweep ARGS`` joining ``cluster``, as a driver on its head."""
    return subprocess.Popen(
        [sys.executable, "-m", "fpzo_ray.sweep", *args, "--address", cluster.gcs],
        env={**cluster.env, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(driver: subprocess.Popen, timeout: float = 420) -> str:
    output, _ = driver.communicate(timeout=timeout)
    assert driver.returncode == 0, output[-4000:]
    return output


def _checkpoints_in(client, prefix: str) -> int:
    return sum("/checkpoint_" in key for key in bucket_keys(client, prefix))


def _wait_for(condition, driver: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert driver.poll() is None, driver.stdout.read()[-4000:] if driver.stdout else ""
        assert time.time() < deadline, "timed out"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head with no CPUs for trials and two worker nodes that see neither the head's temp
    folder nor its ``head_local`` folder; ``shared`` is what every node sees (an NFS mount)."""
    root = tmp_path_factory.mktemp("cluster")
    (root / "head_local").mkdir()
    (root / "shared").mkdir()
    nodes = LocalCluster(root, hidden=[root / "head_local"], env=dict(S3_CREDENTIALS))
    try:
        nodes.start_head(num_cpus=0)
        nodes.add_worker()
        nodes.add_worker()
        yield nodes
    finally:
        nodes.shutdown()


def test_a_head_local_path_is_refused_before_any_trial(cluster, tmp_path):
    sweep, _ = _sweep(tmp_path, "refused", rounds=4)
    results = cluster.root / "head_local" / "refused"
    driver = _driver(cluster, str(sweep), "--results-dir", str(results))
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 2, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("config error")]
    assert len(errors) == 1, output[-3000:]
    assert errors[0].startswith(
        f"config error: --storage (default: --results-dir): {results / 'ray_results'} "
        "is not visible from node "
    ), errors[0]
    assert "(a file the driver wrote there is not there (No such file or directory))" in errors[0]
    assert errors[0].endswith(
        "or a bucket every node reaches (s3://bucket/prefix, gs://bucket/prefix)"
    )
    assert "Phase" not in output  # no trial was started
    assert not any((results / "ray_results").glob("refused_*"))


def test_a_ray_job_on_shared_storage_loses_a_worker_node_not_a_result(cluster, tmp_path):
    """``ray job submit -- python -m fpzo_ray.sweep`` with ``storage:`` in the sweep file
    naming the shared folder. Every trial runs on the worker nodes (the head has no CPUs for
    them), each with a part on both (placement spread). The worker node of a trial's own
    process is lost mid-sweep (its raylet killed): the trials restart from their last
    checkpoint on the node left, the job succeeds, the trials wrote their files to the shared
    folder, and the driver logged them all with the uninterrupted results."""
    store = cluster.root / "shared" / "jobs"
    # 40 rounds: once two checkpoints exist (round 8 at most), a trial has 32 rounds to go,
    # more than losing the node takes (at 16, a CI run once saw both trials end first)
    sweep, base = _sweep(tmp_path, "shared_job", rounds=40, storage=str(store))
    results = cluster.root / "head_local" / "job_results"
    job = ["--address", cluster.dashboard, "--submission-id", "shared_job"]
    command = [sys.executable, "-m", "fpzo_ray.sweep", str(sweep), "--results-dir", str(results)]
    ray_cli("job", "submit", "--no-wait", *job, "--", *command, env=cluster.env)
    logs = ["job", "logs", *job[:2], "shared_job"]
    try:
        deadline = time.time() + 300
        while len(list(store.glob("*/grid/*/checkpoint_*"))) < 2:
            assert time.time() < deadline, ray_cli(*logs, env=cluster.env)
            time.sleep(0.3)
        trial_node = cluster.worker_running("ray::ImplicitFunc")  # a trial's own process
        assert trial_node is not None, ray_cli(*logs, env=cluster.env)
        cluster.kill(trial_node)
        ray_cli(*logs, "--follow", env=cluster.env, timeout=420)  # until the job ends
    finally:
        cluster.workers = [w for w in cluster.workers if w.alive()]
        cluster.add_worker()  # the fixture's two workers, for whatever runs next
    output = ray_cli("job", "logs", *job[:2], "shared_job", env=cluster.env)
    assert "succeeded" in ray_cli("job", "status", *job[:2], "shared_job", env=cluster.env)
    (experiment,) = store.glob("shared_job_*")
    table = pd.read_csv(experiment / "trials.csv")
    assert list(table["status"]) == ["OK", "OK"], output[-3000:]
    for trial in experiment.glob("grid/*/params.json"):
        files = {p.name for p in trial.parent.iterdir()}
        assert set(RUN_ARTIFACTS) | {"result.json"} <= files, files
        assert any(name.startswith("checkpoint_") for name in files)
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    _check_runs(client, "shared_job", base)
    restarted = [r for r in all_runs(client, "shared_job") if r.data.tags.get("restarts")]
    assert restarted, "no trial was restarted, though the node of one was lost"
    assert {r.data.tags["last_restart"] for r in restarted} == {"lost node, process or actor"}


def test_a_lost_head_is_resumed_on_a_new_head_from_s3(cluster, s3_endpoint, tmp_path):
    """The head (and with it the driver) killed mid-sweep; a new head whose machine never
    saw the old one's disk resumes the sweep from the bucket and the shared MLflow store,
    and the result is the uninterrupted one, no run left RUNNING, no point logged twice."""
    client, endpoint = s3_endpoint
    storage = f"s3://{BUCKET}/head_loss?endpoint_override={endpoint}&scheme=http"
    sweep, base = _sweep(tmp_path, "head_loss", rounds=16)
    tracking = {"MLFLOW_TRACKING_URI": f"sqlite:///{cluster.root / 'shared' / 'mlflow.db'}"}
    first_results = cluster.root / "head_local" / "head_loss_results"
    driver = _driver(
        cluster,
        str(sweep),
        "--results-dir",
        str(first_results),
        "--storage",
        storage,
        env=tracking,
    )
    try:
        _wait_for(lambda: _checkpoints_in(client, "head_loss/") >= 2, driver)
    finally:
        driver.kill()  # the driver ran on the head: it goes with it
        driver.wait(timeout=30)
        cluster.shutdown()  # the head, and the workers that cannot live without it
    (experiment,) = {k.split("/")[1] for k in bucket_keys(client, "head_loss/")}

    # the new head: a machine that never saw the old one's disk, whose driver starts a Ray of
    # its own (a one-node cluster) and reaches the bucket and the shared store
    env = {**command_env(), **S3_CREDENTIALS, **tracking}
    location = f"s3://{BUCKET}/head_loss/{experiment}?endpoint_override={endpoint}&scheme=http"
    resumed = subprocess.run(
        [sys.executable, "-m", "fpzo_ray.sweep", "--resume", location]
        + ["--results-dir", str(tmp_path / "new_head")],
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-4000:]
    assert "ERROR" not in output and "INTERRUPTED" not in output, output[-3000:]
    _check_runs(MlflowClient(tracking["MLFLOW_TRACKING_URI"]), "head_loss", base)
    # everything persisted in the bucket: the driver's files, every trial's files
    keys = bucket_keys(client, f"head_loss/{experiment}/")
    names = {key.rsplit("/", 1)[-1] for key in keys}
    assert {"trials.csv", "fpzo_sweep.yaml", "summary.csv"} <= names, names
    grid = [key.split("/") for key in keys if key.split("/")[2] == "grid"]
    trials = {parts[3] for parts in grid if len(parts) > 4}
    assert len(trials) == 2, keys
    for trial in trials:
        files = {parts[-1] for parts in grid if len(parts) > 4 and parts[3] == trial}
        assert set(RUN_ARTIFACTS) | {"server_state.pt", "result.json"} <= files, (trial, files)
    # and its report is made from there by anyone who reaches the bucket
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpzo_ray.report",
            location,
            "--no-log",
            "--out",
            str(tmp_path / "rep"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "2 OK" in summary, summary
