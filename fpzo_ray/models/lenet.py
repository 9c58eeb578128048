"""LeNet-5 (61.7k parameters on 28x28 inputs), with ZO-friendly norm/activation options."""

from __future__ import annotations

from torch import nn

from fpzo_ray.models.layers import make_activation, make_norm
from fpzo_ray.models.staged import StagedModel, flat_features


class LeNet5(StagedModel):
    """LeNet-5 (61.7k parameters) with GroupNorm and Hardswish by default (BAFFLE's recipe)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        norm: str = "group",
        norm_groups: int = 2,
        activation: str = "hardswish",
    ) -> None:
        features = [
            nn.Sequential(
                nn.Conv2d(input_shape[0], 6, 5, padding=2),
                make_norm(norm, 6, norm_groups),
                make_activation(activation),
                nn.MaxPool2d(2),
            ),
            nn.Sequential(
                nn.Conv2d(6, 16, 5),
                make_norm(norm, 16, norm_groups),
                make_activation(activation),
                nn.MaxPool2d(2),
            ),
        ]
        width = flat_features(features, input_shape)
        super().__init__(
            [
                *features,
                nn.Sequential(nn.Flatten(), nn.Linear(width, 120), make_activation(activation)),
                nn.Sequential(nn.Linear(120, 84), make_activation(activation)),
                nn.Linear(84, num_classes),
            ]
        )
