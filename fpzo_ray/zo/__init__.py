"""Zeroth-order (BP-free) training, the method: seeded perturbations (``perturbation``,
``philox``), difference schemes and estimators (``difference``, ``estimator``), the
layer-wise variant (``layerwise``), a client's steps and the server's rebuild of them
(``client_update``), and the ZO federated algorithms (``algorithms/``). Faster equivalent
executions of the same steps live apart, in ``execution/``. Plain PyTorch: nothing here
knows Ray."""

from fpzo_ray.zo.difference import CENTRAL, FORWARD, DifferenceScheme
from fpzo_ray.zo.estimator import (
    EstimatorSpec,
    ZOResult,
    estimate_from_differences,
    forward_difference,
    loss_differences,
)
from fpzo_ray.zo.perturbation import (
    direction,
    fill_gaussian,
    fill_rademacher,
    perturbation_seeds,
)

__all__ = [
    "CENTRAL",
    "FORWARD",
    "DifferenceScheme",
    "EstimatorSpec",
    "ZOResult",
    "estimate_from_differences",
    "forward_difference",
    "loss_differences",
    "direction",
    "fill_gaussian",
    "fill_rademacher",
    "perturbation_seeds",
]
