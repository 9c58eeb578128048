"""Federated training algorithms, each one strategy object holding its client half and its
server half (``base.FederatedAlgorithm``): ZO FedSGD (BAFFLE), ZO FedAvg, BP FedAvg, and ZO
FedSGD with server momentum on the estimate. ``fpzo_ray.registry.ALGORITHMS`` names them by
``(training.algorithm, training.mode)``; a researcher's own is named by its import path
(``docs/EXTENDING.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fpzo_ray.registry import algorithm_class

if TYPE_CHECKING:
    from fpzo_ray.algorithms.base import FederatedAlgorithm
    from fpzo_ray.config import RunConfig


def algorithm_for(cfg: RunConfig) -> FederatedAlgorithm:
    """A run's strategy (its configuration was validated: the class exists)."""
    cls: type[FederatedAlgorithm] = algorithm_class(cfg.training.algorithm, cfg.training.mode)
    return cls(cfg)


__all__ = ["algorithm_class", "algorithm_for"]
