"""Small sweeps the tests share (plain data), and the one place that writes them to disk."""

from __future__ import annotations

from pathlib import Path

import yaml

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
