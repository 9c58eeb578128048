"""Seeded random directions over the trained coordinates.

Direction ``k`` of client ``c``'s local step ``s`` in round ``r`` is drawn from its own seed
``derive_seed(run_seed, PERTURBATION, r, c, s, k)`` with torch's CPU generator, so the server
(or a resumed run, or another machine) regenerates exactly the numbers the client used,
whatever device the client trained on. Only the trained (kept) coordinates are perturbed.

Kinds: ``gaussian`` (N(0, I)) and ``rademacher`` (uniform signs); both have E[z z^T] = I, so
the estimators need no kind-specific scaling.
"""

from __future__ import annotations

import torch

from fpzo_ray.seeding import Purpose, derive_seed, generator

DIRECTION_KINDS = ("gaussian", "rademacher")


def perturbation_seeds(
    run_seed: int, round_index: int, client_id: int, step: int, num_perturbations: int
) -> list[int]:
    """The K seeds of one client step."""
    return [
        derive_seed(run_seed, Purpose.PERTURBATION, round_index, client_id, step, k)
        for k in range(num_perturbations)
    ]


def direction(
    seed: int, dim: int, out: torch.Tensor | None = None, kind: str = "gaussian"
) -> torch.Tensor:
    """A direction of length ``dim`` drawn on the CPU from ``seed``."""
    if out is None:
        out = torch.empty(dim, dtype=torch.float32)
    return fill_direction(out, generator(seed), kind)


def fill_direction(out: torch.Tensor, gen: torch.Generator, kind: str) -> torch.Tensor:
    """Fill ``out`` with the next direction of ``gen``'s stream."""
    if kind == "gaussian":
        return out.normal_(generator=gen)
    if kind == "rademacher":
        # The signs of Gaussian draws: 4x faster here than bernoulli_, and exactly uniform.
        out.normal_(generator=gen).sign_()
        return out.add_(out == 0)  # a draw of exactly 0.0 (probability ~0) becomes +1
    raise ValueError(f"zo.direction: unknown {kind!r}, allowed: {', '.join(DIRECTION_KINDS)}")
