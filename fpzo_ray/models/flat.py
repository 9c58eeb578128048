"""One flat parameter buffer per model.

ZO training perturbs, restores and updates *all* trained coordinates several times per step.
With every parameter a view into one contiguous buffer, each of those is a single vector
operation (``index_copy_`` over the kept coordinates) instead of a Python loop over tensors,
and a mask, a perturbation or an update is just a vector in the same coordinates.

The *prunable* coordinates are the weights of convolutions and linear layers; biases and
normalisation parameters are never pruned (docs/METHOD.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PRUNABLE_MODULES = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class ParameterSlot:
    """Where one parameter tensor lives in the flat buffer."""

    name: str
    offset: int
    numel: int
    shape: tuple[int, ...]
    prunable: bool


@dataclass(frozen=True)
class ParameterLayout:
    """The flat-buffer layout of a model architecture (identical for every copy of it)."""

    slots: tuple[ParameterSlot, ...]

    @property
    def total(self) -> int:
        return sum(s.numel for s in self.slots)

    @property
    def prunable_slots(self) -> tuple[ParameterSlot, ...]:
        return tuple(s for s in self.slots if s.prunable)

    @property
    def num_prunable(self) -> int:
        return sum(s.numel for s in self.prunable_slots)

    def prunable_positions(self) -> torch.Tensor:
        """Indices into the flat buffer of the prunable coordinates, in layout order."""
        return torch.cat([torch.arange(s.offset, s.offset + s.numel) for s in self.prunable_slots])


def layout_of(model: nn.Module) -> ParameterLayout:
    prunable = {
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_MODULES)
    }
    slots, offset = [], 0
    for name, param in model.named_parameters():
        slots.append(
            ParameterSlot(name, offset, param.numel(), tuple(param.shape), name in prunable)
        )
        offset += param.numel()
    return ParameterLayout(tuple(slots))


def bind_flat_buffer(model: nn.Module) -> tuple[torch.Tensor, ParameterLayout]:
    """Move the model's parameters into one flat buffer and make each parameter a view of it.

    Returns the buffer (writes to it change the model) and the layout.
    """
    layout = layout_of(model)
    params = dict(model.named_parameters())
    first = next(iter(params.values()))
    flat = torch.empty(layout.total, dtype=first.dtype, device=first.device)
    with torch.no_grad():
        for slot in layout.slots:
            view = flat[slot.offset : slot.offset + slot.numel].view(slot.shape)
            view.copy_(params[slot.name])
            params[slot.name].data = view
    return flat, layout


def read_trained(flat: torch.Tensor, kept_index: torch.Tensor | None) -> torch.Tensor:
    """A copy of the trained coordinates (all of them when ``kept_index`` is None)."""
    return (flat if kept_index is None else flat[kept_index]).detach().clone()


def write_trained(
    flat: torch.Tensor, kept_index: torch.Tensor | None, values: torch.Tensor
) -> None:
    """Write ``values`` into the trained coordinates, in place (pruned ones untouched)."""
    with torch.no_grad():
        if kept_index is None:
            flat.copy_(values)
        else:
            flat.index_copy_(0, kept_index, values.to(flat.device))
