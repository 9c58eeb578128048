"""The iterative pruning protocol: exponential schedule and top-k (no Ray here).

After iteration ``t`` of ``T`` the kept fraction is ``density ** (t / T)`` (T = 1: one-shot).
In each iteration the keep-scores of the currently kept weights are gathered (from clients,
or centrally), and the top-k survive: over all prunable layers (``global`` scope) or within
each layer at the same fraction (``layer`` scope).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fpzo_ray.pruning.masks import Mask, keep_top_k, kept_count
from fpzo_ray.pruning.scopes import layerwise_top_k

#: Returns the keep-score (higher = keep) of every prunable coordinate given the iteration
#: and the current mask.
SaliencyRound = Callable[[int, Mask], torch.Tensor]


def kept_fractions(density: float, iterations: int) -> list[float]:
    """The exponential schedule ``density ** (t / T)`` for ``t = 1..T``."""
    return [density ** (t / iterations) for t in range(1, iterations + 1)]


def prune_iteratively(
    start: Mask,
    density: float,
    iterations: int,
    saliency_round: SaliencyRound,
    scope: str = "global",
) -> Mask:
    """Shrink ``start`` to ``density`` in ``iterations`` steps of top-k."""
    mask = start
    for t, fraction in enumerate(kept_fractions(density, iterations)):
        scores = saliency_round(t, mask)
        if scope == "layer":
            kept = layerwise_top_k(scores, mask.prunable_kept, mask.layout, fraction)
        else:
            kept = keep_top_k(
                scores, mask.prunable_kept, kept_count(mask.layout.num_prunable, fraction)
            )
        mask = Mask(mask.layout, kept)
    return mask
