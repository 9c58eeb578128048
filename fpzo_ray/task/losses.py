"""Per-sample losses: what every client minimises, BP or BP-free.

A loss here maps a batch's model outputs and targets to one loss per sample, ``(N,)``. The
batch's loss is their mean, and a batch split into chunks (``zo.microbatch_size``,
``training.bp_microbatch_size``, ``zo.batching: batched``, which evaluates many perturbed
copies in one pass) sums the same per-sample values, so every path computes one number.

The named losses (``task.loss``) cover the usual tasks: ``cross_entropy`` (class indices
``(N,)``), ``mse`` (real targets ``(N,)`` or ``(N, D)``), ``bce_with_logits`` (multi-label:
0/1 targets ``(N, C)``) and ``token_cross_entropy`` (outputs ``(N, T, V)``, token targets
``(N, T)``, :data:`IGNORE_INDEX` for padding). A researcher's loss, named by import path, is
called as ``loss(outputs, targets)``, with ``reduction="none"`` where it takes that keyword
(so ``torch.nn.functional:smooth_l1_loss`` works as it is); a result with more than one value
per sample is averaged per sample.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F

#: ``loss(outputs, targets) -> (N,)``: one loss per sample.
PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Targets of ``token_cross_entropy`` equal to this are padding: neither loss nor accuracy.
IGNORE_INDEX = -100


def per_sample_mean(losses: torch.Tensor) -> torch.Tensor:
    """``(N, ...)`` losses averaged over everything but the batch dimension: ``(N,)``."""
    return losses.reshape(losses.shape[0], -1).mean(1) if losses.ndim > 1 else losses


def _like_targets(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Outputs reshaped to the targets' shape where only unit dimensions differ: a
    regression model's ``(N, 1)`` against targets ``(N,)``."""
    if outputs.shape != targets.shape and outputs.numel() == targets.numel():
        return outputs.reshape(targets.shape)
    return outputs


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    outputs = _like_targets(outputs, targets)
    return per_sample_mean(F.mse_loss(outputs, targets.to(outputs.dtype), reduction="none"))


def bce_with_logits(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    outputs = _like_targets(outputs, targets)
    losses = F.binary_cross_entropy_with_logits(
        outputs, targets.to(outputs.dtype), reduction="none"
    )
    return per_sample_mean(losses)


def token_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean over each sequence's tokens that are not :data:`IGNORE_INDEX` (0 for a
    sequence of padding only)."""
    per_token = F.cross_entropy(
        outputs.flatten(0, -2), targets.flatten(), reduction="none", ignore_index=IGNORE_INDEX
    ).view(targets.shape[0], -1)
    counted = (targets != IGNORE_INDEX).view(targets.shape[0], -1).to(per_token.dtype)
    return (per_token * counted).sum(1) / counted.sum(1).clamp(min=1.0)


NAMED_LOSSES: dict[str, PerSampleLoss] = {
    "cross_entropy": cross_entropy,
    "mse": mse,
    "bce_with_logits": bce_with_logits,
    "token_cross_entropy": token_cross_entropy,
}


class UserLoss:
    """A researcher's loss function as a :data:`PerSampleLoss` (see the module docstring)."""

    def __init__(self, function: Callable[..., torch.Tensor], name: str) -> None:
        self.function = function
        self.name = name
        try:
            takes = "reduction" in inspect.signature(function).parameters
        except (TypeError, ValueError):  # a builtin without a signature
            takes = False
        self.kwargs = {"reduction": "none"} if takes else {}

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = self.function(outputs, targets, **self.kwargs)
        if not isinstance(losses, torch.Tensor) or losses.ndim == 0:
            raise ValueError(
                f"task.loss: {self.name} returned {_described(losses)}; a loss must return "
                "one value per sample (N,) or per element (N, ...)"
            )
        if losses.shape[0] != outputs.shape[0]:
            raise ValueError(
                f"task.loss: {self.name} returned shape {tuple(losses.shape)} for a batch of "
                f"{outputs.shape[0]}; a loss must return one value per sample"
            )
        return per_sample_mean(losses)


def _described(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
