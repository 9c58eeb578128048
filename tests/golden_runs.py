"""Short in-process runs whose figures are pinned in ``tests/golden/runs.json``.

``python tests/golden_runs.py`` prints the figures of every case as JSON (how the stored file
was made); ``tests/test_golden_runs.py`` reruns the cases and compares.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fpzo_ray.config import DataConfig, config_from_dict
from fpzo_ray.data import load_dataset, make_partition
from fpzo_ray.sim.client import ClientRuntime
from fpzo_ray.sim.in_process import InProcessPool
from fpzo_ray.sim.server import FederatedServer

ROUNDS = 4
BASE: dict[str, Any] = {
    "data": {"num_clients": 20},
    "training": {"rounds": ROUNDS, "clients_per_round": 4, "eval_every": 1},
    "pruning": {"iterations": 2, "clients_per_iteration": 4, "sparsity": 0.8},
    "zo": {"num_perturbations": 5},
}
#: name -> the sections that differ from ``BASE``: FedSGD (the server rebuilds estimates),
#: FedAvg (it replays local steps), the layer-wise variant (its stage draw) and Rademacher.
CASES: dict[str, dict[str, dict[str, Any]]] = {
    "fedsgd": {},
    "fedavg": {"training": {"mode": "fedavg", "local_steps": 2}},
    "layerwise": {"zo": {"perturbation_scope": "layerwise"}},
    "rademacher": {"zo": {"direction": "rademacher"}},
}


def run_case(name: str, generator: str | None, dataset: Any = None) -> dict[str, Any]:
    """The figures of one case: per-round train loss and test accuracy, and the final
    weights' sum of squares (float64)."""
    raw: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BASE.items()}
    for section, values in CASES[name].items():
        raw.setdefault(section, {}).update(values)
    if generator is not None:
        raw["zo"]["generator"] = generator
    cfg = config_from_dict(raw)
    dataset = dataset if dataset is not None else load_dataset(DataConfig())
    parts = make_partition(cfg.data, dataset.train_labels, cfg.seed)
    server = FederatedServer(cfg, dataset, InProcessPool(ClientRuntime(cfg, dataset, parts)))
    server.prune()
    metrics = [server.run_round(r) for r in range(ROUNDS)]
    weights = server.global_flat_weights(use_ema=False).double()
    return {
        "train_loss": [m["train_loss"] for m in metrics],
        "test_accuracy": [m["test_accuracy"] for m in metrics],
        "weights_sum_of_squares": float((weights * weights).sum()),
    }


if __name__ == "__main__":
    generator = sys.argv[1] if len(sys.argv) > 1 else None
    data = load_dataset(DataConfig())
    print(json.dumps({name: run_case(name, generator, data) for name in CASES}, indent=1))
