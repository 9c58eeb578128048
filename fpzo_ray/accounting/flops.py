"""Analytical FLOPs: weighted layers (convolutions, linear layers) and the vector work of ZO.

A multiply-add counts as 2 FLOPs, the convention of ``torch.utils.flop_counter``, which the
tests cross-check. Under a mask, a layer's multiply-adds scale with its kept fraction (a
sparse kernel skips the pruned weights); bias additions are always paid. Element-wise work
(normalisation, activations, pooling) is not counted, as in FlopCounterMode. A backward pass
counts as twice its forward pass (gradients w.r.t. inputs and weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerFlops:
    """The dense cost of one prunable layer per sample (multiply-adds and bias adds)."""

    name: str  # the weight's parameter name, e.g. "stages.0.0.weight"
    multiply_adds: int  # per sample, dense
    bias_adds: int  # per sample

    @property
    def stage(self) -> int | None:
        """The stage of a StagedModel that holds this layer (None for other models)."""
        parts = self.name.split(".")
        return int(parts[1]) if parts[0] == "stages" else None


def layer_flops(model: nn.Module, input_shape: Sequence[int]) -> list[LayerFlops]:
    """Per-sample multiply-adds of each conv / linear layer, found by one traced forward."""
    found: list[LayerFlops] = []
    hooks = []

    def hook_for(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            out_elems = output[0].numel()  # per sample
            per_output: int
            if isinstance(module, nn.Conv2d):
                per_output = (
                    (module.in_channels // module.groups)
                    * module.kernel_size[0]
                    * module.kernel_size[1]
                )
            else:
                assert isinstance(module, nn.Linear)
                per_output = module.in_features
            bias = out_elems if module.bias is not None else 0
            found.append(LayerFlops(f"{name}.weight", out_elems * per_output, bias))

        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook_for(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros((2, *input_shape), device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return found


def _layer_forward(layer: LayerFlops, layer_density: Mapping[str, float] | None) -> float:
    density = 1.0 if layer_density is None else layer_density.get(layer.name, 1.0)
    return 2 * layer.multiply_adds * density + layer.bias_adds


def forward_flops(
    layers: Sequence[LayerFlops], layer_density: Mapping[str, float] | None = None
) -> int:
    """FLOPs of one forward pass of one sample; dense when ``layer_density`` is None."""
    return int(round(sum(_layer_forward(layer, layer_density) for layer in layers)))


def stage_forward_flops(
    layers: Sequence[LayerFlops], num_stages: int, layer_density: Mapping[str, float] | None = None
) -> list[int]:
    """Per-sample forward FLOPs of each stage of a StagedModel."""
    per_stage = [0.0] * num_stages
    for layer in layers:
        if layer.stage is not None:
            per_stage[layer.stage] += _layer_forward(layer, layer_density)
    return [int(round(f)) for f in per_stage]


def zo_vector_flops(num_directions: int, dim: int, central: bool, with_estimate: bool) -> int:
    """Work over the trained coordinates of one ZO step, besides the forward passes.

    Per direction: drawing it (counted 1 FLOP a coordinate), forming w + s z (2; twice for
    central differences) and, when the client keeps its estimate (FedAvg), accumulating it (2).
    """
    per_direction = 1 + (4 if central else 2) + (2 if with_estimate else 0)
    return num_directions * per_direction * dim


def update_flops(dim: int) -> int:
    """A client SGD step over the trained coordinates (w -= lr * g)."""
    return 2 * dim


def bp_step_flops(batch_size: int, forward_flops_per_sample: int, dim: int) -> int:
    """Forward + backward (2x forward) on a batch, plus the SGD update."""
    return 3 * batch_size * forward_flops_per_sample + update_flops(dim)
