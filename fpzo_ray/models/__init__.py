"""Models: ``build_model`` turns a configuration into a fresh ``nn.Module``.

The registered architectures are ``fpzo_ray.registry.MODELS``; a researcher's is any
``nn.Module`` returned by ``build(input_shape, num_classes, **model.args)``, or by a zoo's
keyword-only builder (``torchvision.models:resnet18`` with ``model.kwargs``), named by its
import path in ``model.target`` (``docs/EXTENDING.md``, ``registry.model_call``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fpzo_ray.config import RunConfig
from fpzo_ray.models.digits_cnn import DigitsCNN
from fpzo_ray.models.flat import ParameterLayout, bind_flat_buffer, layout_of
from fpzo_ray.models.lenet import LeNet5
from fpzo_ray.models.resnet import ResNet18, ResNet20
from fpzo_ray.models.staged import StagedModel
from fpzo_ray.registry import MODELS, import_target, model_call


def build_model(
    cfg: RunConfig, input_shape: Sequence[int], num_classes: int, init_seed: int | None = None
) -> nn.Module:
    """A new model; with ``init_seed`` its initial weights are a function of that seed only."""
    if init_seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return build_model(cfg, input_shape, num_classes)
    shape = tuple(int(v) for v in input_shape)
    if cfg.model.target:
        build = import_target(cfg.model.target)
        args, kwargs = model_call(build, shape, int(num_classes), cfg.model.args, cfg.model.kwargs)
        model = build(*args, **kwargs)
        if not isinstance(model, nn.Module) or not any(True for _ in model.parameters()):
            raise TypeError(
                f"model.target: {cfg.model.target} returned {type(model).__name__}, "
                "not an nn.Module with parameters"
            )
        return model
    model = MODELS.load(cfg.model_name)(
        input_shape=shape,
        num_classes=num_classes,
        norm=cfg.model.norm,
        norm_groups=cfg.model.norm_groups,
        activation=cfg.model.activation,
    )
    assert isinstance(model, nn.Module)
    return model


from fpzo_ray.models.pruned import load_pruned  # noqa: E402 - it needs build_model

__all__ = [
    "build_model",
    "load_pruned",
    "DigitsCNN",
    "LeNet5",
    "ResNet20",
    "ResNet18",
    "StagedModel",
    "ParameterLayout",
    "bind_flat_buffer",
    "layout_of",
]
