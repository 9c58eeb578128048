"""End to end on Ray: a tiny Tune sweep lands in a real MLflow store."""

from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from fpzo_ray.config import config_from_dict, config_to_dict, flatten
from fpzo_ray.sweep.phases import run_sweep
from fpzo_ray.sweep.spec import load_sweep

TINY = {
    "name": "tiny",
    "max_concurrent_trials": 2,
    "base": {
        "data": {"num_clients": 12, "partition": "dirichlet"},
        "pruning": {"iterations": 2, "clients_per_iteration": 3},
        "training": {"rounds": 3, "clients_per_round": 4, "eval_every": 1},
        "simulation": {"num_workers": 2, "worker_cpus": 0.2, "server_cpus": 0.1},
        "tracking": {"experiment": "tiny_e2e"},
        # a metric by import path (the package's macro-F1: Ray's workers import it too)
        "task": {"metrics": ["accuracy", "fpzo_ray.task.metrics:macro_f1"]},
    },
    "grid": {"pruning.sparsity": [0.0, 0.5], "zo.num_perturbations": [3], "data.alpha": [0.5]},
}


def _write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_tiny_sweep_records_finished_runs_with_metrics(ray_session, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    outcome = run_sweep(load_sweep(_write(tmp_path, TINY)), results)
    table = outcome.trials
    assert list(table["status"]) == ["OK", "OK"]
    assert sorted(table["sparsity"]) == [0.0, 0.5]
    assert len(pd.read_csv(outcome.experiment_dir / "trials.csv")) == 2

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny_e2e")
    runs = client.search_runs([experiment.experiment_id], "tags.phase = 'grid'")
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags["mlflow.parentRunId"] == outcome.parent_run_id
        assert run.info.status == "FINISHED"
        for key in (
            "test_accuracy",
            "test_loss",
            "val_macro_f1",
            "test_macro_f1",
            "cumulative_client_forward_flops",
            "cumulative_upload_bytes",
        ):
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == [1, 2, 3], key
        assert run.data.params["pruning.sparsity"] in ("0.0", "0.5")
        assert run.data.params["zo.num_perturbations"] == "3"
        assert "setup.kept_fraction" in run.data.params
        flops = [
            m.value
            for m in client.get_metric_history(run.info.run_id, "cumulative_client_forward_flops")
        ]
        assert flops == sorted(flops) and flops[0] > 0
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"clients.csv", "config.yaml", "model.pt"} <= artifacts
        # its parameters are its resolved configuration, every field, defaults included
        resolved = config_from_dict(
            yaml.safe_load(
                Path(
                    client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
                ).read_text()
            )
        )
        assert {k: v for k, v in run.data.params.items() if not k.startswith("setup.")} == {
            k: str(v) for k, v in flatten(config_to_dict(resolved)).items()
        }
        _assert_model_reproduces_the_logged_accuracy(client, run.info.run_id, resolved, tmp_path)
    # The parent's: the configuration the trials share, resolved (single-valued axes
    # included), the swept field marked as varying.
    progress = client.get_run(outcome.parent_run_id).data.tags["progress"]
    assert progress == "ended: 2 trials: 2 OK"  # not the last running count
    parent = client.get_run(outcome.parent_run_id).data.params
    assert parent["pruning.sparsity"] == "varies: 0.0, 0.5"
    assert parent["sweep.trials"] == "2"
    for key, value in flatten(config_to_dict(resolved)).items():
        if key != "pruning.sparsity":
            assert parent[key] == str(value), key


def _assert_model_reproduces_the_logged_accuracy(client, run_id, cfg, folder) -> None:
    """The model artifact, rebuilt with the documented loader, scores the final test
    accuracy the run logged, and is as sparse as the run's mask."""
    import torch

    from fpzo_ray.data import federated_data
    from fpzo_ray.models import load_pruned

    model = load_pruned(client.download_artifacts(run_id, "model.pt", str(folder)))
    images, labels = federated_data(cfg)[0].test_set()
    with torch.no_grad():
        accuracy = int((model(images).argmax(1) == labels).sum()) / len(labels)
    (logged,) = [
        m
        for m in client.get_metric_history(run_id, "test_accuracy")
        if m.step == cfg.training.rounds
    ]
    assert accuracy == pytest.approx(logged.value, abs=1e-9)
    trained = int(client.get_run(run_id).data.params["setup.num_trained"])
    weights = torch.cat([p.flatten() for p in model.parameters()])
    assert int((weights != 0).sum()) <= trained  # pruned coordinates are exactly zero


def test_failing_trial_ends_failed_with_its_error(ray_session, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = {**TINY, "name": "broken", "grid": {"pruning.sparsity": [0.0]}}
    spec["base"] = {
        **TINY["base"],
        "data": {"name": "mnist", "root": str(tmp_path / "nowhere"), "num_clients": 12},
        "tracking": {"experiment": "broken_e2e"},
    }
    results = tmp_path / "results"
    table = run_sweep(load_sweep(_write(tmp_path, spec)), results).trials
    assert list(table["status"]) == ["ERROR"]
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("broken_e2e").experiment_id], "tags.phase = 'grid'"
    )
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert "MNIST not found" in runs[0].data.tags["error"]
    # an error of the trial's own code is tried once more, not max_failures times: it
    # comes back the same (a lost node, which is what the restarts are for, gets them all)
    assert runs[0].data.tags["restarts"] == "1"
    assert runs[0].data.tags["last_restart"] == "error in the trial"
