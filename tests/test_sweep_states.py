"""What the table of an interrupted sweep says of each trial, from what Tune returns and what
the MLflow callback saw start: no Ray, results stood in for by plain objects."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import yaml

from fpzo_ray.sweep import _figures
from fpzo_ray.sweep_spec import load_sweep
from fpzo_ray.tracking import plan_key


def _spec(tmp_path: Path):
    path = tmp_path / "states.yaml"
    base = {"training": {"rounds": 20}, "data": {"num_clients": 12}}
    path.write_text(
        yaml.safe_dump({"name": "states", "base": base, "grid": {"seed": [1, 2, 3, 4]}})
    )
    spec = load_sweep(path)
    return spec, spec.first_phase_plans()


def _result(folder: Path, plan: dict | None, rounds: int = 0, error: str | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    history = pd.DataFrame({"round": list(range(1, rounds + 1))}) if rounds else None
    return SimpleNamespace(
        config={"trial": plan} if plan else None,
        path=str(folder),
        metrics_dataframe=history,
        error=error,
    )


def test_every_trial_gets_its_true_state(tmp_path):
    spec, plans = _spec(tmp_path)
    finished, reporting, pruning, pending = (p.as_dict() for p in plans)
    # Tune's result for a trial it never started may come back without a config: its
    # params.json still names the plan.
    unstarted = tmp_path / "pending"
    unstarted.mkdir()
    (unstarted / "params.json").write_text(json.dumps({"trial": pending}))
    results = [
        _result(tmp_path / "a", finished, rounds=20),
        _result(tmp_path / "b", reporting, rounds=7),
        _result(tmp_path / "c", pruning),  # started: pruning, no round reported yet
        _result(unstarted, None),
        _result(tmp_path / "nothing", None),  # no config, no params.json: from the plans
    ]
    started = {plan_key(p): 0 for p in (pruning,)} | {plan_key(reporting): 7}

    figures = _figures(results, plans, spec, lambda plan: started.get(plan_key(plan)))

    assert [(f.seed, f.status, f.rounds) for f in figures] == [
        (finished["seed"], "OK", 20),
        (reporting["seed"], "INTERRUPTED", 7),
        (pruning["seed"], "INTERRUPTED", 0),
        (pending["seed"], "NOT_STARTED", 0),
    ]


def test_a_trial_missing_from_tunes_results_is_interrupted_when_mlflow_saw_it_start(tmp_path):
    spec, plans = _spec(tmp_path)
    first = plans[0].as_dict()
    figures = _figures([], plans, spec, lambda p: 3 if plan_key(p) == plan_key(first) else None)
    assert [(f.status, f.rounds) for f in figures] == [("INTERRUPTED", 3)] + [
        ("NOT_STARTED", 0)
    ] * 3
