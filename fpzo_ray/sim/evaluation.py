"""The global model on the validation and test splits, as the server reports it.

Validation metrics are what selection and early stopping read; test metrics are only
reported. Each split gets the task's loss (``<split>_loss``, the mean per-sample loss) and
its metrics (``<split>_<metric>``: ``task.metrics``). Scoring both whole splits is what a
long run's price was made of (a LeNet-5 round's clients: ~0.35 s; MNIST's 16k evaluation
images: ~1.1 s), so :meth:`Evaluator.evaluate` runs every ``training.eval_every`` rounds, and
every round :meth:`Evaluator.evaluate_subset` scores a fixed, stratified, seeded sample of
the validation split (``training.eval_subset`` samples, ``val_subset_<...>``: the name says
what it was computed on): a progress signal, never what a selection reads. The evaluator
owns nothing: it loads
the weights it is given into the server's model and scores it in batches in eval mode
(dropout off), its running statistics (a BatchNorm's) as ``model.buffers`` says
(``models.statistics``; under ``local``, where each client's statistics stay on the client,
by each batch's own). :func:`score` is the scoring itself, which clients also run for a
federated evaluation on their held-out data (``sim.client``).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from fpzo_ray.data.registry import ArrayDataset
from fpzo_ray.data.validation import validation_subset
from fpzo_ray.models.statistics import (
    batch_statistics,
    measure_statistics,
    statistics_size,
    write_statistics,
)
from fpzo_ray.task import CROSS_ENTROPY, Task, accuracy_counts

#: Inference batch: LeNet-5 scored MNIST's 16k images in 0.90 s a pass at 256 and 1.27 s
#: at 1,024 (one thread, this project's 2-core machine): small batches stay in cache.
EVAL_BATCH_SIZE = 256
#: Where the model normalises by each batch's own statistics (``batch_stats``, ``local``),
#: the batch is part of the result: those score batches of this many.
STATISTICS_BATCH_SIZE = 1024

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
        batch_size: int = EVAL_BATCH_SIZE,
        buffers: str = "aggregate",
        task: Task = CROSS_ENTROPY,
        subset_size: int = 0,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.task = task
        self.flat = flat
        self.device = device
        self.batch_size = batch_size
        self.test = dataset.test_set()
        self.validation = dataset.validation_set()
        # the per-round sample (``evaluate_subset``); none without a validation split
        self.subset: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.validation is not None and subset_size > 0:
            assert dataset.val_labels is not None
            chosen = torch.from_numpy(validation_subset(dataset.val_labels, subset_size, seed))
            self.subset = (self.validation[0][chosen], self.validation[1][chosen])
        self.buffers = buffers if statistics_size(model) else "none"
        self.recalibrated: torch.Tensor | None = None  # the last ``recalibrate`` measured
        if self.buffers == "recalibrate" and self.validation is None:
            raise ValueError(
                "model.buffers: recalibrate measures the running statistics on validation "
                "inputs, and the data set has no validation split (data.validation_fraction)"
            )

    @torch.no_grad()
    def evaluate(
        self, weights: torch.Tensor, statistics: torch.Tensor | None = None
    ) -> dict[str, float]:
        """``val_loss`` and ``val_<metric>`` (with a validation split), ``test_loss`` and
        ``test_<metric>`` of the model with the full flat ``weights`` and, under
        ``aggregate``, the running ``statistics`` the clients measured."""
        return self._score({"val": self.validation, "test": self.test}, weights, statistics)

    @torch.no_grad()
    def evaluate_subset(
        self, weights: torch.Tensor, statistics: torch.Tensor | None = None
    ) -> dict[str, float]:
        """``val_subset_loss`` and ``val_subset_<metric>``: the same model on the fixed
        validation sample (nothing without one)."""
        if self.subset is None:
            return {}
        return self._score({"val_subset": self.subset}, weights, statistics)

    def _score(
        self,
        splits: dict[str, tuple[torch.Tensor, torch.Tensor] | None],
        weights: torch.Tensor,
        statistics: torch.Tensor | None,
    ) -> dict[str, float]:
        self.flat.copy_(weights.to(self.device))
        self.model.eval()
        if self.buffers == "aggregate" and statistics is not None:
            write_statistics(self.model, statistics.to(self.device))
        elif self.buffers == "recalibrate":
            assert self.validation is not None
            inputs = self.validation[0][:RECALIBRATION_SAMPLES].to(self.device)
            batches = inputs.split(STATISTICS_BATCH_SIZE)
            self.recalibrated = measure_statistics(self.model, batches)
            write_statistics(self.model, self.recalibrated.to(self.device))
        metrics: dict[str, float] = {}
        # ``local``: the server holds no client's statistics, so it normalises by batch
        by_batch = self.buffers in ("batch_stats", "local")
        batch_size = STATISTICS_BATCH_SIZE if by_batch else self.batch_size
        with batch_statistics(self.model) if by_batch else contextlib.nullcontext():
            for split, data in splits.items():
                if data is not None:
                    scores = score(self.model, self.task, *data, batch_size, self.device)
                    metrics.update({f"{split}_{k}": v for k, v in scores.items()})
        return metrics


@torch.no_grad()
def score(
    model: nn.Module,
    task: Task,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """``model`` (as it is: its mode and statistics are the caller's) on one split: ``loss``
    (the mean per-sample loss) and the task's metrics, batch by batch. Accuracy is counted as
    it goes; a researcher's metric sees the whole split's outputs, gathered on the CPU only
    then. The server's evaluation and a client's federated one both score this way."""
    own = {k: m for k, m in task.metrics.items() if k != "accuracy"}
    counts = [0, 0]
    loss_sum = 0.0
    outputs: list[torch.Tensor] = []
    for start in range(0, targets.shape[0], batch_size):
        x = inputs[start : start + batch_size].to(device)
        y = targets[start : start + batch_size].to(device)
        out = model(x)
        loss_sum += float(task.loss(out, y).sum())
        if "accuracy" in task.metrics:
            counts = [a + b for a, b in zip(counts, accuracy_counts(out, y))]
        if own:
            outputs.append(out.cpu())
    scores = {"loss": loss_sum / int(targets.shape[0])}
    if "accuracy" in task.metrics:
        scores["accuracy"] = counts[0] / max(counts[1], 1)
    for key, metric in own.items():
        scores[key] = _number(key, metric(torch.cat(outputs), targets))
    return scores


def _number(key: str, value: object) -> float:
    """A metric's value as a float: a tensor of one element or a number; else one line."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(
            f"task.metrics: {key} returned a {type(value).__name__}, not a number"
        ) from None
