"""Runs across processes: two Ray nodes, and a sweep killed and resumed (subprocesses, since
each needs its own Ray instance; the rest of the suite shares one)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from fpzo_ray.config import config_from_dict
from fpzo_ray.data import federated_data
from fpzo_ray.sim.server import run_in_process

ROOT = Path(__file__).resolve().parents[1]
RAW = {"data": {"num_clients": 24, "partition": "dirichlet", "alpha": 0.3},
       "pruning": {"sparsity": 0.6, "iterations": 2, "clients_per_iteration": 5},
       "zo": {"num_perturbations": 6},
       "training": {"rounds": 4, "clients_per_round": 7, "eval_every": 2},
       "simulation": {"num_workers": 2, "worker_cpus": 0.4, "server_cpus": 0.1,
                      "placement": "spread"}}
MULTINODE = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from fpzo_ray.config import config_from_dict
from fpzo_ray.sim.federation import start_federation

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
print("RESULT" + json.dumps({"metrics": metrics, "nodes": nodes, "cluster_nodes": len(ray.nodes())}))
ray.shutdown()
cluster.shutdown()
"""


def _env():
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}


def _figures(metrics):
    return {k: v for k, v in metrics.items()
            if not k.startswith("time_") and "worker" not in k and "retried" not in k
            and k != "setup"}


def _reference(raw):
    cfg = config_from_dict(raw)
    return run_in_process(cfg, *federated_data(cfg))


def test_a_run_spread_over_two_nodes_equals_the_single_process_run():
    out = subprocess.run([sys.executable, "-c", MULTINODE, json.dumps(RAW)], env=_env(),
                         capture_output=True, text=True, timeout=300)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, out.stderr[-3000:]
    result = json.loads(line[0][len("RESULT"):])
    assert result["cluster_nodes"] == 2
    assert len(set(result["nodes"])) == 2  # one worker on each node
    assert [_figures(m) for m in result["metrics"]] == [_figures(m) for m in _reference(RAW)]


def _latest_checkpoints(results: Path) -> list[Path]:
    return sorted(results.glob("ray_results/*/grid/*/checkpoint_*"))


def test_a_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    base = {**RAW, "training": {"rounds": 120, "clients_per_round": 7, "eval_every": 10},
            "simulation": {"num_workers": 1, "worker_cpus": 0.4, "server_cpus": 0.1,
                           "checkpoint_every": 10},
            "tracking": {"experiment": "resume_test"}}
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "resumable", "max_concurrent_trials": 1,
                                     "base": base, "grid": {"zo.num_perturbations": [6]}}))
    results = tmp_path / "results"
    command = [sys.executable, "-m", "fpzo_ray.sweep", str(sweep), "--results-dir", str(results)]
    driver = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while len(_latest_checkpoints(results)) < 2 and time.time() < deadline:
        assert driver.poll() is None, driver.stdout.read().decode()[-3000:]
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, mid-run
    driver.wait()
    assert _latest_checkpoints(results), "no checkpoint was written before the kill"
    experiment = next(results.glob("ray_results/resumable_*"))
    trial = next(p for p in (experiment / "grid").iterdir() if p.is_dir())
    import torch

    state = torch.load(_latest_checkpoints(results)[-1] / "server_state.pt", weights_only=False)
    assert 0 < state["rounds_done"] < 120  # it really was interrupted mid-run

    resumed = subprocess.run([sys.executable, "-m", "fpzo_ray.sweep", "--resume",
                              str(experiment)], env=_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # Every reported result, in order; rounds between the last checkpoint and the kill were
    # reported twice (before the kill and after the resume): the later one counts.
    reported = {}
    for line in (trial / "result.json").read_text().splitlines():
        result = json.loads(line)
        reported[result["round"]] = result
    assert sorted(reported) == list(range(1, 121))
    expected = _reference({**base, "simulation": {**base["simulation"], "checkpoint_every": 0}})
    for metrics in expected:
        got = reported[metrics["round"]]
        assert {k: got.get(k) for k in _figures(metrics)} == _figures(metrics)
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("resume_test").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}  # parent, trial
    (trial_run,) = [r for r in runs if r.data.tags.get("phase") == "grid"]
    assert trial_run.data.tags["mlflow.parentRunId"] in {r.info.run_id for r in runs}
