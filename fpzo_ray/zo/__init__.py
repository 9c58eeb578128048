"""Zeroth-order (BP-free) training: seeded perturbations, estimators, local steps and the
server's update. Plain PyTorch: nothing here knows Ray."""

from fpzo_ray.zo.difference import CENTRAL, FORWARD, DifferenceScheme
from fpzo_ray.zo.estimator import (
    EstimatorSpec,
    ZOResult,
    estimate_from_differences,
    forward_difference,
    loss_differences,
)
from fpzo_ray.zo.local import client_sgd_step, clip_inf_norm_
from fpzo_ray.zo.perturbation import (
    direction,
    fill_gaussian,
    fill_rademacher,
    perturbation_seeds,
)
from fpzo_ray.zo.server_optimizer import ServerOptimizer, weighted_average

__all__ = [
    "CENTRAL",
    "FORWARD",
    "DifferenceScheme",
    "EstimatorSpec",
    "ZOResult",
    "estimate_from_differences",
    "forward_difference",
    "loss_differences",
    "client_sgd_step",
    "clip_inf_norm_",
    "direction",
    "fill_gaussian",
    "fill_rademacher",
    "perturbation_seeds",
    "ServerOptimizer",
    "weighted_average",
]
