"""Analytical FLOPs of the weighted layers (convolutions and linear layers).

A multiply-add counts as 2 FLOPs, the convention of ``torch.utils.flop_counter``, which the
tests cross-check. Under a mask, a layer's multiply-adds scale with its kept fraction (a
sparse kernel skips the pruned weights); bias additions are always paid. Element-wise work
(normalisation, activations, pooling) is not counted, as in FlopCounterMode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class LayerFlops:
    name: str  # the weight's parameter name, e.g. "features.0.weight"
    multiply_adds: int  # per sample, dense
    bias_adds: int  # per sample


def layer_flops(model: nn.Module, input_shape: Sequence[int]) -> list[LayerFlops]:
    """Per-sample multiply-adds of each conv / linear layer, found by one traced forward."""
    found: list[LayerFlops] = []
    hooks = []

    def hook_for(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            out_elems = output[0].numel()  # per sample
            if isinstance(module, nn.Conv2d):
                per_output = (module.in_channels // module.groups) * module.kernel_size[0] * \
                    module.kernel_size[1]
            else:
                per_output = module.in_features
            bias = out_elems if module.bias is not None else 0
            found.append(LayerFlops(f"{name}.weight", out_elems * per_output, bias))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook_for(name)))
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in hooks:
            h.remove()
    return found


def forward_flops(layers: Sequence[LayerFlops],
                  layer_density: Mapping[str, float] | None = None) -> int:
    """FLOPs of one forward pass of one sample; dense when ``layer_density`` is None."""
    total = 0.0
    for layer in layers:
        density = 1.0 if layer_density is None else layer_density.get(layer.name, 1.0)
        total += 2 * layer.multiply_adds * density + layer.bias_adds
    return int(round(total))
