"""How the gradient is estimated from forward passes only (BAFFLE; docs/METHOD.md, phase 2).

For K seeded directions z_k over the trained coordinates and one mini-batch:

    forward difference (K + 1 passes):  g = (1/K) sum_k [(L(w + s z_k) - L(w)) / s] z_k
    central difference (2K passes):     g = (1/K) sum_k [(L(w + s z_k) - L(w - s z_k)) / 2s] z_k

A client computes the K loss differences (all it uploads); whoever holds the seeds rebuilds g
with :func:`estimate_from_differences`. The client's own estimate (``with_estimate=True``)
accumulates the very same directions in the same order with the same arithmetic, so both are
bit-identical.

The model's parameters are views of one flat buffer (``models.flat``); only the coordinates in
``kept_index`` are perturbed, and they are restored by copy, never by subtraction, so after
any number of steps the weights are bit-identical to before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fpzo_ray.models.flat import read_trained, write_trained
from fpzo_ray.zo.perturbation import direction

#: Evaluates the loss of the model as it currently is (on a fixed mini-batch).
LossFn = Callable[[], float]


@dataclass(frozen=True)
class EstimatorSpec:
    """Which estimator: finite-difference scheme, direction kind and step."""

    estimator: str = "forward"  # forward | central
    direction: str = "gaussian"  # gaussian | rademacher
    sigma: float = 1e-3

    def __post_init__(self) -> None:
        if self.estimator not in ("forward", "central"):
            raise ValueError(f"zo.estimator: unknown {self.estimator!r}")

    @property
    def scale(self) -> float:
        """Factor turning a loss difference into a directional-derivative estimate."""
        return 1.0 / self.sigma if self.estimator == "forward" else 1.0 / (2.0 * self.sigma)

    def num_passes(self, num_directions: int) -> int:
        return num_directions + 1 if self.estimator == "forward" else 2 * num_directions


@dataclass(frozen=True)
class ZOResult:
    """One ZO step: the loss at the start, the K differences, the client's estimate."""

    base_loss: float  # L(w); for central differences the mean of L(w +- s z_k), O(s^2) close
    loss_differences: torch.Tensor  # float32, (K,): what the client uploads
    estimate: torch.Tensor | None  # the client's own g over the trained coordinates
    num_forward_passes: int  # full-model forward passes (or their equivalent in stage runs)
    stage_runs: tuple[int, ...] | None = None  # per stage, when passes were partial


def accumulate(estimate: torch.Tensor, difference: float, scale: float, z: torch.Tensor) -> None:
    """``estimate += difference * scale * z``: the one place both sides do this arithmetic."""
    estimate.add_(z, alpha=difference * scale)


def _shift(
    flat: torch.Tensor, kept_index: torch.Tensor | None, z: torch.Tensor, step: float
) -> None:
    """``w += step * z`` on the trained coordinates, in place (no weight-sized temporary)."""
    if kept_index is None:
        flat.add_(z, alpha=step)
    else:
        flat.index_add_(0, kept_index, z, alpha=step)


def loss_differences(
    loss_fn: LossFn,
    flat: torch.Tensor,
    kept_index: torch.Tensor | None,
    seeds: Sequence[int],
    spec: EstimatorSpec,
    with_estimate: bool = False,
) -> ZOResult:
    """Evaluate the loss at the seeded perturbations of the trained coordinates.

    ``flat`` is the model's flat parameter buffer; ``kept_index`` the trained coordinates
    (``None`` = all of them, the dense model). Besides the forward passes, the step holds two
    weight-sized buffers (a copy of the trained weights and one direction), three with the
    client's own estimate. ``flat`` is restored exactly before returning.
    """
    base = read_trained(flat, kept_index)
    dim = base.numel()
    z = torch.empty(dim, dtype=torch.float32)
    z_device = z if base.device.type == "cpu" else torch.empty_like(base)
    estimate = torch.zeros(dim, dtype=torch.float32) if with_estimate else None
    differences = torch.empty(len(seeds), dtype=torch.float32)
    central = spec.estimator == "central"
    loss_sum = 0.0
    with torch.no_grad():
        base_loss = float("nan") if central else float(loss_fn())
        try:
            for k, seed in enumerate(seeds):
                direction(seed, dim, out=z, kind=spec.direction)
                if z_device is not z:
                    z_device.copy_(z)
                _shift(flat, kept_index, z_device, spec.sigma)
                plus = float(loss_fn())
                write_trained(flat, kept_index, base)
                if central:
                    _shift(flat, kept_index, z_device, -spec.sigma)
                    minus = float(loss_fn())
                    write_trained(flat, kept_index, base)
                    loss_sum += plus + minus
                    differences[k] = plus - minus
                else:
                    differences[k] = plus - base_loss
                if estimate is not None:
                    accumulate(estimate, float(differences[k]), spec.scale, z)
        finally:
            write_trained(flat, kept_index, base)
    if central:
        base_loss = loss_sum / (2 * len(seeds))
    if estimate is not None:
        estimate.div_(len(seeds))
    return ZOResult(base_loss, differences, estimate, spec.num_passes(len(seeds)))


def estimate_from_differences(
    differences: torch.Tensor, seeds: Sequence[int], spec: EstimatorSpec, dim: int
) -> torch.Tensor:
    """Rebuild a client's estimate from its uploaded differences and the seeds (server side)."""
    if differences.numel() != len(seeds):
        raise ValueError(f"{differences.numel()} differences for {len(seeds)} seeds")
    estimate = torch.zeros(dim, dtype=torch.float32)
    z = torch.empty(dim, dtype=torch.float32)
    for difference, seed in zip(differences.tolist(), seeds):
        accumulate(
            estimate, difference, spec.scale, direction(seed, dim, out=z, kind=spec.direction)
        )
    return estimate.div_(len(seeds))


def forward_difference(
    loss_fn: LossFn,
    flat: torch.Tensor,
    kept_index: torch.Tensor | None,
    seeds: Sequence[int],
    sigma: float,
    with_estimate: bool = False,
) -> ZOResult:
    """The default estimator (forward differences, Gaussian directions)."""
    return loss_differences(
        loss_fn, flat, kept_index, seeds, EstimatorSpec(sigma=sigma), with_estimate
    )
