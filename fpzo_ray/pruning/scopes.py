"""Per-layer pruning scope: random layer-wise masks and layer-wise top-k.

The global top-k of :func:`fpzo_ray.pruning.masks.keep_top_k` lets a saliency move weights
between layers (and can disconnect a layer). These helpers keep the pruning *within* each
prunable layer instead:

* :func:`random_layerwise_mask` is the standard sanity-check baseline for pruning at
  initialisation (Frankle et al., "Pruning neural networks at initialization: why are we
  missing the mark?", ICLR 2021): it keeps a method's per-layer densities but shuffles the
  positions, which tests whether the method's value lies in *which* weights it keeps or only
  in *how many per layer*;
* :func:`layerwise_top_k` keeps the top fraction of every layer separately.

A "layer" is one prunable parameter tensor of the layout (a slot), whatever module holds it:
these work on any ``nn.Module`` (no stages assumed).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.pruning.masks import Mask, keep_top_k, kept_count


def random_layerwise_mask(
    layout: ParameterLayout, reference: Mask, generator: torch.Generator
) -> Mask:
    """A uniformly random mask with exactly ``reference``'s kept count in every prunable layer."""
    if reference.layout != layout:
        raise ValueError("reference mask belongs to another layout")
    kept = torch.zeros(layout.num_prunable, dtype=torch.bool)
    start = 0
    for slot in layout.prunable_slots:
        count = int(reference.prunable_kept[start : start + slot.numel].sum())
        order = torch.randperm(slot.numel, generator=generator)
        kept[start + order[:count]] = True
        start += slot.numel
    return Mask(layout, kept)


def layerwise_top_k(
    scores: torch.Tensor,
    eligible: torch.Tensor,
    layout: ParameterLayout,
    density: float | Mapping[str, float],
) -> torch.Tensor:
    """In every prunable layer, the top ``round(density * layer_numel)`` (at least one) eligible
    coordinates by score, as a bool vector over the prunable coordinates.

    ``density`` is one kept fraction for all layers or a mapping from each prunable slot's
    name to its own (fractions of the whole layer, not of its eligible part). Ties are broken
    by position (stable), as in :func:`keep_top_k`; ineligible (already pruned) coordinates
    never come back, so asking a layer for more than its eligible count is an error.
    """
    n = layout.num_prunable
    if scores.shape != (n,) or eligible.shape != (n,) or eligible.dtype != torch.bool:
        raise ValueError("scores and eligible (bool) must be vectors over the prunable coordinates")
    kept = torch.zeros(n, dtype=torch.bool)
    start = 0
    for slot in layout.prunable_slots:
        fraction = density[slot.name] if isinstance(density, Mapping) else density
        k = kept_count(slot.numel, float(fraction))
        part = slice(start, start + slot.numel)
        available = int(eligible[part].sum())
        if k > available:
            raise ValueError(f"layer {slot.name}: cannot keep {k} of {available} eligible weights")
        kept[part] = keep_top_k(scores[part], eligible[part], k)
        start += slot.numel
    return kept
