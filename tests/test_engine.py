"""The Ray engine against the in-process reference: same numbers, whatever the worker count."""

import pytest

from fpzo_ray.config import config_from_dict
from fpzo_ray.data import load_dataset, make_partition
from fpzo_ray.sim.federation import run_federated
from fpzo_ray.sim.server import run_in_process

RAW = {"data": {"num_clients": 24, "partition": "dirichlet", "alpha": 0.3},
       "pruning": {"sparsity": 0.6, "iterations": 2, "clients_per_iteration": 5},
       "zo": {"num_perturbations": 6, "ema_decay": 0.9},
       "training": {"rounds": 4, "clients_per_round": 7, "eval_every": 2},
       "simulation": {"worker_cpus": 0.25, "server_cpus": 0.1}}


def _ray_run(num_workers: int):
    raw = {**RAW, "simulation": {**RAW["simulation"], "num_workers": num_workers}}
    reports = []
    records = run_federated(config_from_dict(raw), reports.append)
    return reports, records


@pytest.fixture(scope="module")
def reference():
    cfg = config_from_dict(RAW)
    ds = load_dataset(cfg.data)
    return run_in_process(cfg, ds, make_partition(cfg.data, ds.train_labels, cfg.seed))


def _strip(metrics):
    return {k: v for k, v in metrics.items() if k != "setup"}


@pytest.mark.parametrize("num_workers", [1, 3])
def test_ray_run_equals_in_process_run(ray_session, reference, num_workers):
    reports, records = _ray_run(num_workers)
    assert [_strip(m) for m in reports] == reference  # bit-identical metrics, every round
    assert reports[0]["setup"]["pruning_method"] == "ntk_sap"
    assert len(records) == 4 * 7 and {r["status"] for r in records} == {"ok"}
    assert "test_accuracy" in reports[1] and "test_accuracy" not in reports[0]
