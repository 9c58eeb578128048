"""The researcher's task: the loss every client minimises and the metrics the server reports
(``task.loss``, ``task.metrics``). Plain PyTorch: the simulator hands a :class:`Task` to the
clients' updates, the pruning saliencies that read labels, and the server's evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fpzo_ray.config import metric_key, metric_names
from fpzo_ray.registry import import_target
from fpzo_ray.task.losses import (
    IGNORE_INDEX,
    NAMED_LOSSES,
    PerSampleLoss,
    UserLoss,
)
from fpzo_ray.task.metrics import NAMED_METRICS, Metric, accuracy_counts


@dataclass(frozen=True)
class Task:
    """A loss (per sample) and the metrics reported beside it, by key (``val_<key>``)."""

    loss: PerSampleLoss
    metrics: dict[str, Metric]


#: The default task: classification by cross-entropy, reporting accuracy.
CROSS_ENTROPY = Task(NAMED_LOSSES["cross_entropy"], {"accuracy": NAMED_METRICS["accuracy"]})


def build_task(loss: str, metrics: str) -> Task:
    """The task of ``task.loss`` and ``task.metrics``; import paths are imported here
    (``registry.TargetError`` when one does not resolve)."""
    loss_fn = NAMED_LOSSES[loss] if loss in NAMED_LOSSES else UserLoss(import_target(loss), loss)
    found: dict[str, Metric] = {}
    for entry in metric_names(loss, metrics):
        found[metric_key(entry)] = (
            NAMED_METRICS[entry] if entry in NAMED_METRICS else import_target(entry)
        )
    return Task(loss_fn, found)


def evaluation_parts(metrics: Mapping[str, Any], with_loss: bool = True) -> list[str]:
    """What a progress line says of an evaluation: the validation and test accuracy where the
    task reports it, the task's other test metrics, and the test loss (``with_loss``, or
    always for a task without accuracy). Empty for a round that was not evaluated."""
    if "test_loss" not in metrics:
        return []
    own = sorted(k for k in metrics if k.startswith("test_") and k not in _SHOWN)
    keys = [k for k in ("val_accuracy", "test_accuracy") if k in metrics] + own
    if with_loss or "test_accuracy" not in metrics:
        keys.append("test_loss")
    return [f"{k.replace('_', ' ', 1)} {metrics[k]:.4f}" for k in keys]


_SHOWN = ("test_accuracy", "test_loss")


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
    "evaluation_parts",
]
