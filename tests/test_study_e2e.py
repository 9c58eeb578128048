"""Searches and studies on Ray, end to end: ASHA per cell, selection on validation metrics,
fresh repeat seeds, nested MLflow runs, and a killed study resumed to the same summary."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient
from studies import BASE, STUDY, command_env, resume, write_sweep

from fpzo_ray.sweep import load_sweep, run_sweep


def _runs(results: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    return client, client.search_runs([found.experiment_id], max_results=1000)


def test_asha_stops_weak_candidates_and_the_choice_is_the_best_validation_score(
    ray_session, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # One trial at a time, so that ASHA's decisions do not depend on timing: a useful rate
    # first, two that cannot learn in 10 rounds, another useful one.
    spec = {
        "name": "asha",
        "max_concurrent_trials": 1,
        "base": {**BASE, "tracking": {"experiment": "asha_e2e"}},
        "grid": {"pruning.sparsity": [0.0]},
        "search": {
            "space": {"training.server_lr": {"grid": [0.1, 1e-7, 2e-7, 0.02]}},
            "scheduler": {"type": "asha", "grace_period": 4, "reduction_factor": 2},
        },
    }
    results = tmp_path / "results"
    outcome = run_sweep(load_sweep(write_sweep(tmp_path, spec)), results)
    trials = sorted(outcome.figures, key=lambda f: f.sample)  # the order they ran in
    assert trials[0].status == "OK"  # nothing to compare the first one against
    assert [f.status for f in trials[1:3]] == ["STOPPED", "STOPPED"]  # the rates that stall
    for i, weak in enumerate(trials):
        if weak.status != "STOPPED":
            continue
        # It stopped at a rung where an earlier trial had done better.
        at = weak.rounds
        earlier = [
            t.evaluations.set_index("round")["val_accuracy"].get(at, math.nan) for t in trials[:i]
        ]
        assert weak.final("val_accuracy") < max(earlier)
    # The choice: the best final validation accuracy among the trials that ran every round.
    complete = [f for f in trials if f.status == "OK"]
    best = max(complete, key=lambda f: (f.final("val_accuracy"), -f.sample))
    (choice,) = outcome.selections.values()
    assert choice.sample == best.sample and choice.value == best.final("val_accuracy")
    assert list(outcome.summary["chosen.training.server_lr"]) == [
        best.hyperparameters["training.server_lr"]
    ]

    client, runs = _runs(results, "asha_e2e")
    children = [r for r in runs if r.data.tags.get("phase") == "search"]
    assert len(children) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {outcome.parent_run_id}
    stopped = sum(f.status == "STOPPED" for f in trials)
    assert sum("stopped_early" in r.data.tags for r in children) == stopped


def _comparable(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.drop(columns=[c for c in summary.columns if c.startswith("wall_s")])


def test_a_killed_study_resumes_to_the_summary_of_an_uninterrupted_one(
    finished_study, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = write_sweep(tmp_path, STUDY)
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "fpzo_ray.sweep", str(path), "--results-dir", str(killed)]
    driver = subprocess.Popen(
        command,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    # Kill the driver and its Ray once the search is decided and a repeat has reported.
    deadline = time.time() + 300
    while not list(killed.glob("ray_results/*/repeat/*/result.json")):
        assert driver.poll() is None, driver.stdout.read().decode()[-3000:]
        assert time.time() < deadline, "the repeat phase never started"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    experiment = next(killed.glob("ray_results/study_*"))
    assert (experiment / "selection.json").is_file() and not (experiment / "summary.csv").exists()
    resume("fpzo_ray.sweep", experiment)

    straight = finished_study.outcome
    after_resume = pd.read_csv(experiment / "summary.csv")
    pd.testing.assert_frame_equal(
        _comparable(after_resume), _comparable(pd.read_csv(straight.experiment_dir / "summary.csv"))
    )
    summary = straight.summary
    assert list(summary["seeds"]) == ["2/2", "2/2"]
    assert summary["test_accuracy_ci95"].map(math.isfinite).all()
    # Repeat seeds are fresh: the search ran on seed 0 only, the repeats on 1 and 2.
    trials = straight.trials
    assert set(trials.loc[trials["phase"] == "search", "seed"]) == {0}
    assert set(trials.loc[trials["phase"] == "repeat", "seed"]) == {1, 2}

    # MLflow after the resume: one parent, every trial once, all nested under it.
    client, runs = _runs(killed, "study_e2e")
    parents = [r for r in runs if "fpzo_experiment" in r.data.tags]
    children = [r for r in runs if "phase" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4 + 4
    unfinished = [
        (r.info.run_name, r.info.status, r.data.tags.get("phase"), r.data.tags.get("trial_state"))
        for r in runs
        if r.info.status != "FINISHED"
    ]
    assert not unfinished, unfinished
    parent = parents[0].info.run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent}
    assert {(r.data.tags["phase"], r.data.tags["seed"]) for r in children} == {
        ("search", "0"),
        ("repeat", "1"),
        ("repeat", "2"),
    }
    assert {r.data.tags["cell"] for r in children} == {"method=dense", "method=ntk_sap_50"}
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {
        "sweep.yaml",
        "search_space.json",
        "selection.json",
        "summary.csv",
        "summary.json",
        "trials.csv",
    } <= artifacts
    repeat_run = next(r for r in children if r.data.tags["phase"] == "repeat")
    assert repeat_run.data.params["seed"] == repeat_run.data.tags["seed"]
    assert "training.algorithm" in repeat_run.data.params  # the resolved configuration
