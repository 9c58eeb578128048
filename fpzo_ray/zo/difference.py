"""Finite-difference schemes: which perturbed losses a ZO step evaluates and how it combines
them (``zo.estimator``; the registry's ``DIFFERENCE_SCHEMES``).

A scheme evaluates, for every direction z_k, the loss at ``w + sign * sigma * z_k`` for each
of its ``signs`` (and, when it needs one, once at the unperturbed ``w``: the *base* pass), and
turns each direction's losses into one scalar, the *difference* the client uploads:

    difference_k = sum_i weights[i] * L(w + signs[i] sigma z_k)  +  base_weight * L(w)

The directional derivative estimate is ``difference_k * scale(sigma)`` with
``scale(sigma) = 1 / (span * sigma)``, and the gradient estimate is
``(1/K) sum_k difference_k * scale(sigma) * z_k`` (``zo.estimator``).

    FORWARD  signs (+1,),     weights (1,),     base_weight -1, span 1:  L+ - L0      (K + 1 passes)
    CENTRAL  signs (+1, -1),  weights (1, -1),  base_weight  0, span 2:  L+ - L-      (2K passes)

Every ZO code path (the loop of ``zo.estimator``, ``zo.batched``'s vmap, ``zo.stacked``'s
stacked passes, ``zo.layerwise``) reads only these fields and methods, never a scheme's name,
so a researcher's scheme is an instance (or a subclass overriding :meth:`difference` /
:meth:`combine`) in their own module, named by its import path in ``zo.estimator``
(``my_schemes:ONE_SIDED``). For example the second-order one-sided scheme
``(-3 L0 + 4 L(w + s z) - L(w + 2 s z)) / 2s``::

    ONE_SIDED = DifferenceScheme("one_sided", signs=(1.0, 2.0), weights=(4.0, -1.0),
                                 base_weight=-3.0, span=2.0)

The arithmetic is plain Python floats (float64), in a fixed order, so the loop's differences
are bit-identical to what they were when the schemes were strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DifferenceScheme:
    """A finite-difference scheme (see the module docstring). Frozen, so it pickles by value
    and compares by its fields; a subclass pickles by reference to its class."""

    name: str
    signs: tuple[float, ...]  # the perturbations of a direction: w + sign * sigma * z
    weights: tuple[float, ...]  # per sign: its loss's coefficient in the difference
    base_weight: float = 0.0  # the coefficient of L(w); non-zero: a base pass is run
    span: float = 1.0  # scale(sigma) = 1 / (span * sigma)

    def __post_init__(self) -> None:
        signs, weights = tuple(float(s) for s in self.signs), tuple(float(w) for w in self.weights)
        object.__setattr__(self, "signs", signs)
        object.__setattr__(self, "weights", weights)
        if not signs or len(weights) != len(signs):
            raise ValueError(
                f"zo.estimator {self.name!r}: needs one weight per sign and at least one sign, "
                f"got signs {signs} and weights {weights}"
            )
        if 0.0 in signs or len(set(signs)) != len(signs):
            raise ValueError(
                f"zo.estimator {self.name!r}: signs must be distinct and non-zero (the "
                f"unperturbed loss is the base pass: base_weight), got {signs}"
            )
        if not self.span > 0:
            raise ValueError(f"zo.estimator {self.name!r}: span must be positive, got {self.span}")

    @property
    def needs_base(self) -> bool:
        """Whether a step also evaluates the unperturbed loss L(w) (the base pass)."""
        return self.base_weight != 0.0

    def scale(self, sigma: float) -> float:
        """The factor turning a difference into a directional-derivative estimate."""
        return 1.0 / (self.span * sigma)

    def num_passes(self, num_directions: int) -> int:
        """Full forward passes of a step with ``num_directions`` directions."""
        return num_directions * len(self.signs) + (1 if self.needs_base else 0)

    def difference(self, losses: Sequence[float], base: float | None) -> float:
        """One direction's difference from its losses (one per sign, in ``signs`` order) and
        the base loss (``None`` when the scheme has no base pass)."""
        total = 0.0
        for weight, loss in zip(self.weights, losses):
            total += weight * loss
        if self.needs_base:
            if base is None:
                raise ValueError(f"zo.estimator {self.name!r} needs the base loss")
            total += self.base_weight * base
        return total

    def base_loss(self, losses: Sequence[Sequence[float]], base: float | None) -> float:
        """The step's reported loss at w: the base pass when there is one, else the mean of
        all perturbed losses (O(sigma^2) close to L(w) for a symmetric scheme)."""
        if self.needs_base:
            assert base is not None
            return base
        return sum(sum(row) for row in losses) / (len(losses) * len(self.signs))

    def combine(
        self, losses: Sequence[Sequence[float]], base: float | None
    ) -> tuple[list[float], float]:
        """The K differences and the base loss from ``losses[k][i]``, the loss at
        ``w + signs[i] * sigma * z_k``, and the base pass's loss (``None`` without one)."""
        return [self.difference(row, base) for row in losses], self.base_loss(losses, base)


#: Forward differences: L(w + s z) - L(w), K + 1 passes.
FORWARD = DifferenceScheme("forward", signs=(1.0,), weights=(1.0,), base_weight=-1.0, span=1.0)

#: Central differences: L(w + s z) - L(w - s z), 2K passes, O(s^2) bias.
CENTRAL = DifferenceScheme("central", signs=(1.0, -1.0), weights=(1.0, -1.0), span=2.0)
