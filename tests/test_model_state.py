"""Model state beyond parameters: BatchNorm's running statistics under ``model.buffers``, and
dropout in the passes of a ZO difference under ``zo.dropout``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fpzo_ray.accounting import dense_update_upload_bytes
from fpzo_ray.config import ConfigError, config_from_dict
from fpzo_ray.data import federated_data
from fpzo_ray.models.statistics import (
    batch_statistics,
    measure_statistics,
    read_statistics,
    statistics_size,
)
from fpzo_ray.sim.client import ClientRuntime
from fpzo_ray.sim.in_process import InProcessPool, run_in_process
from fpzo_ray.sim.server import FederatedServer

BN_RUN = {
    "model": {"target": "extension_targets:bn_cnn", "args": {"shift": 3.0}},
    "data": {"num_clients": 8, "partition": "iid"},
    "pruning": {"method": "dense", "clients_per_iteration": 4},
    "training": {
        "algorithm": "bp",
        "mode": "fedavg",
        "rounds": 8,
        "clients_per_round": 4,
        "local_steps": 4,
        "client_lr": 0.05,
        "eval_every": 8,
    },
}


def _bn_model() -> nn.Module:
    from extension_targets import bn_cnn

    torch.manual_seed(0)
    return bn_cnn((1, 8, 8), 10, shift=3.0)


def test_measured_statistics_are_the_batch_moments_and_the_model_is_left_as_it_was():
    model = _bn_model()
    before = read_statistics(model).clone()
    x = torch.randn(32, 1, 8, 8) * 3 + 1
    measured = measure_statistics(model, [x])
    assert torch.equal(read_statistics(model), before) and model.training
    conv = model[0](x)
    mean, var = conv.mean(dim=(0, 2, 3)), conv.var(dim=(0, 2, 3), unbiased=True)
    assert statistics_size(model) == measured.numel() == 4 * 8
    torch.testing.assert_close(measured[:8], mean.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(measured[8:16], var.detach(), rtol=1e-4, atol=1e-5)


def test_batch_statistics_evaluation_normalises_by_the_batch_and_keeps_the_buffers():
    model = _bn_model().eval()
    before = read_statistics(model).clone()
    x = torch.randn(16, 1, 8, 8) * 3 + 1
    with torch.no_grad(), batch_statistics(model):
        by_batch = model(x)
    assert torch.equal(read_statistics(model), before) and not model[1].training
    with torch.no_grad():
        assert not torch.allclose(model(x), by_batch)  # eval: the initial statistics
        model.train()
        torch.testing.assert_close(model(x), by_batch)


def _server(raw: dict) -> FederatedServer:
    cfg = config_from_dict(raw)
    dataset, partition = federated_data(cfg)
    return FederatedServer(cfg, dataset, InProcessPool(ClientRuntime(cfg, dataset, partition)))


def test_clients_upload_their_statistics_and_the_server_averages_them():
    server = _server(BN_RUN)
    initial = server.statistics.clone()
    server.prune()
    metrics = server.run_round(0)
    assert not torch.equal(server.statistics, initial)
    assert torch.isfinite(server.statistics).all()
    # their bytes are on the wire: 4 bytes a number, on top of each dense update
    per_client = metrics["round_upload_bytes"] / metrics["aggregated_clients"]
    assert per_client == dense_update_upload_bytes(server.num_trained) + 4 * 32
    state = server.state_dict()
    again = _server(BN_RUN)
    again.load_state_dict(state)
    assert torch.equal(again.statistics, server.statistics)


@pytest.mark.parametrize("policy", ["aggregate", "recalibrate", "batch_stats"])
def test_a_batchnorm_model_evaluates_as_well_as_it_trains_under_each_policy(policy):
    raw = {**BN_RUN, "model": {**BN_RUN["model"], "buffers": policy}}
    cfg = config_from_dict(raw)
    last = run_in_process(cfg, *federated_data(cfg))[-1]
    assert last["test_accuracy"] > 0.6, last  # ten classes: chance is 0.1


def test_the_initial_statistics_are_what_made_a_batchnorm_model_evaluate_near_chance():
    """What the server evaluated before ``model.buffers``: the trained weights with the
    statistics the model was built with."""
    server = _server(BN_RUN)
    server.prune()
    for r in range(BN_RUN["training"]["rounds"]):
        server.run_round(r)
    weights = server.global_flat_weights()
    aggregated = server.evaluator.evaluate(weights, server.statistics)["test_accuracy"]
    initial = read_statistics(_bn_model())
    stale = server.evaluator.evaluate(weights, initial)["test_accuracy"]
    assert aggregated > 0.8 and stale < aggregated - 0.2, (aggregated, stale)


def test_recalibrate_without_a_validation_split_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="^config error: model.buffers: recalibrate"):
        config_from_dict(
            {"model": {"buffers": "recalibrate"}, "data": {"validation_fraction": 0.0}}
        )


# -- dropout in the passes of a difference ---------------------------------------------------


def _differences(dropout: str, model: nn.Module, estimator: str = "central") -> torch.Tensor:
    from fpzo_ray.models import bind_flat_buffer
    from fpzo_ray.protocol import zo_update_spec
    from fpzo_ray.zo.client_update import ZOWorkspace, zo_client_update

    cfg = config_from_dict({"zo": {"dropout": dropout, "estimator": estimator}})
    flat, layout = bind_flat_buffer(model)
    spec = zo_update_spec(cfg, clip_on_client=False)
    workspace = ZOWorkspace(model, layout, flat, None)
    torch.manual_seed(1)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    result = zo_client_update(workspace, [(x, y)], [list(range(20))], spec, local_steps=False)
    return result.step_differences[0]


def _dropout_model(p: float = 0.5) -> nn.Module:
    from extension_targets import dropout_mlp

    torch.manual_seed(0)
    return dropout_mlp((1, 8, 8), 10, p)


def test_dropout_off_gives_the_differences_of_the_network_without_dropout():
    off = _differences("off", _dropout_model())
    torch.testing.assert_close(off, _differences("independent", _dropout_model(p=0.0)))


def test_same_mask_differences_are_as_small_as_the_weights_change_independent_ones_are_not():
    same = _differences("same_mask", _dropout_model()).abs().mean()
    off = _differences("off", _dropout_model()).abs().mean()
    independent = _differences("independent", _dropout_model()).abs().mean()
    assert same < 10 * off  # of the order of the weights' effect
    assert independent > 10 * same  # mask noise, not the weights


def test_same_mask_leaves_the_global_generator_where_it_was():
    torch.manual_seed(5)
    _differences("same_mask", _dropout_model())
    after = torch.rand(1)
    torch.manual_seed(5)
    _differences("off", _dropout_model())
    assert torch.equal(after, torch.rand(1))


@pytest.mark.parametrize(
    "zo",
    [
        {"dropout": "same_mask"},
        {"dropout": "same_mask", "estimator": "central", "batching": "batched"},
    ],
)
def test_same_mask_where_it_cannot_hold_is_refused_in_one_line(zo):
    with pytest.raises(ConfigError, match="^config error: zo.dropout: same_mask"):
        config_from_dict({"zo": zo})


def test_the_dropout_bench_finds_independent_masks_drown_the_difference(capsys, tmp_path):
    import json

    from fpzo_ray.bench.__main__ import main

    assert main(["dropout", "--batches", "2", "--data-root", str(tmp_path)]) == 0  # digits
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["scalar_rel_error_off"] < 0.05 and result["scalar_rel_error_same_mask"] < 0.05
    assert result["scalar_rel_error_independent"] > 1.0
