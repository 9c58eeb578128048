"""What the tests share: small sweeps (plain data), writing them to disk, and resuming an
interrupted sweep or run through its command line."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]

#: A federation small enough for seconds per trial.
BASE = {
    "data": {"num_clients": 12, "partition": "dirichlet", "alpha": 0.5},
    "pruning": {"iterations": 2, "clients_per_iteration": 3},
    "zo": {"num_perturbations": 4},
    "training": {"rounds": 10, "clients_per_round": 4, "eval_every": 2},
    "simulation": {"num_workers": 1, "worker_cpus": 0.3, "server_cpus": 0.1},
}

#: A study: two methods, a two-point search of the rate on validation, two fresh seeds.
STUDY = {
    "name": "study",
    "max_concurrent_trials": 2,
    "base": {
        **BASE,
        "training": {**BASE["training"], "rounds": 6},
        "tracking": {"experiment": "study_e2e"},
    },
    "grid": {
        "method": {
            "dense": {"pruning": {"method": "dense"}},
            "ntk_sap_50": {"pruning": {"method": "ntk_sap", "sparsity": 0.5}},
        }
    },
    "search": {"space": {"training.server_lr": {"grid": [0.003, 0.03]}}},
    "study": {"seeds": 2, "target_accuracy": 0.15},
}


def write_sweep(folder: Path, spec: dict) -> Path:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def command_env() -> dict[str, str]:
    """The environment of a command-line run under test (this checkout first on the path)."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}


def resume(module: str, folder: Path) -> subprocess.CompletedProcess:
    """``python -m <module> --resume <folder>`` to its end; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--resume", str(folder)],
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def free_port() -> int:
    """A local TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_cli(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def start_head(temp_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """A one-node Ray head beside whatever Ray already runs here (the session's): every port
    that has a fixed default is moved (as docs/howto/cluster.md says). Returns the
    ``ray start --block`` process and the dashboard's address, for ``ray job``."""
    ports = {
        flag: free_port()
        for flag in (
            "--port",
            "--dashboard-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--ray-client-server-port",
            "--metrics-export-port",
            "--runtime-env-agent-port",
        )
    }
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--num-cpus=2"]
        + [f"{flag}={port}" for flag, port in ports.items()]
        + [f"--temp-dir={temp_dir}", "--disable-usage-stats", "--include-dashboard=true"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
    deadline = time.time() + 120
    while True:
        assert head.poll() is None, "ray start --head failed"
        try:
            ray_cli("job", "list", "--address", dashboard, env=env, timeout=30)
            return head, dashboard
        except AssertionError:
            assert time.time() < deadline, "the Ray head did not answer in 120 s"
            time.sleep(2)


def stop_head(head: subprocess.Popen, temp_dir: Path) -> None:
    """Stop this head and only it (``ray stop`` would stop every Ray on the machine): its
    processes, found by the head's process and session ids."""
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGTERM)
        # ``ray start --block`` outwaited 30 s of this every time (31 s of a test's teardown):
        # what is still running after 5 s is killed with the session below
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=5)
    kill_session(head.pid)
    shutil.rmtree(temp_dir, ignore_errors=True)


def run_in_session(
    command: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a process session of its own, whatever it leaves running in that
    session (a Ray it started) killed afterwards, by the session's id."""
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        kill_session(process.pid)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def kill_session(pid: int) -> None:
    """SIGKILL ``pid``, every process below it, and every process in its session (Ray's job
    drivers and workers may have left the tree, never the session of ``start_new_session``)."""
    victims: list[psutil.Process] = []
    try:
        top = psutil.Process(pid)
        victims = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        pass
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getsid(proc.pid) == pid:
                victims.append(proc)
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(victims, timeout=10)


def reference_metrics(raw: dict) -> list[dict]:
    """Every round's metrics of the run ``raw`` configures, computed in this process without
    Ray: what any sweep of it must log, wherever and however often interrupted."""
    from fpzo_ray.config import config_from_dict
    from fpzo_ray.data import federated_data
    from fpzo_ray.sim.in_process import run_in_process

    cfg = config_from_dict(raw)
    return run_in_process(cfg, *federated_data(cfg))


def run_figures(metrics: dict) -> dict:
    """A round's metrics without the ones that depend on the machine or the placement
    (timings, which worker, retries): what equals the in-process reference exactly."""
    return {
        k: v
        for k, v in metrics.items()
        if not k.startswith("time_") and "worker" not in k and "retried" not in k and k != "setup"
    }


def reported_rounds(trial: Path) -> dict[int, dict]:
    """A trial folder's ``result.json`` by round: a round reported twice (before a kill and
    again after the resume) counts once, the later report."""
    reported = {}
    for line in (trial / "result.json").read_text().splitlines():
        result = json.loads(line)
        reported[result["round"]] = result
    return reported


def all_runs(client, experiment: str) -> list:
    """Every run of an MLflow experiment, deleted ones included."""
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], run_view_type=3, max_results=100)


def assert_logged_once(client, run_id: str, expected: list[dict]) -> None:
    """Every evaluated round of the uninterrupted reference is in the run exactly once, with
    the reference's value."""
    import pytest

    for key in ("test_accuracy", "cumulative_client_forward_flops"):
        history = client.get_metric_history(run_id, key)
        steps = [m.step for m in history]
        assert len(steps) == len(set(steps)), f"{key} logged twice at some round: {steps}"
        want = {m["round"]: m[key] for m in expected if key in m}
        assert {m.step: m.value for m in history} == pytest.approx(want), key


#: Credentials of the tests' S3 endpoint (moto's server takes any).
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "fpzo-test",
    "AWS_SECRET_ACCESS_KEY": "fpzo-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: The bucket the ``s3_endpoint`` fixture makes.
BUCKET = "fpzo-sweeps"


def bucket_keys(client, prefix: str) -> list[str]:
    """The objects under ``prefix`` in the test bucket (not pyarrow's folder markers)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return [key for key in keys if not key.endswith("/")]
