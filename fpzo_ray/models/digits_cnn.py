"""A ~1.9k-parameter CNN for 8x8 digits: two 3x3 convolutions and one linear layer."""

from __future__ import annotations

from torch import nn

from fpzo_ray.models.layers import make_activation, make_norm
from fpzo_ray.models.staged import StagedModel, flat_features


class DigitsCNN(StagedModel):
    """A 1.9k-parameter CNN for the 8x8 digits: two conv stages and a linear head."""

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        num_classes: int = 10,
        norm: str = "group",
        norm_groups: int = 2,
        activation: str = "hardswish",
    ) -> None:
        features = [
            nn.Sequential(
                nn.Conv2d(input_shape[0], 8, 3, padding=1),
                make_norm(norm, 8, norm_groups),
                make_activation(activation),
                nn.MaxPool2d(2),
            ),
            nn.Sequential(
                nn.Conv2d(8, 16, 3, padding=1),
                make_norm(norm, 16, norm_groups),
                make_activation(activation),
                nn.MaxPool2d(2),
            ),
        ]
        head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat_features(features, input_shape), num_classes)
        )
        super().__init__([*features, head])
