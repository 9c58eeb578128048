"""Seeded random directions over the trained coordinates.

Direction ``k`` of client ``c``'s local step ``s`` in round ``r`` is drawn from its own seed
``derive_seed(run_seed, PERTURBATION, r, c, s, k)`` with torch's CPU generator, so the server
(or a resumed run, or another machine) regenerates exactly the numbers the client used,
whatever device the client trained on. Only the trained (kept) coordinates are perturbed.

A direction kind (``zo.direction``; the registry's ``DIRECTION_KINDS``) is a *fill function*
``fill(out, gen) -> out`` that overwrites the float32 CPU vector ``out`` with the next
direction of the generator's stream and returns it. Shipped: :func:`fill_gaussian` (N(0, I))
and :func:`fill_rademacher` (uniform signs); both have E[z z^T] = I, so the estimators need no
kind-specific scaling. A researcher's kind is any module-level function with that signature
and that property (``my_directions:fill_sparse``); it must draw only from ``gen`` so that
the seed alone determines the direction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fpzo_ray.seeding import Purpose, derive_seed, generator

#: ``fill(out, gen) -> out``: a direction kind.
DirectionFill = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def perturbation_seeds(
    run_seed: int, round_index: int, client_id: int, step: int, num_perturbations: int
) -> list[int]:
    """The K seeds of one client step."""
    return [
        derive_seed(run_seed, Purpose.PERTURBATION, round_index, client_id, step, k)
        for k in range(num_perturbations)
    ]


def fill_gaussian(out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``out`` filled with N(0, 1) draws from ``gen``."""
    return out.normal_(generator=gen)


def fill_rademacher(out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``out`` filled with uniform random signs from ``gen``."""
    # The signs of Gaussian draws: 4x faster here than bernoulli_, and exactly uniform.
    out.normal_(generator=gen).sign_()
    return out.add_(out == 0)  # a draw of exactly 0.0 (probability ~0) becomes +1


def direction(
    seed: int, dim: int, out: torch.Tensor | None = None, fill: DirectionFill = fill_gaussian
) -> torch.Tensor:
    """A direction of length ``dim`` drawn on the CPU from ``seed`` by ``fill``."""
    if out is None:
        out = torch.empty(dim, dtype=torch.float32)
    return fill(out, generator(seed))
