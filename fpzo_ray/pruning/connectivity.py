"""Whether a mask leaves a network that still computes something (plain PyTorch).

Foresight pruning at high sparsity can disconnect a network: SynFlow set a MobileNetV3's
classifier layers to density 0, NTK-SAP removed squeeze-excitation layers whole. And a mask
can "remove" weights that never meet data: at 32x32 input a ResNet-18's last stage sees 1x1
feature maps, so eight of the nine taps of its 3x3 kernels only ever multiply padding; three
methods pruned exactly those, and "50 %" removed nothing that mattered. Both are found here
without data, from the gradients of a random projection of the output:

- **collapse**: the output's gradient with respect to the input is exactly zero for random
  inputs under the mask (the output no longer depends on the input);
- **unused weights**: prunable weights whose gradient is exactly zero for random inputs at
  randomly perturbed dense weights (a structural zero, not a zero-initialised layer's);
- **empty layers**: prunable layers the mask keeps nothing of.

A model whose output has no gradient with respect to its input even dense (one that reads
token ids, rounded from its float inputs) cannot be checked this way: :func:`check_connectivity`
then says so (``checked`` False) and finds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.pruning.masks import Mask

#: Random inputs (a batch of this many, drawn twice) the checks take their gradients at.
PROBE_BATCH = 4
PROBE_DRAWS = 2


@dataclass(frozen=True)
class Connectivity:
    """What :func:`check_connectivity` found for a mask."""

    empty_layers: tuple[str, ...]  # prunable layers at density 0
    collapsed: bool  # the masked output does not depend on the input
    unused: torch.Tensor  # bool over the prunable coordinates: never see data
    removed: int  # prunable coordinates the mask removes
    removed_unused: int  # of them, unused ones
    checked: bool = True  # False: the dense output has no input gradient, nothing was judged

    @property
    def effective_sparsity(self) -> float:
        """The fraction of the weights that meet data that the mask removes."""
        used = int((~self.unused).sum())
        return (self.removed - self.removed_unused) / used if used else 0.0

    def warnings(self, what: str, layout: ParameterLayout, input_shape: Sequence[int]) -> list[str]:
        """One line per finding short of collapse, each starting with ``what``."""
        lines = []
        if self.empty_layers:
            lines.append(f"{what}: layers pruned whole: {', '.join(self.empty_layers)}")
        if self.removed_unused:
            layers = list(unused_layers(layout, self.unused).items())
            named = ", ".join(f"{name} {share:.0%}" for name, share in layers[:4])
            more = f" and {len(layers) - 4} more layers" if len(layers) > 4 else ""
            lines.append(
                f"{what}: {self.removed_unused} of the {self.removed} removed weights never "
                f"meet data at input {'x'.join(map(str, input_shape))} (in {named}{more}); "
                f"among the weights that do, the sparsity is {self.effective_sparsity:.3f}"
            )
        return lines


def _params(
    model: nn.Module, layout: ParameterLayout, flat: torch.Tensor
) -> dict[str, torch.Tensor]:
    return {
        slot.name: flat[slot.offset : slot.offset + slot.numel].view(slot.shape)
        for slot in layout.slots
    }


def _probe(
    model: nn.Module,
    layout: ParameterLayout,
    flat: torch.Tensor,
    x: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """A random projection of the model's output at parameters ``flat`` on ``x``."""
    out = functional_call(model, _params(model, layout, flat), (x,))
    if not isinstance(out, torch.Tensor):  # a model returning a structure: its logits
        out = getattr(out, "logits", out[0])
    weights = torch.randn(out.shape, generator=generator, dtype=out.dtype).to(out.device)
    return (out * weights).sum()


def check_connectivity(
    model: nn.Module,
    layout: ParameterLayout,
    initial: torch.Tensor,
    mask: Mask,
    input_shape: Sequence[int],
    seed: int = 0,
) -> Connectivity:
    """Check ``mask`` on ``model`` (parameters ``initial``, a flat vector) at random inputs
    of ``input_shape`` (see the module docstring); the model takes real-valued inputs (token
    ids have no gradient: such a model is not checked). The model is left as it was."""
    if not _reads_its_input(model, layout, initial, input_shape, seed):
        return Connectivity((), False, torch.zeros(0, dtype=torch.bool), 0, 0, checked=False)
    generator = torch.Generator().manual_seed(seed)
    device = initial.device
    unused_grad = torch.zeros(layout.total, dtype=torch.float64)
    input_grad = 0.0
    kept = mask.kept_flat().to(device=device, dtype=initial.dtype)
    was_training = model.training
    model.eval()  # fixed normalisation statistics: a batch's own would couple the samples
    try:
        for _ in range(PROBE_DRAWS):
            x = torch.randn((PROBE_BATCH, *input_shape), generator=generator).to(device)
            # dense, perturbed: a zero-initialised layer must not pass for a structural zero
            noise = torch.randn(initial.shape, generator=generator).to(device)
            dense = (initial + 0.01 * noise).detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(_probe(model, layout, dense, x, generator), dense)
            unused_grad += grad.detach().abs().double().cpu()
            x.requires_grad_(True)
            masked = (initial * kept).detach()
            probe = _probe(model, layout, masked, x, generator)
            if probe.requires_grad:  # else nothing of the input reaches the output
                (grad_x,) = torch.autograd.grad(probe, x, allow_unused=True)
                input_grad += 0.0 if grad_x is None else float(grad_x.abs().sum())
    finally:
        model.train(was_training)
    unused = unused_grad[layout.prunable_positions()] == 0
    removed = ~mask.prunable_kept
    return Connectivity(
        empty_layers=tuple(n for n, d in mask.layer_densities().items() if d == 0.0),
        collapsed=input_grad == 0.0,
        unused=unused,
        removed=int(removed.sum()),
        removed_unused=int((removed & unused).sum()),
    )


def _reads_its_input(
    model: nn.Module,
    layout: ParameterLayout,
    initial: torch.Tensor,
    input_shape: Sequence[int],
    seed: int,
) -> bool:
    """Whether the dense model's output has a gradient with respect to its input."""
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn((PROBE_BATCH, *input_shape), generator=generator).to(initial.device)
    x.requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        probe = _probe(model, layout, initial.detach(), x, generator)
        if not probe.requires_grad:
            return False
        (grad_x,) = torch.autograd.grad(probe, x, allow_unused=True)
    finally:
        model.train(was_training)
    return grad_x is not None and bool(grad_x.abs().sum() > 0)


def unused_layers(layout: ParameterLayout, unused: torch.Tensor) -> dict[str, float]:
    """Per prunable layer with unused weights, the fraction of its weights that are."""
    out, start = {}, 0
    for slot in layout.prunable_slots:
        part = unused[start : start + slot.numel]
        start += slot.numel
        if bool(part.any()):
            out[slot.name] = float(part.float().mean())
    return out
