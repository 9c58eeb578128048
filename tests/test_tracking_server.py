"""A team's tracking server: ``clusters/mlflow-server.sh`` starts a real PostgreSQL (Debian's
``postgresql`` package, a cluster of its own in a temporary folder, on a free port) and a real
``mlflow server`` on it that serves the artifacts; a sweep logs there through
``MLFLOW_TRACKING_URI=http://...``, and everything is read back over HTTP."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from studies import ROOT, all_runs, assert_logged_once, command_env, free_port, reference_metrics

from fpzo_ray.models.pruned import load_pruned
from fpzo_ray.tracking import RUN_ARTIFACTS

pytestmark = pytest.mark.slow  # a server, and a sweep on the session's Ray

SCRIPT = ROOT / "clusters" / "mlflow-server.sh"


def _why_not() -> str | None:
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "PostgreSQL is not installed (Debian's postgresql package; .ci/run installs it)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "no runuser to start PostgreSQL as its own user"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "no PostgreSQL driver (psycopg2-binary: the server extra)"
    return None


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """The recipe's server on free ports, its database and artifacts in a temporary folder;
    stopped with SIGTERM, after which none of its processes may be left."""
    why = _why_not()
    if why:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("tracking")
    port = free_port()
    log = folder / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [
                "bash",
                str(SCRIPT),
                "--data",
                str(folder / "pg"),
                "--pg-port",
                str(free_port()),
                "--port",
                str(port),
                "--artifacts",
                str(folder / "artifacts"),
            ],
            env={**command_env(), "PYTHON": sys.executable},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while f"export MLFLOW_TRACKING_URI={url}" not in log.read_text():
        assert server.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "the tracking server did not come up in 180 s"
        time.sleep(0.5)
    descendants = psutil.Process(server.pid).children(recursive=True)
    yield url
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    left = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"left running: {[p.cmdline() for p in left]}"


def test_a_sweep_logs_to_the_postgresql_tracking_server(
    ray_session, tracking_server, tmp_path, monkeypatch
):
    from fpzo_ray.sweep.phases import run_sweep
    from fpzo_ray.sweep.spec import load_sweep

    name = "team_server"
    base = {
        "data": {"num_clients": 12, "partition": "dirichlet", "alpha": 0.5},
        "pruning": {"iterations": 2, "clients_per_iteration": 3, "sparsity": 0.5},
        "zo": {"num_perturbations": 4},
        "training": {"rounds": 6, "clients_per_round": 4, "eval_every": 2},
        "simulation": {"num_workers": 1, "worker_cpus": 0.3, "server_cpus": 0.1},
        "tracking": {"experiment": name},
    }
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump({"name": name, "base": base, "grid": {"pruning.method": ["dense", "snip"]}})
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    outcome = run_sweep(load_sweep(sweep), tmp_path / "r")
    assert list(outcome.trials["status"]) == ["OK", "OK"]
    assert not (tmp_path / "r" / "mlflow.db").exists()  # nothing went to a local store

    client = MlflowClient(tracking_server)  # everything below comes back over HTTP
    runs = all_runs(client, name)
    assert {r.info.status for r in runs} == {"FINISHED"}
    (parent,) = [r for r in runs if r.data.tags.get("phase") != "grid"]
    assert parent.data.params["sweep.trials"] == "2"
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "summary.csv", "sweep.yaml", "report.html", "figures"} <= parent_files
    report = client.download_artifacts(parent.info.run_id, "report.html", str(tmp_path / "dl"))
    assert "<html" in Path(report).read_text()[:1000].lower()
    assert client.list_artifacts(parent.info.run_id, "figures")
    trials = [r for r in runs if r.data.tags.get("phase") == "grid"]
    assert len(trials) == 2
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        method = run.data.params["pruning.method"]
        raw = {**base, "pruning": {**base["pruning"], "method": method}}
        assert_logged_once(client, run.info.run_id, reference_metrics(raw))
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert set(RUN_ARTIFACTS) <= names, names
        assert client.list_artifacts(run.info.run_id, "figures")
        model = client.download_artifacts(run.info.run_id, "model.pt", str(tmp_path / method))
        pruned = load_pruned(model)
        assert sum(p.numel() for p in pruned.parameters()) > 0
        assert all(torch.isfinite(p).all() for p in pruned.parameters())
