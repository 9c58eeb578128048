"""One run lifecycle for both entry points: the engine's round loop calls the callbacks
(``sim.callbacks``) in their order, a callback can add a metric or end the run, and
``python -m fpzo_ray.run`` composes the same writer, recorder and console as a sweep trial."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fpzo_ray.config import config_from_dict
from fpzo_ray.sim.callbacks import CallbackList, RunCallback

T = "extension_targets"
ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "data": {"target": f"{T}:blobs", "num_clients": 6},
    "model": {"target": f"{T}:mlp"},
    "pruning": {"method": "magnitude", "sparsity": 0.5, "clients_per_iteration": 3},
    "zo": {"num_perturbations": 2},
    "training": {
        "rounds": 10,
        "clients_per_round": 3,
        "eval_every": 2,
        "callbacks": [f"{T}:UploadKibAndStop"],
    },
    "simulation": {"num_workers": 1, "worker_cpus": 0.25, "server_cpus": 0.1},
}


class Journal(RunCallback):
    """Writes down every call it gets, into a list shared with others."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def on_start(self, cfg: Any, first_round: int) -> None:
        self.calls.append(f"{self.name}.start@{first_round}")

    def on_round(self, metrics: dict[str, Any]) -> bool:
        self.calls.append(f"{self.name}.round{metrics['round']}")
        return False

    def after_round(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        self.calls.append(f"{self.name}.after{metrics['round']}" + ("+state" if state else ""))

    def on_end(self, result: Any) -> None:
        self.calls.append(f"{self.name}.end")


def test_a_callback_list_calls_in_order_and_ends_in_reverse():
    calls: list[str] = []
    both = CallbackList([Journal("a", calls), Journal("b", calls)])
    both.on_start(None, 0)
    assert both.on_round({"round": 1}) is False
    both.after_round({"round": 1}, {"x": 1})
    both.on_end(None)
    assert calls == [
        "a.start@0",
        "b.start@0",
        "a.round1",
        "b.round1",
        "a.after1+state",
        "b.after1+state",
        "b.end",
        "a.end",
    ]


def test_every_callback_sees_a_round_whoever_asks_to_stop():
    class Stop(RunCallback):
        def on_round(self, metrics: dict[str, Any]) -> bool:
            return True

    calls: list[str] = []
    assert CallbackList([Stop(), Journal("after", calls)]).on_round({"round": 3}) is True
    assert calls == ["after.round3"]


@pytest.mark.ray
def test_the_round_loop_calls_the_callbacks_and_a_callback_ends_the_run(ray_session):
    """The engine: ``on_start``, each round's ``on_round`` then ``after_round`` (with the
    state every ``checkpoint_every`` rounds), and ``on_end`` with the result; a researcher's
    callback adds a metric every later callback sees, and its stop after round 4 (its second
    evaluation) leaves a run of 4 rounds: no fifth round reported, the records end there."""
    from extension_targets import UploadKibAndStop

    from fpzo_ray.sim.ray.federation import run_federated

    # the bundled digits: the session's Ray workers import the package, not the tests
    raw = {k: v for k, v in SMALL.items() if k not in ("data", "model")}
    training = {k: v for k, v in SMALL["training"].items() if k != "callbacks"}
    simulation = {**SMALL["simulation"], "checkpoint_every": 3}
    cfg = config_from_dict(
        {**raw, "data": {"num_clients": 6}, "training": training, "simulation": simulation}
    )
    calls: list[str] = []
    seen: list[dict[str, Any]] = []

    class Seen(RunCallback):
        def after_round(self, metrics: dict[str, Any], state: Any) -> None:
            seen.append(dict(metrics))

    result = run_federated(cfg, CallbackList([UploadKibAndStop(), Journal("j", calls), Seen()]))
    assert calls == [
        "j.start@0",
        *[f"j.{kind}{r}" for r in (1, 2) for kind in ("round", "after")],
        "j.round3",
        "j.after3+state",
        "j.round4",
        "j.after4",
        "j.end",
    ]
    assert [m["round"] for m in seen] == [1, 2, 3, 4]
    assert all(m["upload_kib"] == m["round_upload_bytes"] / 1024 for m in seen)
    assert result.rounds_done == 4
    assert max(record["round"] for record in result.records) == 4


@pytest.mark.slow
@pytest.mark.ray
def test_the_run_command_runs_a_researchers_callback_and_records_its_early_stop(tmp_path):
    """``python -m fpzo_ray.run`` with ``training.callbacks``: the callback's metric is in
    MLflow for every round, the run stops after its second evaluation (round 4 of 10) and
    ends FINISHED, tagged ``stopped_early``, with the run folder's files written."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT}", RAY_USAGE_STATS_ENABLED="0")
    sets = [
        f"data.target={T}:blobs",
        "data.num_clients=6",
        f"model.target={T}:mlp",
        "pruning.method=magnitude",
        "pruning.clients_per_iteration=3",
        "zo.num_perturbations=2",
        "training.rounds=10",
        "training.clients_per_round=3",
        "training.eval_every=2",
        f"training.callbacks={T}:UploadKibAndStop",
        "simulation.num_workers=1",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "fpzo_ray.run", "--results-dir", str(tmp_path)]
        + [arg for s in sets for arg in ("--set", s)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("fpzo_ray").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["stopped_early"] == "after round 4 of 10"
    history = client.get_metric_history(run.info.run_id, "upload_kib")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    (folder,) = (tmp_path / "runs").iterdir()
    assert {"config.yaml", "model.pt", "clients.csv"} <= {p.name for p in folder.iterdir()}
    assert pd.read_csv(folder / "clients.csv")["round"].max() == 4


@pytest.mark.slow
@pytest.mark.ray
def test_a_sweep_trial_runs_a_researchers_callback_and_its_stop_is_not_an_interruption(
    tmp_path,
):
    """``python -m fpzo_ray.sweep`` whose trials name a callback: it runs in each trial's
    process, its metric reaches the trial's MLflow run through Tune, and its stop after round
    4 of 10 leaves the trial FINISHED, tagged ``stopped_early``, STOPPED in the trial table:
    not an interruption, and the sweep exits 0."""
    import yaml

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT}", RAY_USAGE_STATS_ENABLED="0")
    base = {k: v for k, v in SMALL.items() if k != "simulation"}
    sweep = {
        "name": "callbacks",
        "base": {**base, "simulation": {"num_workers": 1, "worker_cpus": 0.5}},
        "grid": {"zo.num_perturbations": [2]},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    out = subprocess.run(
        [sys.executable, "-m", "fpzo_ray.sweep", str(path), "--results-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # nothing a user must learn to ignore: no Ray or Tune warning the sweep caused nothing for
    said = (out.stdout + out.stderr).splitlines()
    assert [line for line in said if "WARNING" in line or "warning:" in line] == []
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fpzo_ray").experiment_id
    (trial,) = client.search_runs([experiment], "tags.phase = 'grid'")
    assert trial.info.status == "FINISHED"
    assert trial.data.tags["stopped_early"] == "after round 4 of 10"
    history = client.get_metric_history(trial.info.run_id, "upload_kib")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    (table,) = (tmp_path / "ray_results").glob("callbacks_*/trials.csv")
    assert pd.read_csv(table)["status"].tolist() == ["STOPPED"]
