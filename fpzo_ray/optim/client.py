"""A client's local optimizer step, the one definition of that arithmetic.

BP clients step with their gradients, ZO FedAvg clients with their estimates; the ZO server
replays a ZO client's steps from its scalars and seeds (``zo.client_update.replay_local_steps``)
with the same function, so it holds the client's final weights bit for bit.
"""

from __future__ import annotations

import torch


def clip_inf_norm_(estimate: torch.Tensor, bound: float) -> torch.Tensor:
    """Clamp every coordinate to [-bound, bound] in place (no-op for bound <= 0)."""
    if bound > 0:
        estimate.clamp_(-bound, bound)
    return estimate


def client_sgd_step(
    weights: torch.Tensor,
    gradient: torch.Tensor,
    momentum_buffer: torch.Tensor | None,
    lr: float,
    momentum: float,
) -> torch.Tensor | None:
    """``w -= lr * v`` with ``v = momentum * v + g`` (plain SGD when momentum is 0).

    Updates ``weights`` in place; returns the new momentum buffer (None without momentum).
    """
    if momentum > 0:
        if momentum_buffer is None:
            momentum_buffer = gradient.clone()
        else:
            momentum_buffer.mul_(momentum).add_(gradient)
        weights.add_(momentum_buffer, alpha=-lr)
        return momentum_buffer
    weights.add_(gradient, alpha=-lr)
    return None
