"""Runs across processes: two Ray nodes, and a sweep killed and resumed (subprocesses, since
each needs its own Ray instance; the rest of the suite shares one)."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from studies import (
    BUCKET,
    S3_CREDENTIALS,
    all_runs,
    assert_logged_once,
    bucket_keys,
    command_env,
    free_port,
    ray_cli,
    reference_metrics,
    reported_rounds,
    resume,
    run_figures,
    run_in_session,
    start_head,
    stop_head,
)

from fpzo_ray.artifacts import STATE_FILE
from fpzo_ray.config import config_from_dict, config_to_dict, flatten
from fpzo_ray.sim.checkpoint import load_server_state
from fpzo_ray.tracking import MLflowTracker

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # its own Ray, in subprocesses

RAW = {
    "data": {"num_clients": 24, "partition": "dirichlet", "alpha": 0.3},
    "pruning": {"sparsity": 0.6, "iterations": 2, "clients_per_iteration": 5},
    "zo": {"num_perturbations": 6},
    "training": {"rounds": 4, "clients_per_round": 7, "eval_every": 2},
    "simulation": {"num_workers": 2, "worker_cpus": 0.4, "server_cpus": 0.1, "placement": "spread"},
}
MULTINODE = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from fpzo_ray.config import config_from_dict
from fpzo_ray.sim.ray.federation import start_federation

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address)
cluster.wait_for_nodes()
cfg = config_from_dict(json.loads(sys.argv[1]))
federation = start_federation(cfg)
ray.get(federation.server.prune.remote())
metrics = [ray.get(federation.server.run_round.remote(r)) for r in range(cfg.training.rounds)]
nodes = ray.get([w.node_id.remote() for w in federation.pool.workers])
federation.shutdown()
out = {"metrics": metrics, "nodes": nodes, "cluster_nodes": len(ray.nodes())}
print("RESULT" + json.dumps(out))
ray.shutdown()
cluster.shutdown()
"""


def test_a_run_spread_over_two_nodes_equals_the_single_process_run():
    out = subprocess.run(
        [sys.executable, "-c", MULTINODE, json.dumps(RAW)],
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, out.stderr[-3000:]
    result = json.loads(line[0][len("RESULT") :])
    assert result["cluster_nodes"] == 2
    assert len(set(result["nodes"])) == 2  # one worker on each node
    assert [run_figures(m) for m in result["metrics"]] == [
        run_figures(m) for m in reference_metrics(RAW)
    ]


def _wait_for(condition, driver, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert driver.poll() is None, driver.stdout.read().decode()[-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def _resumable(rounds: int, experiment: str) -> dict:
    """RAW with one worker and a checkpoint every 10 rounds, logged to ``experiment``."""
    return {
        **RAW,
        "training": {"rounds": rounds, "clients_per_round": 7, "eval_every": 10},
        "simulation": {
            "num_workers": 1,
            "worker_cpus": 0.4,
            "server_cpus": 0.1,
            "checkpoint_every": 10,
        },
        "tracking": {"experiment": experiment},
    }


def _start_driver(module: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m module args`` in its own session (so that it can be killed with the Ray
    instance it starts), output merged."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env={**command_env(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _latest_checkpoints(results: Path) -> list[Path]:
    return sorted(results.glob("ray_results/*/grid/*/checkpoint_*"))


def _driver_logged_past(results: Path, step: int) -> bool:
    """Whether the driver has logged a round after ``step`` to its MLflow store. Tune registers
    a checkpoint reported at ``step`` before it lets the trial train on, so the driver then
    holds it: a checkpoint folder on disk alone may not be registered yet. Read with sqlite3,
    read-only: an MLflow client would create the tables while the driver does."""
    try:
        with closing(sqlite3.connect(f"file:{results / 'mlflow.db'}?mode=ro", uri=True)) as db:
            (newest,) = db.execute(
                "SELECT max(step) FROM metrics WHERE key = 'cumulative_client_forward_flops'"
            ).fetchone()
    except sqlite3.Error:
        return False  # not made yet, or its tables not yet
    return newest is not None and newest > step


def test_a_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    rounds = 40
    base = _resumable(rounds, "resume_test")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "resumable",
                "max_concurrent_trials": 1,
                "base": base,
                "grid": {"zo.num_perturbations": [6]},
            }
        )
    )
    results = tmp_path / "results"
    driver = _start_driver("fpzo_ray.sweep", str(sweep), "--results-dir", str(results))
    deadline = time.time() + 240
    while len(_latest_checkpoints(results)) < 2 and time.time() < deadline:
        assert driver.poll() is None, driver.stdout.read().decode()[-3000:]
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, mid-run
    driver.wait()
    assert _latest_checkpoints(results), "no checkpoint was written before the kill"
    experiment = next(results.glob("ray_results/resumable_*"))
    trial = next(p for p in (experiment / "grid").iterdir() if p.is_dir())
    state = load_server_state(_latest_checkpoints(results)[-1] / STATE_FILE)
    assert 0 < state["rounds_done"] < rounds  # it really was interrupted mid-run
    # Its runs were left RUNNING by a process that is gone: the next start marks them KILLED.
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    assert {r.info.status for r in all_runs(client, "resume_test")} == {"RUNNING"}
    MLflowTracker(f"sqlite:///{results / 'mlflow.db'}", "resume_test", results)
    assert {r.info.status for r in all_runs(client, "resume_test")} == {"KILLED"}

    # the results folder copied whole, and the copy resumed: in place, in its own store, the
    # original left as it was
    original = {p: p.stat().st_mtime_ns for p in results.rglob("*")}
    copied = tmp_path / "copy"
    shutil.copytree(results, copied)
    experiment, trial = (copied / p.relative_to(results) for p in (experiment, trial))
    resume("fpzo_ray.sweep", experiment)
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*")} == original
    assert {r.info.status for r in all_runs(client, "resume_test")} == {"KILLED"}
    client = MlflowClient(f"sqlite:///{copied / 'mlflow.db'}")
    # Every round reported; rounds between the last checkpoint and the kill were reported
    # twice (before the kill and after the resume): the later one counts.
    reported = reported_rounds(trial)
    assert sorted(reported) == list(range(1, rounds + 1))
    expected = reference_metrics(
        {**base, "simulation": {**base["simulation"], "checkpoint_every": 0}}
    )
    for metrics in expected:
        got = reported[metrics["round"]]
        assert {k: got.get(k) for k in run_figures(metrics)} == run_figures(metrics)
    runs = all_runs(client, "resume_test")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}  # parent, trial
    (trial_run,) = [r for r in runs if r.data.tags.get("phase") == "grid"]
    assert trial_run.data.tags["mlflow.parentRunId"] in {r.info.run_id for r in runs}
    assert_logged_once(client, trial_run.info.run_id, expected)


def test_ctrl_c_mid_sweep_is_not_success_and_resume_completes_it(tmp_path):
    """SIGINT to the driver mid-sweep: exit 130, every trial listed with its true state, runs
    KILLED, the --resume command printed. Then, with the checkpoint Tune restores corrupted,
    --resume falls back to an older one and ends with the uninterrupted result,
    every metric point logged once, and runs whose parameters are the resolved config."""
    base = _resumable(40, "sigint_test")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "sigint",
                "max_concurrent_trials": 1,
                "base": base,
                "grid": {"zo.num_perturbations": [6, 3]},
            }
        )
    )
    results = tmp_path / "results"
    driver = _start_driver("fpzo_ray.sweep", str(sweep), "--results-dir", str(results))
    try:
        # the second checkpoint (round 20) of the first trial, registered by the driver: well
        # into the trial, not at its end
        _wait_for(lambda: _driver_logged_past(results, 20), driver)
        driver.send_signal(signal.SIGINT)
        output = driver.communicate(timeout=180)[0].decode()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    experiment = next(results.glob("ray_results/sigint_*"))
    assert driver.returncode == 130, output[-3000:]
    assert "INTERRUPTED" in output and "not started" in output
    assert f"-m fpzo_ray.sweep --resume {experiment}" in output
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    assert {r.info.status for r in all_runs(client, "sigint_test")} == {"KILLED"}

    # Tune restores the newest checkpoint its driver had recorded (round 20 or later), which
    # may be older than the newest on disk: every one but the oldest (round 10) is corrupted,
    # so the one Tune names is.
    (interrupted,) = {p.parent for p in _latest_checkpoints(results)}
    oldest, *corrupted = sorted(interrupted.glob("checkpoint_*"))
    assert corrupted
    for folder in corrupted:
        (folder / STATE_FILE).write_bytes(b"not a checkpoint")
    resumed = resume("fpzo_ray.sweep", experiment)
    said = resumed.stdout + resumed.stderr
    assert any(
        f"warning: checkpoint {folder / STATE_FILE} cannot be read" in said for folder in corrupted
    ), said[-3000:]

    runs = all_runs(client, "sigint_test")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        if run.data.tags.get("phase") != "grid":
            continue
        K = int(run.data.params["zo.num_perturbations"])
        raw = {**base, "zo": {"num_perturbations": K}}
        resolved = {k: str(v) for k, v in flatten(config_to_dict(config_from_dict(raw))).items()}
        logged = {k: v for k, v in run.data.params.items() if not k.startswith("setup.")}
        assert logged == resolved
        reference = reference_metrics(
            {**raw, "simulation": {**base["simulation"], "checkpoint_every": 0}}
        )
        assert_logged_once(client, run.info.run_id, reference)


def test_a_killed_run_is_marked_killed_and_resumes_to_the_same_result(tmp_path):
    """``python -m fpzo_ray.run`` killed with SIGKILL: its MLflow run is KILLED at the next
    start, and ``--resume`` continues it in the same run to the uninterrupted result. The
    results folder is copied whole first and the copy resumed: it resumes in place, in its own
    store, and the original is left as it was."""
    raw = _resumable(40, "run_resume_test")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    driver = _start_driver("fpzo_ray.run", "--config", str(config), "--results-dir", str(results))
    try:
        _wait_for(lambda: any(results.glob("runs/*/checkpoint_000020")), driver)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    (folder,) = results.glob("runs/*")
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    MLflowTracker(f"sqlite:///{results / 'mlflow.db'}", "run_resume_test", results)
    (run,) = all_runs(client, "run_resume_test")
    assert run.info.status == "KILLED" and "ended without closing it" in run.data.tags["killed"]
    original = {p: p.stat().st_mtime_ns for p in results.rglob("*")}
    copied = tmp_path / "copy"
    shutil.copytree(results, copied)

    resumed = resume("fpzo_ray.run", copied / folder.relative_to(results))
    assert "Resuming after round" in resumed.stdout
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*")} == original
    (run,) = all_runs(client, "run_resume_test")
    assert run.info.status == "KILLED"  # the original's, untouched
    client = MlflowClient(f"sqlite:///{copied / 'mlflow.db'}")
    (run,) = all_runs(client, "run_resume_test")
    assert run.info.status == "FINISHED"
    assert {"clients.csv", "config.yaml", "model.pt"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }
    expected = reference_metrics(
        {**raw, "simulation": {**raw["simulation"], "checkpoint_every": 0}}
    )
    assert_logged_once(client, run.info.run_id, expected)


def test_a_run_in_a_bucket_resumes_on_a_machine_that_never_saw_its_folder(tmp_path, s3_endpoint):
    """``python -m fpzo_ray.run --storage s3://...`` killed (its machine lost): ``--resume``
    with the bucket's URI and a results folder of its own fetches the run folder, logs to
    the store the run logged to, and ends with the uninterrupted result; the bucket keeps the
    newest two checkpoints, the model, the client records and the figures."""
    client, endpoint = s3_endpoint
    raw = _resumable(40, "run_in_a_bucket")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    results = tmp_path / "first_machine"
    storage = f"s3://{BUCKET}/runs?endpoint_override={endpoint}&scheme=http"
    args = ("--config", str(config), "--results-dir", str(results), "--storage", storage)
    driver = _start_driver("fpzo_ray.run", *args, env=S3_CREDENTIALS)
    checkpointed = lambda: any("/checkpoint_000010/" in k for k in bucket_keys(client, "runs/"))  # noqa: E731
    try:
        _wait_for(checkpointed, driver)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    (name,) = {key.split("/")[1] for key in bucket_keys(client, "runs/")}
    shutil.rmtree(results / "runs")  # that machine's local copy is gone; its store is not

    location = f"s3://{BUCKET}/runs/{name}?endpoint_override={endpoint}&scheme=http"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpzo_ray.run",
            "--resume",
            location,
            "--results-dir",
            str(tmp_path / "second"),
        ],
        env={**command_env(), **S3_CREDENTIALS},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Resuming after round" in done.stdout
    store = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    (run,) = all_runs(store, "run_in_a_bucket")
    assert run.info.status == "FINISHED"
    expected = reference_metrics(
        {**raw, "simulation": {**raw["simulation"], "checkpoint_every": 0}}
    )
    assert_logged_once(store, run.info.run_id, expected)
    names = {key.split("/", 2)[2] for key in bucket_keys(client, f"runs/{name}/")}
    assert {"config.yaml", "model.pt", "clients.csv", "mlflow_run_id"} <= names, names
    assert any(n.startswith("figures/") for n in names)
    # the newest two, as in a local run folder (the 10th round's, seen before the kill, gone)
    assert sorted({n.split("/")[0] for n in names if n.startswith("checkpoint_")}) == [
        "checkpoint_000020",
        "checkpoint_000030",
    ]


# -- every way a sweep or run is stopped -----------------------------------------------------
def _crashes(output: str) -> list[str]:
    """The tracebacks in a job's log, less Ray's own teardown noise, which is no crash of
    ours: an actor torn down with its job may print an exception ignored in
    ``ActorHandle.__del__`` (Python's report of an error in a finaliser, the handle's owner
    being gone), and Ray's SIGTERM handler, raising ``SystemExit`` in whatever code runs when
    the signal lands, may land in a finaliser (``WeakSet._remove``), whose exception Python
    then reports as ignored."""
    lines = output.splitlines()
    crashes = []
    for index, line in enumerate(lines):
        if "Traceback (most recent call last)" not in line:
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if "ray/actor.py" in following and "in __del__" in following:
            continue
        ignored = index > 0 and "Exception ignored in" in lines[index - 1]
        if ignored and any("in sigterm_handler" in later for later in lines[index : index + 12]):
            continue
        crashes.append(following)
    return crashes


def _check_interrupted_sweep(output: str, experiment: Path, client, name: str) -> None:
    """Every trial in the printed table with its true state, which its MLflow run agrees
    with (OK: FINISHED, INTERRUPTED: KILLED, NOT_STARTED: no run); the parent KILLED; the
    resume command printed."""
    table = output[output.index(f"Sweep {name!r} INTERRUPTED") :].splitlines()
    assert table[1].split()[:6] == ["K", "phase", "sample", "seed", "status", "rounds"]
    states = {int(row.split()[0]): row.split()[4] for row in table[2:4]}
    assert set(states.values()) - {"OK"}, "nothing was interrupted"
    assert f"-m fpzo_ray.sweep --resume {experiment}" in output
    runs = all_runs(client, name)
    trial_runs = {
        int(r.data.params["zo.num_perturbations"]): r.info.status
        for r in runs
        if r.data.tags.get("phase") == "grid"
    }
    for K, state in states.items():
        assert trial_runs.get(K) == {"OK": "FINISHED", "INTERRUPTED": "KILLED"}.get(state)
    (parent,) = [r for r in runs if r.data.tags.get("phase") != "grid"]
    assert parent.info.status == "KILLED"


def _two_trial_sweep(tmp_path: Path, name: str) -> tuple[Path, dict]:
    base = _resumable(40, name)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "max_concurrent_trials": 1,
                "base": base,
                "grid": {"zo.num_perturbations": [6, 3]},
            }
        )
    )
    return sweep, base


def _assert_resumed_to_the_uninterrupted_result(client, name: str, base: dict) -> None:
    runs = all_runs(client, name)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        if run.data.tags.get("phase") == "grid":
            K = int(run.data.params["zo.num_perturbations"])
            raw = {**base, "zo": {"num_perturbations": K}}
            sim = {**base["simulation"], "checkpoint_every": 0}
            assert_logged_once(
                client, run.info.run_id, reference_metrics({**raw, "simulation": sim})
            )


def test_ray_job_stop_on_a_submitted_sweep_ends_it_truthfully_and_resume_finishes_it(tmp_path):
    """The design card's entry point, ``ray job submit -- python -m fpzo_ray.sweep``, stopped
    with ``ray job stop``: the table of trial states, runs KILLED, the resume command; then
    ``--resume`` ends with the uninterrupted result, every metric point logged once."""
    import secrets
    import tempfile

    sweep, base = _two_trial_sweep(tmp_path, "job_stop")
    results = tmp_path / "results"
    env = {
        **command_env(),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "RAY_JOB_STOP_WAIT_TIME_S": "30",
    }
    env.pop("RAY_ADDRESS", None)
    temp_dir = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))  # Ray's socket paths are short
    head, dashboard = start_head(temp_dir, env)
    try:
        entrypoint = [sys.executable, "-m", "fpzo_ray.sweep", str(sweep)]
        job = ["--address", dashboard, "--submission-id", "sweep"]
        ray_cli(
            "job",
            "submit",
            *job,
            "--no-wait",
            "--",
            *entrypoint,
            "--results-dir",
            str(results),
            env=env,
        )
        deadline = time.time() + 300
        while not _latest_checkpoints(results):
            assert time.time() < deadline, ray_cli("job", "logs", *job[:2], "sweep", env=env)
            time.sleep(0.5)
        ray_cli("job", "stop", *job[:2], "sweep", env=env, timeout=180)
        status = ray_cli("job", "status", *job[:2], "sweep", env=env)
        output = ray_cli("job", "logs", *job[:2], "sweep", env=env)
    finally:
        stop_head(head, temp_dir)
    assert "was stopped" in status
    experiment = next(results.glob("ray_results/job_stop_*"))
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    _check_interrupted_sweep(output, experiment, client, "job_stop")
    assert not _crashes(output), output[-3000:]

    resume("fpzo_ray.sweep", experiment)
    _assert_resumed_to_the_uninterrupted_result(client, "job_stop", base)


def _stoppable(tmp_path: Path, module: str, name: str) -> tuple[list[str], Callable[[], bool]]:
    """The arguments of a sweep or run worth stopping, and whether it has made progress
    (a checkpoint) to lose."""
    results = tmp_path / "results"
    if module == "fpzo_ray.sweep":
        sweep, _ = _two_trial_sweep(tmp_path, name)
        args = [str(sweep)]
        progress = lambda: any(p.name >= "checkpoint_000001" for p in _latest_checkpoints(results))  # noqa: E731
    else:
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump(_resumable(60, name)))
        args = ["--config", str(config)]
        progress = lambda: any(results.glob("runs/*/checkpoint_000010"))  # noqa: E731
    return [*args, "--results-dir", str(results)], progress


def _check_stopped(output: str, returncode: int, results: Path, module: str, name: str) -> None:
    """Stopped as by Ctrl-C: exit 130, the resume command, runs KILLED (a sweep: its table)."""
    assert returncode == 130, output[-3000:]
    assert "Resume with:" in output and "--resume" in output
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    if module == "fpzo_ray.sweep":
        _check_interrupted_sweep(output, next(results.glob("ray_results/*")), client, name)
    else:
        (run,) = all_runs(client, name)
        assert run.info.status == "KILLED"
        assert run.data.tags["killed"].startswith("interrupted after round")


@pytest.mark.parametrize(
    "module, stop_with",
    [("fpzo_ray.sweep", signal.SIGTERM), ("fpzo_ray.run", signal.SIGINT)],
    ids=["sweep-sigterm", "run-sigint"],
)
def test_started_in_the_background_by_a_script_it_still_stops(tmp_path, module, stop_with):
    """``python -m ... &`` in a script inherits SIGINT as ignored; SIGINT and SIGTERM still
    stop it the way Ctrl-C does: exit 130, runs KILLED, the resume command printed."""
    name = f"background_{module.rsplit('.', 1)[1]}"
    args, progress = _stoppable(tmp_path, module, name)
    probe = f"{sys.executable} -c 'import signal as s; print(s.getsignal(s.SIGINT) == s.SIG_IGN)'"
    inherited = subprocess.run(["bash", "-c", f"{probe} & wait"], capture_output=True, text=True)
    assert inherited.stdout.strip() == "True"  # what the command below inherits
    command = " ".join([sys.executable, "-m", module, *args])
    script = subprocess.Popen(
        ["bash", "-c", f"{command} & echo $!; wait $!"],  # non-interactive: SIGINT ignored
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        pid = int(script.stdout.readline())
        _wait_for(progress, script)
        os.kill(pid, stop_with)
        output = script.communicate(timeout=180)[0].decode()
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
    _check_stopped(output, script.returncode, tmp_path / "results", module, name)


@pytest.mark.parametrize("module", ["fpzo_ray.sweep", "fpzo_ray.run"])
def test_a_stop_sent_to_the_process_group_ends_like_a_single_sigterm(tmp_path, module):
    """What ``timeout``, ``kill -- -PGID``, Slurm and systemd send: SIGTERM to every process
    of the command's group. Ray's own processes are in sessions of their own, so it reaches
    the command alone, which stops as on one SIGTERM (and then stops its Ray)."""
    name = f"group_{module.rsplit('.', 1)[1]}"
    args, progress = _stoppable(tmp_path, module, name)
    command = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the leader of a process group, as under a batch system
    )
    try:
        _wait_for(progress, command)
        os.killpg(command.pid, signal.SIGTERM)
        output = command.communicate(timeout=180)[0].decode()
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
    _check_stopped(output, command.returncode, tmp_path / "results", module, name)
    assert not _crashes(output), output[-3000:]


def test_a_local_run_starts_its_own_ray_whatever_cluster_ray_last_recorded(tmp_path):
    """Ray records the last ``ray start --head`` of the machine; a head that died without
    ``ray stop`` leaves that record behind. A local run starts its own Ray regardless, and
    says so; a cluster named in RAY_ADDRESS that does not answer is one line, at once."""
    import tempfile

    dead = f"127.0.0.1:{free_port()}"
    temp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # Ray's socket paths are short
    (temp / "ray").mkdir()
    (temp / "ray" / "ray_current_cluster").write_text(dead)
    raw = {**_resumable(2, "stale_record"), "simulation": {"num_workers": 1}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**command_env(), "TMPDIR": str(temp)}
    for name in ("RAY_ADDRESS", "RAY_TMPDIR"):  # Ray would look there first
        env.pop(name, None)
    command = [sys.executable, "-m", "fpzo_ray.run", "--config", str(config)]
    command += ["--results-dir", str(tmp_path / "results")]
    try:
        done = run_in_session(command, env, timeout=300)
        # within the timeout, not after Ray's minute of retries
        named = run_in_session([*command, "--address", dead], env, timeout=60)
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # the Ray session folder it made
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Ray: started a local instance" in done.stdout
    assert named.returncode == 2, named.stderr[-3000:]
    (line,) = named.stderr.strip().splitlines()
    assert dead in line and "no Ray cluster answers" in line and "--address" in line
    assert len(list((tmp_path / "results" / "runs").iterdir())) == 1  # no folder for it
