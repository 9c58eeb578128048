"""Whole runs in one process (no Ray): the reference behaviour of the engine."""

import pytest
import torch

from fpzo_ray.config import config_from_dict
from fpzo_ray.data import make_partition
from fpzo_ray.protocol import sample_clients
from fpzo_ray.seeding import Purpose
from fpzo_ray.sim.client import ClientRuntime
from fpzo_ray.sim.in_process import InProcessPool
from fpzo_ray.sim.server import FederatedServer

SMALL = {
    "data": {"num_clients": 20},
    "training": {"rounds": 6, "clients_per_round": 5},
    "pruning": {"iterations": 3, "clients_per_iteration": 4},
    "zo": {"num_perturbations": 5},
}


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
    server, _ = _server(
        digits, training={"rounds": 40, "clients_per_round": 5}, zo={"num_perturbations": 20}
    )
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


MODES = [
    {"training": {"algorithm": "zo", "mode": "fedsgd"}},
    {"training": {"algorithm": "zo", "mode": "fedavg", "local_steps": 3, "client_lr": 0.05}},
    {
        "training": {
            "algorithm": "zo",
            "mode": "fedavg",
            "local_steps": 2,
            "args": {"upload": "dense_update"},
        }
    },
    {
        "training": {
            "algorithm": "bp",
            "mode": "fedavg",
            "local_steps": 2,
            "client_lr": 0.1,
            "server_optimizer": "sgd",
            "server_lr": 1.0,
        }
    },
    {"zo": {"estimator": "central", "direction": "rademacher"}},
    {"zo": {"perturbation_scope": "layerwise"}, "training": {"server_optimizer": "sgd_momentum"}},
    {"zo": {"batching": "vmap"}},
]


@pytest.mark.parametrize("sections", MODES, ids=lambda s: str(s)[:60])
def test_pruned_weights_stay_zero_under_every_mode(digits, sections):
    server, runtime = _server(digits, pruning={"method": "random", "sparsity": 0.7}, **sections)
    server.prune()
    before = server.global_flat_weights(use_ema=False)
    metrics = [server.run_round(r) for r in range(4)]
    after = server.global_flat_weights(use_ema=False)
    pruned = ~server.mask.kept_flat()
    assert torch.count_nonzero(after[pruned]) == 0
    assert torch.count_nonzero(runtime.flat[pruned]) == 0
    assert not torch.equal(after[~pruned], before[~pruned])
    assert all(m["aggregated_clients"] == 5 for m in metrics)
    assert metrics[-1]["cumulative_client_flops"] >= metrics[-1]["cumulative_client_forward_flops"]


def test_fedavg_scalar_upload_replays_to_the_same_run_as_dense_updates(digits):
    common = {
        "mode": "fedavg",
        "local_steps": 3,
        "client_lr": 0.05,
        "client_momentum": 0.5,
        "server_optimizer": "sgd",
        "server_lr": 1.0,
    }
    runs = {}
    for upload in ("scalars", "dense_update"):
        server, _ = _server(
            digits,
            training={**common, "args": {"upload": upload}},
            pruning={"method": "random", "sparsity": 0.5},
        )
        server.prune()
        runs[upload] = [server.run_round(r) for r in range(4)]
        runs[upload + "_weights"] = server.global_flat_weights(use_ema=False)
    assert torch.equal(runs["scalars_weights"], runs["dense_update_weights"])
    assert [m["test_accuracy"] for m in runs["scalars"] if "test_accuracy" in m] == [
        m["test_accuracy"] for m in runs["dense_update"] if "test_accuracy" in m
    ]
    # ... at a fraction of the upload: 3 x 5 scalars + 12 bytes vs d floats + 4 bytes
    d = server.num_trained
    assert runs["scalars"][0]["round_upload_bytes"] == 5 * (4 * 3 * 5 + 12)
    assert runs["dense_update"][0]["round_upload_bytes"] == 5 * (4 * d + 4)


def test_bp_fedavg_learns_faster_than_zo(digits):
    accuracies = {}
    for name, training in {
        "bp": {
            "algorithm": "bp",
            "mode": "fedavg",
            "local_steps": 2,
            "client_lr": 0.1,
            "server_optimizer": "sgd",
            "server_lr": 1.0,
            "rounds": 15,
        },
        "zo": {"rounds": 15},
    }.items():
        server, _ = _server(digits, training=training)
        server.prune()
        accuracies[name] = [server.run_round(r) for r in range(15)][-1]["test_accuracy"]
    assert accuracies["bp"] > 0.6 and accuracies["bp"] > accuracies["zo"]


@pytest.mark.parametrize(
    "method",
    [
        "random",
        "random_layerwise",
        "magnitude",
        "snip",
        "grasp",
        "synflow",
        "ntk_sap",
        "ntk_sap_data",
        "ntk_sap_central",
    ],
)
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_every_pruning_method_reaches_the_exact_density(digits, method, scope):
    server, _ = _server(
        digits, pruning={"method": method, "sparsity": 0.6, "scope": scope, "iterations": 2}
    )
    summary = server.prune()
    p = server.layout.num_prunable
    if scope == "global":
        assert server.mask.num_kept_prunable == round(0.4 * p)
    else:
        for name, density in summary["layer_density"].items():
            assert abs(density - 0.4) < 0.02, name
    # random_layerwise copies the layer densities of its reference (ntk_sap, federated).
    federated = method in ("snip", "grasp", "ntk_sap", "ntk_sap_data", "random_layerwise")
    assert (summary["pruning_upload_bytes"] > 0) == federated


def test_centralised_ntk_sap_gives_the_federated_mask(digits):
    masks = {}
    for method in ("ntk_sap", "ntk_sap_central"):
        server, _ = _server(digits, pruning={"method": method, "sparsity": 0.8})
        server.prune()
        masks[method] = server.mask.prunable_kept
    assert torch.equal(masks["ntk_sap"], masks["ntk_sap_central"])


def test_clients_report_measured_peak_memory_bp_above_zo_above_microbatched(digits):
    peaks = {}
    for name, sections in {
        "bp": {"training": {"algorithm": "bp", "mode": "fedavg"}},
        "bp_micro": {"training": {"algorithm": "bp", "mode": "fedavg", "bp_microbatch_size": 4}},
        "zo": {},
        "zo_micro": {"zo": {"microbatch_size": 4}},
    }.items():
        server, _ = _server(digits, **sections)
        server.prune()
        metrics = server.run_round(0)
        peaks[name] = metrics["max_client_peak_memory_bytes"]
        assert all(r["peak_memory_bytes"] > 0 for r in server.records())
    assert peaks["bp"] > peaks["zo"] > peaks["zo_micro"] > 0
    assert peaks["bp"] > peaks["bp_micro"] > peaks["zo_micro"]


def test_bp_gradient_accumulation_gives_the_whole_batch_update(digits):
    """``training.bp_microbatch_size``: chunks through forward and backward, the same step.
    Server SGD at rate 1 applies the averaged client update as it is (Adam's first step,
    about lr * sign(g), would blow float32 summation noise in near-zero gradients up to
    lr-sized differences)."""
    updates = {}
    for chunk in (0, 5):
        server, _ = _server(
            digits,
            training={
                "algorithm": "bp",
                "mode": "fedavg",
                "local_steps": 2,
                "bp_microbatch_size": chunk,
                "server_optimizer": "sgd",
                "server_lr": 1.0,
            },
        )
        server.prune()
        start = server.optimizer.weights.detach().clone()
        server.run_round(0)
        updates[chunk] = server.optimizer.weights.detach() - start
    torch.testing.assert_close(updates[5], updates[0], rtol=1e-4, atol=1e-6)
    assert updates[0].abs().sum() > 0


def test_microbatched_loss_equals_the_whole_batch_loss(digits):
    from fpzo_ray.zo.client_update import batch_loss

    server, runtime = _server(digits)
    x, y = digits.train_batch(torch.arange(32).numpy())
    whole = batch_loss(runtime.model, x, y, 0)
    assert abs(batch_loss(runtime.model, x, y, 5) - whole) < 1e-6


@pytest.mark.parametrize("scaling", ["none", "fan_in"])
def test_kept_weights_start_as_initialised_or_fan_in_rescaled(digits, scaling):
    server, _ = _server(
        digits, pruning={"method": "random", "sparsity": 0.7, "init_scaling": scaling}
    )
    server.prune()
    kept = server.mask.kept_index()
    start = server.initial_flat
    expected = start if scaling == "none" else server.mask.fan_in_rescaled(start)
    assert torch.equal(server.optimizer.weights.detach(), expected[kept])
    assert scaling == "none" or not torch.equal(expected[kept], start[kept])
