"""A run that trains nothing fails, named, never ends as if it had trained: every sampled
client failing round after round, weights that are no longer finite, a pruning phase in
which no client produced a usable score. In process (the server's own rules), and once
through the command line (exit code, the lines printed, the MLflow run FAILED)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fpzo_ray.config import config_from_dict, merge
from fpzo_ray.data import federated_data
from fpzo_ray.failure import RunFailed
from fpzo_ray.sim.in_process import run_in_process

T = "extension_targets"
ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "data": {"target": f"{T}:blobs", "num_clients": 6},
    "model": {"target": f"{T}:mlp"},
    "pruning": {"method": "magnitude", "sparsity": 0.5, "clients_per_iteration": 3},
    "zo": {"num_perturbations": 2},
    "training": {"rounds": 8, "clients_per_round": 3, "eval_every": 4},
}


def _run(**sections):
    cfg = config_from_dict(merge(SMALL, sections))
    return run_in_process(cfg, *federated_data(cfg))


def _failure(**sections) -> RunFailed:
    with pytest.raises(RunFailed) as caught:
        _run(**sections)
    return caught.value


@pytest.mark.parametrize(
    "method, why",
    [("nan_scores", "non-finite"), ("list_scores", "returned list, must be a tensor")],
)
def test_a_pruning_phase_without_a_usable_score_fails_the_run(method, why):
    failure = _failure(pruning={"method": f"{T}:{method}", "iterations": 2})
    assert failure.kind == "pruning_failed"
    # a plain function is the server's saliency
    assert f"{T}:{method}, iteration 1: the saliency computed on the server" in failure.message
    assert why in failure.message


def test_a_federated_pruning_phase_in_which_no_client_gives_a_usable_score_fails_the_run():
    failure = _failure(pruning={"method": f"{T}:NAN_ON_CLIENTS", "iterations": 2})
    assert failure.kind == "pruning_failed"
    assert f"{T}:NAN_ON_CLIENTS, iteration 1: none of the 3 sampled clients" in failure.message
    assert "non-finite" in failure.message


def test_rounds_in_which_every_client_fails_end_the_run_after_the_allowed_few():
    zo = {"direction": f"{T}:fill_nan", "generator": "torch_cpu", "num_perturbations": 2}
    failure = _failure(zo=zo)  # the default allows 3 such rounds in a row
    assert failure.kind == "no_usable_clients"
    assert failure.message.startswith("rounds 1-4: no sampled client's reply")
    assert "3 of 3 sampled clients not aggregated: 3 rejected_non_finite" in failure.message
    at_once = _failure(zo=zo, training={"max_empty_rounds": 0})
    assert at_once.message.startswith("round 1: ")


def test_weights_that_are_no_longer_finite_end_the_run():
    failure = _failure(training={"server_optimizer": f"{T}:exploding"})
    assert failure.kind == "non_finite_weights"
    assert failure.message.startswith("round 1: the server step made the global weights")


def test_a_healthy_run_reports_no_client_failures():
    reports = _run()
    assert len(reports) == 8 and not any("client_failures" in r for r in reports)


@pytest.mark.slow
@pytest.mark.ray
def test_a_run_whose_clients_hang_fails_named_after_its_timeouts(tmp_path):
    """``python -m fpzo_ray.run`` whose clients' work hangs: each round, the workers' share
    passes ``simulation.round_timeout_s``, their clients fail as timed out (a warning line)
    and the workers are replaced; past ``training.max_empty_rounds`` the run fails: one error
    line naming the kind, exit 1, the MLflow run FAILED, no resume command (a resumed run
    would fail the same way)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT}", RAY_USAGE_STATS_ENABLED="0")
    sets = [
        f"data.target={T}:blobs",
        "data.num_clients=6",
        f"model.target={T}:mlp",
        "pruning.method=magnitude",
        "pruning.clients_per_iteration=3",
        f"zo.direction={T}:fill_hangs",
        "zo.generator=torch_cpu",
        "training.clients_per_round=3",
        "training.rounds=20",
        "training.max_empty_rounds=1",
        "simulation.num_workers=1",
        "simulation.round_timeout_s=3",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "fpzo_ray.run", "--results-dir", str(tmp_path)]
        + [arg for s in sets for arg in ("--set", s)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    warning = "warning: round 1: 3 of 3 sampled clients not aggregated: 3 timeout (no reply"
    assert any(line.startswith(warning) for line in lines), out.stderr[-3000:]
    (error,) = [line for line in lines if line.startswith("error: ")]
    assert error.startswith("error: the run failed: no_usable_clients: rounds 1-2: "), error
    assert "resume" not in out.stderr and "Traceback" not in out.stderr

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("fpzo_ray").experiment_id])
    assert run.info.status == "FAILED"
