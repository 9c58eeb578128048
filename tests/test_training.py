"""Whole runs in one process (no Ray): the reference behaviour of the engine."""

import pytest
import torch

from fpzo_ray.config import config_from_dict
from fpzo_ray.data import make_partition
from fpzo_ray.sim.client import ClientRuntime
from fpzo_ray.sim.pool import InProcessPool
from fpzo_ray.seeding import Purpose
from fpzo_ray.sim.server import FederatedServer, sample_clients

SMALL = {"data": {"num_clients": 20}, "training": {"rounds": 6, "clients_per_round": 5},
         "pruning": {"iterations": 3, "clients_per_iteration": 4}, "zo": {"num_perturbations": 5}}


def _server(digits, **sections):
    raw = {k: dict(v) for k, v in SMALL.items()}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    cfg = config_from_dict(raw)
    parts = make_partition(cfg.data, digits.train_labels, cfg.seed)
    runtime = ClientRuntime(cfg, digits, parts)
    return FederatedServer(cfg, digits, InProcessPool(runtime)), runtime


@pytest.mark.parametrize("method", ["ntk_sap", "random"])
def test_pruned_weights_stay_exactly_zero(digits, method):
    server, runtime = _server(digits, pruning={"method": method, "sparsity": 0.8})
    summary = server.prune()
    assert summary["pruning_method"] == method
    assert abs(summary["kept_fraction"] - 0.2) < 1e-3
    before = server.global_flat_weights(use_ema=False)
    for r in range(6):
        server.run_round(r)
    after = server.global_flat_weights(use_ema=False)
    pruned = ~server.mask.kept_flat()
    assert torch.count_nonzero(after[pruned]) == 0
    assert torch.count_nonzero(runtime.flat[pruned]) == 0  # the clients' copies too
    assert not torch.equal(after[~pruned], before[~pruned])  # the kept ones did train


def test_ntk_sap_prunes_the_largest_layer_hardest(digits):
    server, _ = _server(digits, pruning={"sparsity": 0.8})
    density = server.prune()["layer_density"]
    assert density["stages.2.1.weight"] < density["stages.0.0.weight"]


def test_training_reduces_the_loss_and_counts_costs(digits):
    server, _ = _server(digits, training={"rounds": 40, "clients_per_round": 5},
                        zo={"num_perturbations": 20})
    server.prune()
    metrics = [server.run_round(r) for r in range(40)]
    first = sum(m["train_loss"] for m in metrics[:5]) / 5
    last = sum(m["train_loss"] for m in metrics[-5:]) / 5
    assert last < first - 0.3
    assert metrics[-1]["test_accuracy"] > 0.5
    dense_flops = server.pruning_summary["dense_forward_flops_per_sample"]
    # 5 clients x 21 forward passes x their batch (min(32, partition size = 71 or 72)).
    assert metrics[0]["round_client_forward_flops"] == 5 * 21 * 32 * dense_flops
    assert metrics[0]["round_upload_bytes"] == 5 * (4 * 20 + 8 + 4)
    assert metrics[-1]["cumulative_upload_bytes"] == 40 * 5 * (4 * 20 + 8 + 4)


def test_a_crashing_client_does_not_end_the_round(digits):
    server, runtime = _server(digits)
    server.prune()
    victim = sample_clients(0, Purpose.CLIENT_SAMPLING, 0, 20, 5)[0]
    runtime.partition = list(runtime.partition)
    runtime.partition[victim] = None  # this client will raise
    metrics = [server.run_round(r) for r in range(6)]
    failures = [rec for rec in server.records() if rec["status"] == "error"]
    assert sum(m["failed_clients"] for m in metrics) == len(failures) > 0
    assert all(rec["client_id"] == victim for rec in failures)
    assert "TypeError" in failures[0]["error"] or "AttributeError" in failures[0]["error"]
    assert all(m["aggregated_clients"] + m["failed_clients"] == 5 for m in metrics)
