"""Which strategy runs a configuration: ``(training.algorithm, training.mode)`` -> the class.

Entries name their classes as ``module:Class`` and are imported on first use, so that the
configuration can check a pair against this table without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fpzo_ray.algorithms.base import FederatedAlgorithm
    from fpzo_ray.config import RunConfig

#: ``training.algorithm`` -> ``training.mode`` -> where its strategy class lives.
REGISTRY: dict[str, dict[str, str]] = {
    "zo": {
        "fedsgd": "fpzo_ray.algorithms.zo_fedsgd:ZOFedSGD",
        "fedavg": "fpzo_ray.algorithms.zo_fedavg:ZOFedAvg",
    },
    "bp": {"fedavg": "fpzo_ray.algorithms.bp_fedavg:BPFedAvg"},
    "zo_momentum": {"fedsgd": "fpzo_ray.algorithms.zo_fedsgd_momentum:ZOFedSGDMomentum"},
}


def algorithm_class(algorithm: str, mode: str) -> type[FederatedAlgorithm]:
    """The strategy class registered for the pair (KeyError when there is none)."""
    module, name = REGISTRY[algorithm][mode].split(":")
    return getattr(importlib.import_module(module), name)


def algorithm_for(cfg: RunConfig) -> FederatedAlgorithm:
    """A run's strategy (its configuration was validated: the pair is registered)."""
    return algorithm_class(cfg.training.algorithm, cfg.training.mode)(cfg)
