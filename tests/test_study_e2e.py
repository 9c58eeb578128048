"""Searches and studies on Ray, end to end: ASHA per cell, selection on validation metrics,
fresh repeat seeds, nested MLflow runs, and a killed study resumed to the uninterrupted result."""

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from studies import BASE, reference_metrics, reported_rounds, run_figures, write_sweep

from fpzo_ray.sweep.phases import run_sweep
from fpzo_ray.sweep.spec import load_sweep


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


def test_a_killed_study_resumes_to_the_result_of_an_uninterrupted_one(finished_study):
    experiment = finished_study.experiment_dir
    # killed in the repeat phase: the choice was written, the summary was not
    assert "selection.json" in finished_study.files_when_killed
    assert "summary.csv" not in finished_study.files_when_killed

    # Every trial, searched or repeated, finished before the kill or after the resume, reported
    # every round what the uninterrupted in-process run of its own configuration computes.
    final: dict[tuple[str, str, int], dict] = {}  # (phase, cell, sample or seed): last round
    repeated: dict[tuple[str, int], dict] = {}  # (cell, seed): the hyperparameters it ran
    for params in sorted(experiment.glob("*/*/params.json")):
        plan = json.loads(params.read_text())["trial"]
        run = plan["run"]
        expected = reference_metrics(
            {**run, "simulation": {**run.get("simulation", {}), "checkpoint_every": 0}}
        )
        reported = reported_rounds(params.parent)
        assert sorted(reported) == [m["round"] for m in expected]
        for metrics in expected:
            got = reported[metrics["round"]]
            assert {k: got.get(k) for k in run_figures(metrics)} == run_figures(metrics)
        index = plan["sample"] if plan["phase"] == "search" else plan["seed"]
        final[(plan["phase"], plan["cell"], index)] = expected[-1]
        if plan["phase"] == "repeat":
            repeated[(plan["cell"], plan["seed"])] = plan["hyperparameters"]
    assert len(final) == 8

    # The choice per cell: the best final validation accuracy of its search, ties to the lower
    # sample; every repeat ran it, on fresh seeds; the summary is the repeats' mean.
    selections = json.loads((experiment / "selection.json").read_text())
    summary = finished_study.summary.set_index("cell")
    for cell in ("method=dense", "method=ntk_sap_50"):
        searched = {k[2]: m for k, m in final.items() if k[:2] == ("search", cell)}
        best = max(searched, key=lambda s: (searched[s]["val_accuracy"], -s))
        assert selections[cell]["sample"] == best
        assert selections[cell]["value"] == pytest.approx(searched[best]["val_accuracy"])
        repeats = {k[2]: m for k, m in final.items() if k[:2] == ("repeat", cell)}
        assert set(repeats) == {1, 2}  # the search ran on seed 0 only
        chosen = selections[cell]["hyperparameters"]
        assert all(repeated[(cell, seed)] == chosen for seed in repeats)
        row = summary.loc[cell]
        assert row["seeds"] == "2/2" and math.isfinite(row["test_accuracy_ci95"])
        assert row["chosen.training.server_lr"] == chosen["training.server_lr"]
        mean = sum(m["test_accuracy"] for m in repeats.values()) / 2
        assert row["test_accuracy_mean"] == pytest.approx(mean)
    trials = finished_study.trials
    assert set(trials.loc[trials["phase"] == "search", "seed"]) == {0}
    assert set(trials.loc[trials["phase"] == "repeat", "seed"]) == {1, 2}

    # MLflow after the resume: one parent, every trial once, all nested under it.
    client, runs = _runs(finished_study.results, "study_e2e")
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
    assert parent == finished_study.parent_run_id
    assert parents[0].data.tags["progress"] == "ended: 8 trials: 8 OK"  # not a running count
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
