"""Seeded random directions over the trained coordinates.

Direction ``k`` of client ``c``'s step ``s`` in round ``r`` is drawn from its own seed
``derive_seed(run_seed, PERTURBATION, r, c, s, k)`` with torch's CPU generator, so the server
(or a resumed run, or another machine) regenerates exactly the numbers the client used,
whatever device the client trained on. Only the trained (kept) coordinates are perturbed: the
direction has length d = the number of trained coordinates.
"""

from __future__ import annotations

import torch

from fpzo_ray.seeding import Purpose, derive_seed, generator


def perturbation_seeds(run_seed: int, round_index: int, client_id: int, step: int,
                       num_perturbations: int) -> list[int]:
    """The K seeds of one client step."""
    return [derive_seed(run_seed, Purpose.PERTURBATION, round_index, client_id, step, k)
            for k in range(num_perturbations)]


def direction(seed: int, dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """A standard Gaussian direction of length ``dim`` drawn on the CPU from ``seed``."""
    if out is None:
        out = torch.empty(dim, dtype=torch.float32)
    return out.normal_(generator=generator(seed))
