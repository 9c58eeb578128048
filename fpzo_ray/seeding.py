"""Seeds derived from (run seed, purpose, round, client, ...) so that every random draw of a run
can be regenerated anywhere: by the client that used it, by the server, after a resume, on
another machine, whatever the number of actors.

The derivation is a fold of SplitMix64 over the integer path: pure integer arithmetic, the
same on every platform, and independent streams for different paths (a change in any
component changes the whole 64-bit seed).
"""

from __future__ import annotations

import enum

import torch

_MASK64 = (1 << 64) - 1


class Purpose(enum.IntEnum):
    """The first path component, so streams for different jobs never collide."""

    PARTITION = 1
    CLIENT_SAMPLING = 2
    MINIBATCH = 3
    PERTURBATION = 4
    PRUNING_DRAW = 5
    RANDOM_MASK = 6
    MODEL_INIT = 7
    PRUNING_SAMPLING = 8
    DEVICE = 9
    AVAILABILITY = 10
    VALIDATION_SPLIT = 11
    ALGORITHM = 12  # an algorithm's own streams (e.g. a shared seed pool)
    CONNECTIVITY = 13  # the random inputs of the mask's connectivity check
    CLIENT_HOLDOUT = 14  # which of a client's samples it keeps for federated evaluation
    EVALUATION_SAMPLING = 15  # which clients take part in a federated evaluation
    VALIDATION_SUBSET = 16  # the validation samples scored every round


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(run_seed: int, purpose: Purpose, *path: int) -> int:
    """A 64-bit seed for ``(run_seed, purpose, *path)``; all components must be >= 0."""
    state = _splitmix64(int(run_seed) & _MASK64)
    for component in (int(purpose), *path):
        if component < 0:
            raise ValueError(f"seed path components must be >= 0, got {component}")
        state = _splitmix64(state ^ (int(component) & _MASK64))
    return state


def generator(seed: int) -> torch.Generator:
    """A CPU generator: torch's CPU Mersenne Twister gives the same stream on every machine."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen
