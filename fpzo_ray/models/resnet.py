"""CIFAR-style ResNets: ResNet-20 (0.27M parameters) and ResNet-18 (11.2M).

Both start with a 3x3 convolution (no max-pool), as in He et al. (2016) for CIFAR and the
usual CIFAR adaptation of ResNet-18. Each residual block is one stage of the chain.
Shortcuts that change shape use a 1x1 convolution (option B); its weight is prunable like
any convolution.
"""

from __future__ import annotations

import torch
from torch import nn

from fpzo_ray.models.layers import make_activation, make_norm
from fpzo_ray.models.staged import StagedModel


class BasicBlock(nn.Module):
    """A ResNet basic block (two 3x3 convolutions and a shortcut)."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, norm: str, groups: int, activation: str
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, planes, groups)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.norm2 = make_norm(norm, planes, groups)
        self.act2 = make_activation(activation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                make_norm(norm, planes, groups),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def _resnet(
    widths: tuple[int, ...],
    blocks_per_stage: int,
    input_shape: tuple[int, int, int],
    num_classes: int,
    norm: str,
    groups: int,
    activation: str,
) -> list[nn.Module]:
    stages: list[nn.Module] = [
        nn.Sequential(
            nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False),
            make_norm(norm, widths[0], groups),
            make_activation(activation),
        )
    ]
    in_planes = widths[0]
    for i, planes in enumerate(widths):
        for b in range(blocks_per_stage):
            stride = 2 if (i > 0 and b == 0) else 1
            stages.append(BasicBlock(in_planes, planes, stride, norm, groups, activation))
            in_planes = planes
    stages.append(
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_planes, num_classes))
    )
    return stages


class ResNet20(StagedModel):
    """ResNet-20 for 32x32 images (three stages of 16, 32, 64 channels)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        norm: str = "group",
        norm_groups: int = 2,
        activation: str = "hardswish",
    ) -> None:
        super().__init__(
            _resnet((16, 32, 64), 3, input_shape, num_classes, norm, norm_groups, activation)
        )


class ResNet18(StagedModel):
    """ResNet-18 for 32x32 images (four stages of 64 to 512 channels)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        norm: str = "group",
        norm_groups: int = 2,
        activation: str = "hardswish",
    ) -> None:
        super().__init__(
            _resnet((64, 128, 256, 512), 2, input_shape, num_classes, norm, norm_groups, activation)
        )
