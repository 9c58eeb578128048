"""The iterative pruning protocol: exponential schedule and global top-k (no Ray here).

After iteration ``t`` of ``T`` the kept fraction is ``density ** (t / T)``. In each iteration
the saliencies of the currently kept weights are gathered (from clients, or centrally), and
the top-k of them over all prunable layers survive.
"""

from __future__ import annotations

from typing import Callable

import torch

from fpzo_ray.pruning.masks import Mask, keep_top_k, kept_count

#: Returns the saliency of every prunable coordinate given the current mask and iteration.
SaliencyRound = Callable[[int, Mask], torch.Tensor]


def kept_fractions(density: float, iterations: int) -> list[float]:
    """The exponential schedule ``density ** (t / T)`` for ``t = 1..T``."""
    return [density ** (t / iterations) for t in range(1, iterations + 1)]


def prune_iteratively(start: Mask, density: float, iterations: int,
                      saliency_round: SaliencyRound) -> Mask:
    """Shrink ``start`` to ``density`` in ``iterations`` steps of global top-k."""
    mask = start
    for t, fraction in enumerate(kept_fractions(density, iterations)):
        scores = saliency_round(t, mask)
        k = kept_count(mask.layout.num_prunable, fraction)
        mask = Mask(mask.layout, keep_top_k(scores, mask.prunable_kept, k))
    return mask
