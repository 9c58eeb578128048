"""Masks over the prunable coordinates of a model, and how they travel.

A mask is a boolean vector over the *prunable* coordinates (linear and convolution weights,
and the parameters a module lists in ``prunable_parameters``; ``models.flat``), in layout
order, of any ``nn.Module``: nothing here knows stages or layer types, a "layer" is one
prunable parameter tensor (a layout slot). Non-prunable coordinates (biases, normalisation
parameters, other parameters) are always trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fpzo_ray.accounting.communication import mask_position_bytes
from fpzo_ray.accounting.memory import sparse_storage_bytes
from fpzo_ray.models.flat import ParameterLayout


@dataclass(frozen=True)
class Mask:
    """Which prunable coordinates survive (a bool vector in layout order), and its costs."""

    layout: ParameterLayout
    prunable_kept: torch.Tensor  # bool, length layout.num_prunable

    def __post_init__(self) -> None:
        if self.prunable_kept.dtype != torch.bool or self.prunable_kept.shape != (
            self.layout.num_prunable,
        ):
            raise ValueError("prunable_kept must be a bool vector over the prunable coordinates")

    @classmethod
    def dense(cls, layout: ParameterLayout) -> Mask:
        return cls(layout, torch.ones(layout.num_prunable, dtype=torch.bool))

    @property
    def num_kept_prunable(self) -> int:
        return int(self.prunable_kept.sum())

    @property
    def density(self) -> float:
        """Kept fraction of the prunable weights."""
        return self.num_kept_prunable / max(1, self.layout.num_prunable)

    @property
    def is_dense(self) -> bool:
        return bool(self.prunable_kept.all())

    def kept_flat(self) -> torch.Tensor:
        """Bool vector over the whole flat buffer: prunable coordinates as masked, others kept."""
        kept = torch.ones(self.layout.total, dtype=torch.bool)
        kept[self.layout.prunable_positions()] = self.prunable_kept
        return kept

    def kept_index(self) -> torch.Tensor:
        """Flat-buffer indices of the trained coordinates (``int64``, ascending)."""
        return torch.nonzero(self.kept_flat(), as_tuple=False).squeeze(1)

    @property
    def num_trained(self) -> int:
        """d, the number of coordinates that ZO training perturbs and updates."""
        return self.layout.total - self.layout.num_prunable + self.num_kept_prunable

    def layer_densities(self) -> dict[str, float]:
        out, start = {}, 0
        for slot in self.layout.prunable_slots:
            part = self.prunable_kept[start : start + slot.numel]
            out[slot.name] = float(part.float().mean())
            start += slot.numel
        return out

    def fan_in_rescaled(self, flat_weights: torch.Tensor) -> torch.Tensor:
        """``flat_weights`` with each prunable layer's weights divided by sqrt(its density).

        A layer that keeps a fraction q of its weights sees its output variance at
        initialisation shrink by q; rescaling restores the dense layer's signal propagation
        (the sparse-aware initialisation of Evci et al., 2022). At 90 % sparsity on LeNet-5
        this took ZO training from 44 % to 78 % test accuracy after 100 rounds (MNIST).
        Pruned coordinates are returned as given (the caller zeroes or drops them).
        """
        out = flat_weights.clone()
        densities = self.layer_densities()
        for slot in self.layout.prunable_slots:
            if densities[slot.name] > 0:
                out[slot.offset : slot.offset + slot.numel] /= densities[slot.name] ** 0.5
        return out

    def wire_bytes(self) -> int:
        """Bytes to send this mask: a bitmap or a list of 4-byte indices, whichever is smaller.

        A dense mask costs nothing: the client trains everything.
        """
        return mask_position_bytes(self.num_kept_prunable, self.layout.num_prunable)

    def stored_bytes(self) -> int:
        """Bytes of a model under this mask stored sparsely: the d trained values and the
        mask (``accounting.memory.sparse_storage_bytes``)."""
        return sparse_storage_bytes(
            self.num_kept_prunable,
            self.layout.num_prunable,
            self.layout.total - self.layout.num_prunable,
        )


def keep_top_k(scores: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` eligible coordinates with the largest scores, as a bool vector.

    Ties are broken by position (a stable sort), so the result is a function of the scores
    only; ineligible coordinates (already pruned) never come back.
    """
    if not 0 <= k <= int(eligible.sum()):
        raise ValueError(f"cannot keep {k} of {int(eligible.sum())} eligible coordinates")
    masked = torch.where(
        eligible, scores.double(), torch.tensor(float("-inf"), dtype=torch.float64)
    )
    order = torch.sort(masked, descending=True, stable=True).indices
    kept = torch.zeros_like(eligible)
    kept[order[:k]] = True
    return kept


def kept_count(num_prunable: int, density: float) -> int:
    """How many prunable weights a density keeps (rounded to the nearest, at least one)."""
    return max(1, min(num_prunable, round(density * num_prunable)))


def random_mask(layout: ParameterLayout, density: float, generator: torch.Generator) -> Mask:
    """Uniformly random global mask keeping exactly ``kept_count(P, density)`` weights."""
    p = layout.num_prunable
    order = torch.randperm(p, generator=generator)
    kept = torch.zeros(p, dtype=torch.bool)
    kept[order[: kept_count(p, density)]] = True
    return Mask(layout, kept)
