"""Metrics the server's evaluation reports beside the loss, every ``training.eval_every``
rounds, as ``val_<name>`` and ``test_<name>`` (logged to MLflow with the other metrics).

``accuracy`` and ``macro_f1`` are built in. Accuracy is streamed batch by batch: for
class-index targets the share of samples (or tokens, padding excluded) whose arg-max output
is the target; for 0/1 targets with an output each (multi-label) the share of labels whose
logit has the target's sign.
A researcher's metric, named by import path, is called once per split as
``metric(outputs, targets)`` on the whole split's outputs (so F1, AUROC, R^2 see every
sample at once) and returns a number.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fpzo_ray.task.losses import IGNORE_INDEX

#: ``metric(outputs, targets) -> float`` on a whole split.
Metric = Callable[[torch.Tensor, torch.Tensor], float]


def accuracy_counts(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """``(correct, counted)`` of a batch, by shape: an output per class for each target
    (``(N, C)`` against ``(N,)``, ``(N, T, V)`` against ``(N, T)``) scores by arg-max, padding
    aside; an output per target (multi-label, binary) by the logit's sign."""
    if outputs.ndim == targets.ndim + 1:
        counted = targets != IGNORE_INDEX
        return int(((outputs.argmax(-1) == targets) & counted).sum()), int(counted.sum())
    if outputs.numel() == targets.numel():
        correct = (outputs.reshape(targets.shape) > 0) == (targets > 0.5)
        return int(correct.sum()), correct.numel()
    raise ValueError(
        f"accuracy: outputs of shape {tuple(outputs.shape)} do not score targets of shape "
        f"{tuple(targets.shape)} (one output per class, or one per target)"
    )


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    correct, counted = accuracy_counts(outputs, targets)
    return correct / max(counted, 1)


def macro_f1(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The mean over the classes present in ``targets`` of F1 = 2 TP / (2 TP + FP + FN),
    predictions by arg-max: accuracy's complement on a label-skewed test set."""
    predicted = outputs.argmax(-1)
    counted = targets != IGNORE_INDEX
    scores = []
    for c in targets[counted].unique():
        hit = int(((predicted == c) & (targets == c) & counted).sum())
        miss = int((((predicted == c) != (targets == c)) & counted).sum())
        scores.append(2 * hit / (2 * hit + miss))
    return sum(scores) / max(len(scores), 1)


NAMED_METRICS: dict[str, Metric] = {"accuracy": accuracy, "macro_f1": macro_f1}
