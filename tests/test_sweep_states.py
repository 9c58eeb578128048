"""What the table of an interrupted sweep says of each trial, from what Tune returns and what
the MLflow callback saw (the rounds it logged, whether Tune ended the trial): no Ray, results
stood in for by plain objects."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow.fs
import yaml

from fpzo_ray.sweep.callbacks import plan_key
from fpzo_ray.sweep.phases import _figures
from fpzo_ray.sweep.spec import load_sweep


def _spec(tmp_path: Path, seeds: int):
    path = tmp_path / "states.yaml"
    base = {"training": {"rounds": 20}, "data": {"num_clients": 12}}
    grid = {"seed": list(range(1, seeds + 1))}
    path.write_text(yaml.safe_dump({"name": "states", "base": base, "grid": grid}))
    spec = load_sweep(path)
    return spec, spec.first_phase_plans()


def _result(folder: Path, plan: dict | None, rounds: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    history = pd.DataFrame({"round": list(range(1, rounds + 1))}) if rounds else None
    return SimpleNamespace(
        config={"trial": plan} if plan else None,
        path=str(folder),
        filesystem=pyarrow.fs.LocalFileSystem(),  # where Ray's Result says its path is
        metrics_dataframe=history,
        error=None,
    )


def test_every_trial_gets_its_true_state(tmp_path):
    spec, plans = _spec(tmp_path, 5)
    earlier, unended, reporting, pruning, pending = (p.as_dict() for p in plans)
    # Tune's result for a trial it never started may come back without a config: its
    # params.json still names the plan.
    unstarted = tmp_path / "pending"
    unstarted.mkdir()
    (unstarted / "params.json").write_text(json.dumps({"trial": pending}))
    results = [
        _result(tmp_path / "a", earlier, rounds=20),  # finished in an earlier session
        _result(tmp_path / "b", unended, rounds=20),  # its last round, then the stop
        _result(tmp_path / "c", reporting, rounds=7),
        _result(tmp_path / "d", pruning),  # started: pruning, no round reported yet
        _result(unstarted, None),
        _result(tmp_path / "nothing", None),  # no config, no params.json: from the plans
    ]
    seen = {plan_key(unended): (20, False), plan_key(reporting): (7, False)}
    seen[plan_key(pruning)] = (0, False)

    figures = _figures(results, plans, spec, lambda plan: seen.get(plan_key(plan)))

    assert [(f.seed, f.status, f.rounds) for f in figures] == [
        (earlier["seed"], "OK", 20),
        (unended["seed"], "INTERRUPTED", 20),  # resume finishes it: Tune never ended it
        (reporting["seed"], "INTERRUPTED", 7),
        (pruning["seed"], "INTERRUPTED", 0),
        (pending["seed"], "NOT_STARTED", 0),
    ]


def test_a_trial_missing_from_tunes_results_is_interrupted_when_mlflow_saw_it_start(tmp_path):
    spec, plans = _spec(tmp_path, 4)
    first = plan_key(plans[0].as_dict())
    figures = _figures([], plans, spec, lambda p: (3, False) if plan_key(p) == first else None)
    assert [(f.status, f.rounds) for f in figures] == [("INTERRUPTED", 3)] + [
        ("NOT_STARTED", 0)
    ] * 3
