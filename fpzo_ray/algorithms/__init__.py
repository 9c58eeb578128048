"""Federated training algorithms, each one strategy object holding its client half and its
server half (``base.FederatedAlgorithm``): ZO FedSGD (BAFFLE), ZO FedAvg, BP FedAvg, and ZO
FedSGD with server momentum on the estimate. The engine looks them up in
``registry.REGISTRY`` by ``(training.algorithm, training.mode)``.

To add one: a new file with a ``FederatedAlgorithm`` subclass, an entry in ``REGISTRY``, and
its name in ``config.ALGORITHMS`` (plus any hyperparameter field it reads); see
``docs/ARCHITECTURE.md``.
"""

from fpzo_ray.algorithms.registry import REGISTRY, algorithm_class, algorithm_for

__all__ = ["REGISTRY", "algorithm_class", "algorithm_for"]
