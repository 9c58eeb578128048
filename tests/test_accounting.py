import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fpzo_ray.accounting import forward_flops, layer_flops
from fpzo_ray.config import config_from_dict
from fpzo_ray.models import build_model


@pytest.mark.parametrize(
    "dataset, shape, name",
    [
        ("digits", (1, 8, 8), "auto"),
        ("mnist", (1, 28, 28), "auto"),
        ("cifar10", (3, 32, 32), "resnet20"),
        ("cifar10", (3, 32, 32), "resnet18"),
    ],
)
def test_dense_flops_match_torch_flop_counter(dataset, shape, name):
    model = build_model(
        config_from_dict({"data": {"name": dataset}, "model": {"name": name}}),
        shape,
        10,
        init_seed=0,
    )
    layers = layer_flops(model, shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(4, *shape))
    ours = 4 * sum(2 * layer.multiply_adds for layer in layers)
    assert ours == counter.get_total_flops()  # both count 2 FLOPs per multiply-add
    assert forward_flops(layers) == sum(
        2 * layer.multiply_adds + layer.bias_adds for layer in layers
    )


def test_lenet5_flops_by_hand():
    model = build_model(config_from_dict({"data": {"name": "mnist"}}), (1, 28, 28), 10, init_seed=0)
    macs = {layer.name: layer.multiply_adds for layer in layer_flops(model, (1, 28, 28))}
    assert macs["stages.0.0.weight"] == 6 * 28 * 28 * 25
    assert macs["stages.1.0.weight"] == 16 * 10 * 10 * 6 * 25
    assert macs["stages.2.1.weight"] == 400 * 120


def test_sparse_flops_scale_with_layer_density():
    model = build_model(config_from_dict({}), (1, 8, 8), 10, init_seed=0)
    layers = layer_flops(model, (1, 8, 8))
    half = forward_flops(layers, {layer.name: 0.5 for layer in layers})
    bias = sum(layer.bias_adds for layer in layers)
    assert half - bias == (forward_flops(layers) - bias) // 2
