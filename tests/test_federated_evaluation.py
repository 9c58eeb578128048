"""Federated evaluation: clients score the global model on data they never train on
(``task.federated_eval_clients``, ``task.client_holdout``), and ``model.buffers: local``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fpzo_ray.config import ConfigError, config_from_dict
from fpzo_ray.data import client_holdout, federated_data
from fpzo_ray.models.statistics import measure_statistics, read_statistics, write_statistics
from fpzo_ray.sim.client import LOCAL_STATISTICS_SAMPLES, ClientRuntime
from fpzo_ray.sim.evaluation import score
from fpzo_ray.sim.in_process import InProcessPool
from fpzo_ray.sim.messages import EvalBroadcast
from fpzo_ray.sim.server import FederatedServer

RAW = {
    "data": {"num_clients": 10, "partition": "dirichlet", "alpha": 0.3},
    "pruning": {"method": "dense"},
    "training": {
        "algorithm": "bp",
        "mode": "fedavg",
        "rounds": 4,
        "clients_per_round": 4,
        "local_steps": 2,
        "client_lr": 0.05,
        "eval_every": 2,
    },
    "task": {"federated_eval_clients": 6, "metrics": "accuracy,macro_f1"},
}


def test_each_client_keeps_a_seeded_disjoint_slice_of_its_partition():
    rng = np.random.default_rng(0)
    parts = [np.sort(rng.choice(1000, size=n, replace=False)) for n in (1, 2, 10, 57)]
    train, held = client_holdout(parts, 0.25, run_seed=3)
    for part, t, h in zip(parts, train, held):
        assert np.array_equal(np.sort(np.concatenate([t, h])), part)
        assert not set(t) & set(h) and t.shape[0] >= 1  # one sample always trains
        assert h.shape[0] == min(round(0.25 * part.shape[0]), part.shape[0] - 1)
    again = client_holdout(parts, 0.25, run_seed=3)[1]
    other = client_holdout(parts, 0.25, run_seed=4)[1]
    assert all(np.array_equal(a, b) for a, b in zip(held, again))
    assert not np.array_equal(held[3], other[3])


@pytest.mark.parametrize(
    "task, field",
    [
        ({"federated_eval_clients": 11}, "task.federated_eval_clients"),
        ({"client_holdout": 1.0}, "task.client_holdout"),
    ],
)
def test_impossible_federated_evaluations_are_refused_in_one_line(task, field):
    with pytest.raises(ConfigError, match=f"^config error: {field}: ") as caught:
        config_from_dict({**RAW, "task": task})
    assert "\n" not in str(caught.value)


def _server(raw: dict) -> FederatedServer:
    cfg = config_from_dict(raw)
    dataset, partition = federated_data(cfg)
    runtime = ClientRuntime(cfg, dataset, partition)
    return FederatedServer(cfg, dataset, InProcessPool(runtime))


def test_clients_score_the_global_model_on_their_held_out_data_at_each_evaluation():
    server = _server(RAW)
    runtime = server.pool.runtime  # type: ignore[attr-defined]
    server.prune()
    reports = [server.run_round(r) for r in range(4)]
    assert "federated_accuracy" not in reports[0]
    last = reports[-1]
    for key in ("federated_loss", "federated_accuracy", "federated_macro_f1"):
        assert np.isfinite(last[key]), key
    assert last["federated_eval_clients"] == 6 and last["federated_eval_failures"] == 0
    # two evaluations of six clients, each a record beside the training ones
    evaluated = [r for r in server.records() if r["status"] == "evaluated"]
    assert [r["round"] for r in evaluated] == [2] * 6 + [4] * 6
    final = evaluated[6:]
    weights = np.array([r["eval_samples"] for r in final], dtype=float)
    accuracies = np.array([r["eval_accuracy"] for r in final])
    assert last["federated_accuracy"] == pytest.approx(np.average(accuracies, weights=weights))
    assert last["federated_accuracy_p10"] == pytest.approx(np.percentile(accuracies, 10))
    # each client scored exactly its held-out slice, and trained on the rest only
    for record in final:
        client = record["client_id"]
        assert record["eval_samples"] == runtime.held_out[client].shape[0] > 0
    trained = [r for r in server.records() if r["status"] == "ok"]
    assert all(r["num_samples"] == runtime.partition[r["client_id"]].shape[0] for r in trained)
    # what the evaluation cost the clients, apart from training's counters
    assert last["round_eval_client_flops"] > 0 and last["round_eval_upload_bytes"] > 0
    assert last["cumulative_eval_download_bytes"] == 2 * last["round_eval_download_bytes"]
    assert last["cumulative_upload_bytes"] == sum(r["round_upload_bytes"] for r in reports)


def test_without_federated_evaluation_every_sample_trains():
    raw = {**RAW, "task": {}}
    cfg = config_from_dict(raw)
    dataset, partition = federated_data(cfg)
    runtime = ClientRuntime(cfg, dataset, partition)
    assert all(np.array_equal(a, b) for a, b in zip(runtime.partition, partition))
    assert all(h.shape[0] == 0 for h in runtime.held_out)


# -- model.buffers: local ------------------------------------------------------------------

BN = {"target": "extension_targets:bn_cnn", "args": {"shift": 3.0}}


def test_local_statistics_need_a_federated_evaluation():
    with pytest.raises(ConfigError, match="^config error: model.buffers: local "):
        config_from_dict({"model": {**BN, "buffers": "local"}})


def test_under_local_a_client_normalises_by_its_own_data_and_forgets_it():
    cfg = config_from_dict({**RAW, "model": {**BN, "buffers": "local"}})
    dataset, partition = federated_data(cfg)
    runtime = ClientRuntime(cfg, dataset, partition)
    before = read_statistics(runtime.model).clone()
    weights = runtime.flat.detach().clone()
    reply = runtime.evaluate(EvalBroadcast(0, runtime.mask_version, weights), client_id=3)
    assert torch.equal(read_statistics(runtime.model), before) and runtime.model.training
    # by hand: statistics of the client's first training samples, then its held-out slice
    own = dataset.train_batch(runtime.partition[3][:LOCAL_STATISTICS_SAMPLES])[0]
    model = runtime.model
    statistics = measure_statistics(model, own.split(cfg.training.batch_size))
    model.eval()
    write_statistics(model, statistics)
    held = dataset.train_batch(runtime.held_out[3])
    expected = score(model, runtime.task, *held, cfg.training.batch_size, runtime.device)
    assert reply.scores == pytest.approx(expected)
    assert reply.num_samples == runtime.held_out[3].shape[0]


def test_a_batchnorm_model_learns_and_evaluates_on_clients_under_local_statistics():
    raw = {
        **RAW,
        "model": {**BN, "buffers": "local"},
        "data": {"num_clients": 8, "partition": "iid"},
        "pruning": {"method": "dense", "clients_per_iteration": 4},
        "training": {**RAW["training"], "rounds": 8, "local_steps": 4, "eval_every": 8},
        "task": {"federated_eval_clients": 4},
    }
    server = _server(raw)
    server.prune()
    last = [server.run_round(r) for r in range(8)][-1]
    assert last["federated_accuracy"] > 0.6, last  # ten classes: chance is 0.1
    assert last["test_accuracy"] > 0.6, last  # the server's: by batch
    assert last["round_eval_download_bytes"] > 0
