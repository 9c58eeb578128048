"""Normalisation and activation choices that suit zeroth-order training.

BAFFLE's recipe: GroupNorm without affine parameters (nothing extra to estimate) or no
normalisation, and the smooth Hardswish activation. ``batch`` is BatchNorm that always uses
the batch's own statistics (no running buffers): a federated model is then only its
parameters, and a perturbed forward pass does not change any state.
"""

from __future__ import annotations

from torch import nn


def make_norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "group":
        g = groups if channels % groups == 0 else 1
        return nn.GroupNorm(g, channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, track_running_stats=False)
    raise ValueError(f"model.norm: unknown {kind!r}")


def make_activation(kind: str) -> nn.Module:
    if kind == "hardswish":
        return nn.Hardswish()
    if kind == "relu":
        return nn.ReLU()
    raise ValueError(f"model.activation: unknown {kind!r}")
