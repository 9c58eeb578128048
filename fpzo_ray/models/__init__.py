"""Model registry: ``build_model`` turns a configuration into a fresh ``nn.Module``."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from fpzo_ray.config import RunConfig
from fpzo_ray.models.digits_cnn import DigitsCNN
from fpzo_ray.models.flat import ParameterLayout, bind_flat_buffer, layout_of
from fpzo_ray.models.lenet import LeNet5

MODEL_CLASSES: dict[str, Callable[..., nn.Module]] = {
    "digits_cnn": DigitsCNN,
    "lenet5": LeNet5,
}


def build_model(cfg: RunConfig, in_channels: int, num_classes: int,
                init_seed: int | None = None) -> nn.Module:
    """A new model; with ``init_seed`` its initial weights are a function of that seed only."""
    if init_seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return build_model(cfg, in_channels, num_classes)
    cls = MODEL_CLASSES[cfg.model_name]
    return cls(in_channels=in_channels, num_classes=num_classes, norm=cfg.model.norm,
               norm_groups=cfg.model.norm_groups, activation=cfg.model.activation)


__all__ = ["MODEL_CLASSES", "build_model", "DigitsCNN", "LeNet5", "ParameterLayout",
           "bind_flat_buffer", "layout_of"]
