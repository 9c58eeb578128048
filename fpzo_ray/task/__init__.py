"""The researcher's task: the loss every client minimises and the metrics the server reports
(``task.loss``, ``task.metrics``). Plain PyTorch: the simulator hands a :class:`Task` to the
clients' updates, the pruning saliencies that read labels, and the server's evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fpzo_ray.config import metric_key, metric_names
from fpzo_ray.task.losses import (
    IGNORE_INDEX,
    NAMED_LOSSES,
    PerSampleLoss,
    UserLoss,
    per_sample_mean,
)
from fpzo_ray.task.metrics import NAMED_METRICS, Metric, accuracy_counts


@dataclass(frozen=True)
class Task:
    """A loss (per sample) and the metrics reported beside it, by key (``val_<key>``)."""

    loss_name: str
    loss: PerSampleLoss
    metrics: dict[str, Metric]

    def mean_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs, targets).mean()


CROSS_ENTROPY = Task("cross_entropy", NAMED_LOSSES["cross_entropy"], dict(NAMED_METRICS))


def build_task(loss: str, metrics: str) -> Task:
    """The task of ``task.loss`` and ``task.metrics``; import paths are imported here
    (``registry.TargetError`` when one does not resolve)."""
    from fpzo_ray.registry import import_target

    loss_fn = NAMED_LOSSES[loss] if loss in NAMED_LOSSES else UserLoss(import_target(loss), loss)
    found: dict[str, Metric] = {}
    for entry in metric_names(loss, metrics):
        found[metric_key(entry)] = (
            NAMED_METRICS[entry] if entry in NAMED_METRICS else import_target(entry)
        )
    return Task(loss, loss_fn, found)


__all__ = [
    "CROSS_ENTROPY",
    "IGNORE_INDEX",
    "NAMED_LOSSES",
    "NAMED_METRICS",
    "Metric",
    "PerSampleLoss",
    "Task",
    "accuracy_counts",
    "build_task",
    "per_sample_mean",
]
