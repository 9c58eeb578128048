"""Models from the ecosystem named by import path: a zoo's keyword-only builders
(torchvision's) are called with keywords, the number of classes filled in."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fpzo_ray.config import ConfigError, config_from_dict
from fpzo_ray.models import build_model
from fpzo_ray.registry import model_call

CIFAR_SHAPE = (3, 32, 32)


def _config(model: dict):
    return config_from_dict({"data": {"target": "extension_targets:blobs"}, "model": model})


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_a_torchvision_builder_is_named_by_its_import_path(name):
    cfg = _config({"target": f"torchvision.models:{name}"})  # checked: it binds
    model = build_model(cfg, CIFAR_SHAPE, 7)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    model.eval()
    assert model(torch.zeros(2, *CIFAR_SHAPE)).shape == (2, 7)  # num_classes filled in


def test_model_kwargs_are_passed_as_keywords_and_win_over_the_filled_in_values():
    cfg = _config({"target": "torchvision.models:resnet18", "kwargs": {"num_classes": 3}})
    assert build_model(cfg, CIFAR_SHAPE, 10).fc.out_features == 3
    cfg = _config({"target": "torchvision.models:resnet18", "kwargs": {"zero_init_residual": True}})
    model = build_model(cfg, CIFAR_SHAPE, 10)
    assert model.fc.out_features == 10
    assert all(not b.bn2.weight.detach().any() for b in model.layer1)


def test_the_projects_form_stays_positional_and_input_shape_is_filled_in_by_name():
    def ours(input_shape, num_classes, hidden=4):
        return input_shape, num_classes, hidden

    assert model_call(ours, (1, 8, 8), 10, {"hidden": 5}, None) == (((1, 8, 8), 10), {"hidden": 5})

    def keywords_only(*, input_shape, num_classes, width=2):
        return input_shape, num_classes, width

    assert model_call(keywords_only, (1, 8, 8), 10, None, {"width": 3}) == (
        (),
        {"width": 3, "num_classes": 10, "input_shape": (1, 8, 8)},
    )

    def no_classes(*, depth=2):
        return depth

    assert model_call(no_classes, (1, 8, 8), 10, None, None) == ((), {})


def test_a_keyword_that_the_builder_does_not_take_is_one_line_naming_the_field():
    with pytest.raises(ConfigError) as caught:
        config_from_dict(
            {
                "data": {"target": "extension_targets:blobs"},
                "model": {"target": "extension_targets:mlp", "kwargs": {"nope": 1}},
            }
        )
    message = str(caught.value)
    assert message.startswith("config error: model.target:") and "\n" not in message
    assert "nope" in message
