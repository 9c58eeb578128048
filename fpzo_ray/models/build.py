"""``build_model``: a configuration's model, registered or named by import path, its
initial weights a function of a seed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fpzo_ray.config import RunConfig
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
