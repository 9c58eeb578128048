"""How the gradient is estimated from forward passes only (BAFFLE; METHOD.md, phase 2).

Forward difference over K seeded directions z_k on one mini-batch (K + 1 forward passes):

    g = (1/K) * sum_k [(L(w + sigma z_k) - L(w)) / sigma] * z_k

A client computes the K loss differences (the only thing it needs to upload); whoever holds
the seeds rebuilds g from them with :func:`estimate_from_differences`. The client's own
estimate (:func:`forward_difference`, ``with_estimate=True``) accumulates the very same
directions in the same order, so both are bit-identical.

The model's parameters must be views of one flat buffer (``models.flat``); only the
coordinates in ``kept_index`` are perturbed, and they are restored by copy, never by
subtraction, so after any number of steps the weights are bit-identical to before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from fpzo_ray.zo.perturbation import direction

#: Evaluates the loss of the model as it currently is (on a fixed mini-batch).
LossFn = Callable[[], float]


@dataclass(frozen=True)
class ForwardDifferences:
    base_loss: float
    loss_differences: torch.Tensor  # float32, (K,): L(w + sigma z_k) - L(w)
    estimate: torch.Tensor | None  # the client's own g, when asked for
    num_forward_passes: int


def _accumulate(estimate: torch.Tensor, difference: float, sigma: float,
                z: torch.Tensor) -> None:
    estimate.add_(z, alpha=difference / sigma)


def forward_difference(loss_fn: LossFn, flat: torch.Tensor, kept_index: torch.Tensor | None,
                       seeds: Sequence[int], sigma: float,
                       with_estimate: bool = False) -> ForwardDifferences:
    """Evaluate ``L(w)`` and ``L(w + sigma z_k)`` for the seeded directions.

    ``flat`` is the model's flat parameter buffer; ``kept_index`` the trained coordinates
    (``None`` = all of them, the dense model). ``flat`` is restored exactly before returning.
    """
    dense = kept_index is None
    base = flat.detach().clone() if dense else flat[kept_index].clone()
    dim = base.numel()
    z = torch.empty(dim, dtype=torch.float32)
    shifted = torch.empty_like(base)
    estimate = torch.zeros(dim, dtype=torch.float32) if with_estimate else None
    differences = torch.empty(len(seeds), dtype=torch.float32)
    with torch.no_grad():
        base_loss = float(loss_fn())
        try:
            for k, seed in enumerate(seeds):
                direction(seed, dim, out=z)
                torch.add(base, z.to(base.device), alpha=sigma, out=shifted)
                if dense:
                    flat.copy_(shifted)
                else:
                    flat.index_copy_(0, kept_index, shifted)
                differences[k] = float(loss_fn()) - base_loss
                if estimate is not None:
                    _accumulate(estimate, float(differences[k]), sigma, z)
        finally:
            if dense:
                flat.copy_(base)
            else:
                flat.index_copy_(0, kept_index, base)
    if estimate is not None:
        estimate.div_(len(seeds))
    return ForwardDifferences(base_loss, differences, estimate, len(seeds) + 1)


def estimate_from_differences(loss_differences: torch.Tensor, seeds: Sequence[int],
                              sigma: float, dim: int) -> torch.Tensor:
    """Rebuild a client's estimate from its uploaded differences and the seeds (server side)."""
    if loss_differences.numel() != len(seeds):
        raise ValueError(f"{loss_differences.numel()} differences for {len(seeds)} seeds")
    estimate = torch.zeros(dim, dtype=torch.float32)
    z = torch.empty(dim, dtype=torch.float32)
    for difference, seed in zip(loss_differences.tolist(), seeds):
        _accumulate(estimate, difference, sigma, direction(seed, dim, out=z))
    return estimate.div_(len(seeds))
