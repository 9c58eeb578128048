"""Zeroth-order (BP-free) training: seeded perturbations, estimators, the server's update."""

from fpzo_ray.zo.estimator import ForwardDifferences, estimate_from_differences, forward_difference
from fpzo_ray.zo.perturbation import direction, perturbation_seeds
from fpzo_ray.zo.server_optimizer import ServerOptimizer, weighted_average

__all__ = ["ForwardDifferences", "estimate_from_differences", "forward_difference",
           "direction", "perturbation_seeds", "ServerOptimizer", "weighted_average"]
