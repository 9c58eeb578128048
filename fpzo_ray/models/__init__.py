"""Model registry: ``build_model`` turns a configuration into a fresh ``nn.Module``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fpzo_ray.config import RunConfig
from fpzo_ray.models.digits_cnn import DigitsCNN
from fpzo_ray.models.flat import ParameterLayout, bind_flat_buffer, layout_of
from fpzo_ray.models.lenet import LeNet5
from fpzo_ray.models.resnet import ResNet18, ResNet20
from fpzo_ray.models.staged import StagedModel

MODEL_CLASSES: dict[str, Callable[..., StagedModel]] = {
    "digits_cnn": DigitsCNN,
    "lenet5": LeNet5,
    "resnet20": ResNet20,
    "resnet18": ResNet18,
}


def build_model(
    cfg: RunConfig, input_shape: Sequence[int], num_classes: int, init_seed: int | None = None
) -> StagedModel:
    """A new model; with ``init_seed`` its initial weights are a function of that seed only."""
    if init_seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return build_model(cfg, input_shape, num_classes)
    cls = MODEL_CLASSES[cfg.model_name]
    c, h, w = (int(v) for v in input_shape)
    return cls(
        input_shape=(c, h, w),
        num_classes=num_classes,
        norm=cfg.model.norm,
        norm_groups=cfg.model.norm_groups,
        activation=cfg.model.activation,
    )


from fpzo_ray.models.pruned import load_pruned  # noqa: E402 - it needs build_model

__all__ = [
    "MODEL_CLASSES",
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
