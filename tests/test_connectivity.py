"""A mask that breaks the network is said: collapse fails the run unless allowed, weights that
never meet data and layers pruned whole are warnings with the sparsity that really applies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fpzo_ray.config import config_from_dict
from fpzo_ray.data import federated_data
from fpzo_ray.failure import RunFailed
from fpzo_ray.models import bind_flat_buffer
from fpzo_ray.pruning import Mask
from fpzo_ray.pruning.connectivity import check_connectivity, unused_layers
from fpzo_ray.sim.client import ClientRuntime
from fpzo_ray.sim.in_process import InProcessPool, run_in_process
from fpzo_ray.sim.server import FederatedServer


def _bound(model: nn.Module):
    flat, layout = bind_flat_buffer(model)
    return flat.detach().clone(), layout


def test_a_mask_that_prunes_the_classifier_whole_is_a_collapse():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    flat, layout = _bound(model)
    kept = torch.ones(layout.num_prunable, dtype=torch.bool)
    kept[48:] = False  # the second Linear's 24 weights
    found = check_connectivity(model, layout, flat, Mask(layout, kept), (6,))
    assert found.collapsed and found.empty_layers == ("3.weight",)
    kept[48:50] = True
    assert not check_connectivity(model, layout, flat, Mask(layout, kept), (6,)).collapsed


def test_weights_that_only_ever_meet_padding_are_found_and_the_true_sparsity_is_said():
    """A 3x3 convolution on a 1x1 map uses its centre tap only (a ResNet-18's last stage at
    32x32 input)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4, 3))
    flat, layout = _bound(model)
    dense = check_connectivity(model, layout, flat, Mask.dense(layout), (2, 1, 1))
    taps = dense.unused[:72].view(4, 2, 3, 3)
    assert not taps[:, :, 1, 1].any() and taps.sum() == 4 * 2 * 8  # all but the centre
    assert not dense.unused[72:].any()
    assert unused_layers(layout, dense.unused) == {"0.weight": pytest.approx(8 / 9)}
    # a mask that removes exactly those removes nothing that matters
    found = check_connectivity(model, layout, flat, Mask(layout, ~dense.unused), (2, 1, 1))
    assert found.removed == found.removed_unused == 64 and found.effective_sparsity == 0.0
    assert not found.collapsed


def test_a_zero_initialised_layer_is_not_taken_for_unused_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    nn.init.zeros_(model[3].weight)  # a zero-initialised head (some ViTs)
    flat, layout = _bound(model)
    assert not check_connectivity(model, layout, flat, Mask.dense(layout), (6,)).unused.any()


RUN = {
    "data": {"target": "extension_targets:blobs", "num_clients": 4, "partition": "iid"},
    "model": {"target": "extension_targets:mlp"},
    "pruning": {
        "method": "extension_targets:DROPS_THE_CLASSIFIER",
        "sparsity": 0.5,
        "clients_per_iteration": 2,
    },
    "training": {"rounds": 2, "clients_per_round": 2},
}


def test_a_collapsing_mask_fails_the_run_with_its_kind_unless_allowed():
    cfg = config_from_dict(RUN)
    with pytest.raises(RunFailed) as caught:
        run_in_process(cfg, *federated_data(cfg))
    assert caught.value.kind == "pruning_collapsed"
    assert "no longer depends on its input" in caught.value.message
    assert "empty layers: 3.weight" in caught.value.message
    allowed = config_from_dict({**RUN, "pruning": {**RUN["pruning"], "allow_collapse": True}})
    dataset, partition = federated_data(allowed)
    server = FederatedServer(
        allowed, dataset, InProcessPool(ClientRuntime(allowed, dataset, partition))
    )
    summary = server.prune()
    assert summary["empty_layers"] == ["3.weight"]
    assert any("layers pruned whole: 3.weight" in w for w in summary["pruning_warnings"])
    server.run_round(0)  # and it trains
