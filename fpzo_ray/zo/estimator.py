"""How the gradient is estimated from forward passes only (BAFFLE; docs/METHOD.md, phase 2).

For K seeded directions z_k over the trained coordinates and one mini-batch:

    forward difference (K + 1 passes):  g = (1/K) sum_k [(L(w + s z_k) - L(w)) / s] z_k
    central difference (2K passes):     g = (1/K) sum_k [(L(w + s z_k) - L(w - s z_k)) / 2s] z_k

or any other :class:`~fpzo_ray.zo.difference.DifferenceScheme` (``EstimatorSpec.scheme``: the
signs to evaluate, how their losses combine, the scale); the directions come from the spec's
direction kind drawn from its generator (``zo.perturbation``).

A client computes the K loss differences (all it uploads); whoever holds the seeds rebuilds g
with :func:`estimate_from_differences`. The client's own estimate (``with_estimate=True``)
accumulates the very same directions in the same order with the same arithmetic, so both are
bit-identical.

The model's parameters are views of one flat buffer (``models.flat``); only the coordinates in
``kept_index`` are perturbed, and they are restored by copy, never by subtraction, so after
any number of steps the weights are bit-identical to before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from fpzo_ray.models.flat import read_trained, write_trained
from fpzo_ray.zo.difference import FORWARD, DifferenceScheme
from fpzo_ray.zo.dropout import seeded_randomness
from fpzo_ray.zo.perturbation import (
    PHILOX,
    DirectionFill,
    DirectionStream,
    check_generator,
    directions,
    fill_gaussian,
)

#: Evaluates the loss of the model as it currently is (on a fixed mini-batch).
LossFn = Callable[[], float]


@dataclass(frozen=True)
class EstimatorSpec:
    """Which estimator: finite-difference scheme, direction kind (its fill function), the
    generator its numbers come from (``zo.generator``) and step.

    Picklable: the shipped schemes and fill functions pickle by reference; a researcher's
    must be module-level objects of an importable module (``protocol.zo_update_spec`` loads
    them from the registry names or import paths of ``zo.estimator`` / ``zo.direction``).
    """

    scheme: DifferenceScheme = FORWARD
    direction: DirectionFill = fill_gaussian
    sigma: float = 1e-3
    generator: str = PHILOX

    def __post_init__(self) -> None:
        if not isinstance(self.scheme, DifferenceScheme):
            raise TypeError(
                f"zo.estimator: {self.scheme!r} is not a fpzo_ray.zo.difference.DifferenceScheme "
                "(resolve a name with fpzo_ray.registry.DIFFERENCE_SCHEMES.load)"
            )
        if isinstance(self.direction, str) or not callable(self.direction):
            raise TypeError(
                f"zo.direction: {self.direction!r} is not a fill function fill(out, gen) "
                "(resolve a name with fpzo_ray.registry.DIRECTION_KINDS.load)"
            )
        if not self.sigma > 0:
            raise ValueError(f"zo.sigma must be positive, got {self.sigma}")
        check_generator(self.direction, self.generator)

    def stream(self, seed: int) -> DirectionStream:
        """The random numbers of direction seed ``seed``."""
        return DirectionStream(seed, self.direction, self.generator)

    def draw(self, seed: int, out: torch.Tensor) -> torch.Tensor:
        """``out`` (float32, any device) overwritten with the direction of ``seed``."""
        return self.stream(seed).fill(out)

    def directions(
        self, seeds: Sequence[int], dim: int, device: torch.device | str = "cpu"
    ) -> Iterator[torch.Tensor]:
        """The directions of ``seeds`` in order, drawn in groups
        (:func:`fpzo_ray.zo.perturbation.directions`: each valid until the next)."""
        return directions(seeds, dim, self.direction, self.generator, device)

    @property
    def scale(self) -> float:
        """Factor turning a loss difference into a directional-derivative estimate."""
        return self.scheme.scale(self.sigma)

    def num_passes(self, num_directions: int) -> int:
        return self.scheme.num_passes(num_directions)


@dataclass(frozen=True)
class ZOUpdateSpec:
    """Everything about one ZO client step that client and server must agree on (the number
    of steps is the length of the seed lists; ``protocol.zo_update_spec`` builds it)."""

    estimator: EstimatorSpec
    num_perturbations: int = 20  # K: the seeds of a step are this many
    perturbation_scope: str = "full"  # full | layerwise
    batching: str = "auto"  # auto | loop | vmap | batched (auto: ``zo.auto_batching``)
    chunk_size: int = 0  # batched / vmap: models per stacked pass (0: all)
    client_lr: float = 0.01
    client_momentum: float = 0.0
    clip_inf_norm: float = 0.0
    microbatch_size: int = 0  # 0: the whole batch in one forward pass
    dropout: str = "off"  # off | same_mask | independent (``zo.dropout``)


@dataclass(frozen=True)
class ZOResult:
    """One ZO step: the loss at the start, the K differences, the client's estimate."""

    base_loss: float  # L(w); without a base pass (central) the mean of the perturbed losses
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
    same_randomness: bool = False,
) -> ZOResult:
    """Evaluate the loss at the seeded perturbations of the trained coordinates.

    With ``same_randomness`` every pass of direction k runs with torch's generator seeded by
    that direction's seed, so that what the model draws (dropout masks) is the same in the
    passes of one difference (``zo.dropout``: same_mask).

    ``flat`` is the model's flat parameter buffer; ``kept_index`` the trained coordinates
    (``None`` = all of them, the dense model). Besides the forward passes, the step holds two
    weight-sized buffers (a copy of the trained weights and one direction), three with the
    client's own estimate. ``flat`` is restored exactly before returning. Works for any
    module whose parameters are views of ``flat`` (``models.flat.bind_flat_buffer``).
    """
    scheme = spec.scheme
    base = read_trained(flat, kept_index)
    dim = base.numel()
    z = torch.empty_like(base)  # drawn where it is used (philox; torch_cpu copies it there)
    estimate = torch.zeros(dim, dtype=torch.float32) if with_estimate else None
    differences = torch.empty(len(seeds), dtype=torch.float32)
    losses: list[list[float]] = []
    with torch.no_grad():
        base_loss = float(loss_fn()) if scheme.needs_base else None
        try:
            for k, drawn in enumerate(spec.directions(seeds, dim, z.device)):
                z.copy_(drawn)  # the device's one direction buffer (the group is not)
                row = []
                for sign in scheme.signs:
                    _shift(flat, kept_index, z, sign * spec.sigma)
                    with (
                        seeded_randomness(seeds[k], flat.device)
                        if same_randomness
                        else contextlib.nullcontext()
                    ):
                        row.append(float(loss_fn()))
                    write_trained(flat, kept_index, base)
                losses.append(row)
                differences[k] = scheme.difference(row, base_loss)
                if estimate is not None:
                    # on the CPU, as the server rebuilds it: the same arithmetic, the same bits
                    accumulate(estimate, float(differences[k]), spec.scale, z.cpu())
        finally:
            write_trained(flat, kept_index, base)
    if estimate is not None:
        estimate.div_(len(seeds))
    return ZOResult(
        scheme.base_loss(losses, base_loss), differences, estimate, spec.num_passes(len(seeds))
    )


def estimate_from_differences(
    differences: torch.Tensor, seeds: Sequence[int], spec: EstimatorSpec, dim: int
) -> torch.Tensor:
    """Rebuild a client's estimate from its uploaded differences and the seeds (server side)."""
    if differences.numel() != len(seeds):
        raise ValueError(f"{differences.numel()} differences for {len(seeds)} seeds")
    estimate = torch.zeros(dim, dtype=torch.float32)
    for difference, z in zip(differences.tolist(), spec.directions(seeds, dim)):
        accumulate(estimate, difference, spec.scale, z)
    return estimate.div_(len(seeds))


def forward_difference(
    loss_fn: LossFn,
    flat: torch.Tensor,
    kept_index: torch.Tensor | None,
    seeds: Sequence[int],
    sigma: float,
    with_estimate: bool = False,
) -> ZOResult:
    """The default estimator (forward differences, Gaussian Philox directions)."""
    return loss_differences(
        loss_fn, flat, kept_index, seeds, EstimatorSpec(sigma=sigma), with_estimate
    )
