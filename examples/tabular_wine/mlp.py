"""A multilayer perceptron for tabular inputs, named in ``sweep.yaml`` as ``mlp:build``."""

from __future__ import annotations

from torch import nn


def build(
    input_shape: tuple[int, ...], num_classes: int, hidden: int = 32, depth: int = 2
) -> nn.Module:
    """``depth`` hidden layers of ``hidden`` units with ReLU, then a linear head."""
    (features,) = input_shape
    layers: list[nn.Module] = []
    width = features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, num_classes))
