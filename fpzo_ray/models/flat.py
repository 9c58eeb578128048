"""One flat parameter buffer per model.

ZO training perturbs, restores and updates *all* trained coordinates several times per step.
With every parameter a view into one contiguous buffer, each of those is a single vector
operation (``index_copy_`` over the kept coordinates) instead of a Python loop over tensors,
and a mask, a perturbation or an update is just a vector in the same coordinates.

Any ``nn.Module`` works. The buffer holds its *parameters* (``named_parameters``, each
distinct tensor once: a parameter shared by several modules, a tied weight, has one slot
under its first name and stays shared). Its *buffers* (``named_buffers``: running statistics,
fixed positional encodings, masks) are not in the flat buffer: they are neither perturbed nor
trained nor pruned, and stay what the module holds.

The *prunable* coordinates are the weights of linear layers and convolutions
(:data:`PRUNABLE_MODULES`, subclasses included: an attention's q/k/v/out projection built
from ``nn.Linear`` is prunable), plus any parameter a module lists by name in its attribute
``prunable_parameters`` (e.g. ``prunable_parameters = ("pos_embedding",)`` on a ViT; names
relative to that module). Biases, normalisation parameters and other parameters are never
pruned (docs/METHOD.md); they are always trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: Modules whose ``weight`` is prunable (subclasses count).
PRUNABLE_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: The attribute by which a module lists further prunable parameters (names relative to it).
PRUNABLE_ATTRIBUTE = "prunable_parameters"


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
    #: (alias, name): a tied parameter's other names, each with the slot name it shares.
    aliases: tuple[tuple[str, str], ...] = ()

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
        slots = self.prunable_slots
        if not slots:
            return torch.zeros(0, dtype=torch.int64)
        return torch.cat([torch.arange(s.offset, s.offset + s.numel) for s in slots])


def _listed_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters named by the modules' ``prunable_parameters`` attributes."""
    listed = []
    for path, module in model.named_modules():
        names = getattr(module, PRUNABLE_ATTRIBUTE, None)
        if names is None:
            continue
        for name in (names,) if isinstance(names, str) else tuple(names):
            try:
                listed.append(module.get_parameter(name))
            except AttributeError:
                owner = f"{type(module).__name__} at {path}" if path else type(module).__name__
                raise ValueError(
                    f"{owner}.{PRUNABLE_ATTRIBUTE} names {name!r}, which is not one of its "
                    "parameters"
                ) from None
    return listed


def prunable_parameters(model: nn.Module) -> set[int]:
    """The ``id`` of every prunable parameter tensor of ``model`` (see the module docstring)."""
    found = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, PRUNABLE_MODULES) and isinstance(module.weight, nn.Parameter)
    }
    return found | {id(param) for param in _listed_parameters(model)}


def layout_of(model: nn.Module) -> ParameterLayout:
    """The flat layout of ``model``'s parameters (``named_parameters`` order, tied ones once).

    Raises ValueError when a ``prunable_parameters`` attribute names no parameter.
    """
    prunable = prunable_parameters(model)
    slots, offset, names = [], 0, {}
    for name, param in model.named_parameters():
        names[id(param)] = name
        slots.append(
            ParameterSlot(name, offset, param.numel(), tuple(param.shape), id(param) in prunable)
        )
        offset += param.numel()
    aliases = tuple(
        (name, names[id(param)])
        for name, param in model.named_parameters(remove_duplicate=False)
        if names[id(param)] != name
    )
    return ParameterLayout(tuple(slots), aliases)


def bind_flat_buffer(model: nn.Module) -> tuple[torch.Tensor, ParameterLayout]:
    """Move the model's parameters into one flat buffer and make each parameter a view of it.

    Returns the buffer (writes to it change the model) and the layout. A tied parameter is one
    ``nn.Parameter`` object held by several modules: it gets one slot, and rebinding its data
    keeps every holder reading the same view. Buffers are left where they are (see the module
    docstring). The buffer takes the dtype and device of the first parameter.
    """
    layout = layout_of(model)
    params = dict(model.named_parameters())
    if not params:
        raise ValueError(f"{type(model).__name__} has no parameters to train")
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
