"""The global model on the validation and test splits, as the server reports it.

Validation metrics are what selection and early stopping read; test metrics are only
reported. The evaluator owns nothing: it loads the weights it is given into the server's
model and scores it in batches in eval mode (dropout off), its running statistics (a
BatchNorm's) as ``model.buffers`` says (``models.statistics``).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from fpzo_ray.data.registry import ArrayDataset
from fpzo_ray.models.statistics import (
    batch_statistics,
    measure_statistics,
    statistics_size,
    write_statistics,
)

#: ``model.buffers: recalibrate`` measures the statistics on at most this many validation
#: inputs (the first ones of the seeded, stratified split).
RECALIBRATION_SAMPLES = 1024


class Evaluator:
    """Scores flat global weights on a data set's validation (when held out) and test splits."""

    def __init__(
        self,
        model: nn.Module,
        flat: torch.Tensor,
        dataset: ArrayDataset,
        device: torch.device,
        batch_size: int = 1024,
        buffers: str = "aggregate",
    ) -> None:
        self.model = model
        self.flat = flat
        self.device = device
        self.batch_size = batch_size
        self.test = dataset.test_set()
        self.validation = dataset.validation_set()
        self.buffers = buffers if statistics_size(model) else "none"
        if self.buffers == "recalibrate" and self.validation is None:
            raise ValueError(
                "model.buffers: recalibrate measures the running statistics on validation "
                "inputs, and the data set has no validation split (data.validation_fraction)"
            )

    @torch.no_grad()
    def evaluate(
        self, weights: torch.Tensor, statistics: torch.Tensor | None = None
    ) -> dict[str, float]:
        """``val_accuracy`` and ``val_loss`` (with a validation split), ``test_accuracy`` and
        ``test_loss`` of the model with the full flat ``weights`` and, under ``aggregate``,
        the running ``statistics`` the clients measured."""
        self.flat.copy_(weights.to(self.device))
        self.model.eval()
        if self.buffers == "aggregate" and statistics is not None:
            write_statistics(self.model, statistics.to(self.device))
        elif self.buffers == "recalibrate":
            assert self.validation is not None
            inputs = self.validation[0][:RECALIBRATION_SAMPLES].to(self.device)
            batches = inputs.split(self.batch_size)
            write_statistics(self.model, measure_statistics(self.model, batches).to(self.device))
        metrics: dict[str, float] = {}
        by_batch = self.buffers == "batch_stats"
        with batch_statistics(self.model) if by_batch else contextlib.nullcontext():
            if self.validation is not None:
                accuracy, loss = self._accuracy_and_loss(*self.validation)
                metrics.update(val_accuracy=accuracy, val_loss=loss)
            accuracy, loss = self._accuracy_and_loss(*self.test)
            metrics.update(test_accuracy=accuracy, test_loss=loss)
        return metrics

    def _accuracy_and_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        correct, loss_sum = 0, 0.0
        for start in range(0, labels.shape[0], self.batch_size):
            x = images[start : start + self.batch_size].to(self.device)
            y = labels[start : start + self.batch_size].to(self.device)
            logits = self.model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        n = int(labels.shape[0])
        return correct / n, loss_sum / n
