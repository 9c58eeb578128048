"""LeNet-5 for 28x28 images (61.7k parameters), with ZO-friendly norm/activation options."""

from __future__ import annotations

import torch
from torch import nn

from fpzo_ray.models.layers import make_activation, make_norm


class LeNet5(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, norm: str = "group",
                 norm_groups: int = 2, activation: str = "hardswish") -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), make_norm(norm, 6, norm_groups),
            make_activation(activation), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), make_norm(norm, 16, norm_groups),
            make_activation(activation), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), make_activation(activation),
            nn.Linear(120, 84), make_activation(activation),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
