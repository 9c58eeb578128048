"""Which clients take part: a seeded draw per round (or pruning iteration)."""

from __future__ import annotations

import numpy as np

from fpzo_ray.seeding import Purpose, derive_seed


def sample_clients(run_seed: int, purpose: Purpose, index: int, num_clients: int,
                   count: int) -> list[int]:
    """``count`` distinct client ids for round (or iteration) ``index``, ascending."""
    rng = np.random.default_rng(derive_seed(run_seed, purpose, index))
    return sorted(int(c) for c in rng.choice(num_clients, size=count, replace=False))
