"""A ~1.9k-parameter CNN for 8x8 digits: two 3x3 convolutions and one linear layer."""

from __future__ import annotations

import torch
from torch import nn

from fpzo_ray.models.layers import make_activation, make_norm


class DigitsCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, norm: str = "group",
                 norm_groups: int = 2, activation: str = "hardswish") -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), make_norm(norm, 8, norm_groups),
            make_activation(activation), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), make_norm(norm, 16, norm_groups),
            make_activation(activation), nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(16 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
