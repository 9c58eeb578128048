"""Names a reader recognises: what a run trains and how it was pruned, in one short label.

Figures name runs and cells by method ("NTK-SAP 90 % + ZO", "dense ZO", "BP FedAvg"), not by
configuration keys, so that a legend reads like a paper's.
"""

from __future__ import annotations

from fpzo_ray.config import RunConfig
from fpzo_ray.registry import TargetError, algorithm_class


def method_label(cfg: RunConfig) -> str:
    """The training algorithm (its strategy's label) and the mask, e.g.
    ``NTK-SAP 90 % + ZO``, ``dense ZO``, ``BP FedAvg``, ``random 80 % + BP FedAvg``; both
    come from the components themselves (``label``), a researcher's included."""
    from fpzo_ray.pruning.methods import pruning_label

    try:
        strategy = algorithm_class(cfg.training.algorithm, cfg.training.mode)
        label, dense_prefix = strategy.label, strategy.dense_prefix
    except TargetError:  # a report where the researcher's algorithm cannot be imported
        label, dense_prefix = cfg.training.algorithm.rsplit(":", 1)[-1], True
    method = cfg.pruning_method
    if method == "dense":
        return f"dense {label}" if dense_prefix else label
    return f"{pruning_label(method)} {cfg.pruning.sparsity * 100:.3g} % + {label}"
