"""A BP FedAvg client: E local SGD steps with backpropagation, under the mask.

The model's parameters are views of the flat buffer; only the trained coordinates are
updated (their gradient is read from the flat layout), so pruned weights stay exactly zero.
The client step is :func:`fpzo_ray.optim.client.client_sgd_step`, the same arithmetic as the ZO
clients', so the two baselines differ only in how the gradient is obtained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fpzo_ray.models.flat import ParameterLayout, read_trained, write_trained
from fpzo_ray.optim.client import client_sgd_step
from fpzo_ray.task.losses import PerSampleLoss, cross_entropy

#: ``(gradient, weights, start) -> gradient``: see :func:`bp_client_update`.
GradientAdjustment = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BPClientResult:
    """What a BP client's local steps produced."""

    final_weights: torch.Tensor  # trained coordinates after the local steps
    base_loss: float  # mean loss over the steps (each at the step's starting weights)


def flat_gradient(model: nn.Module, layout: ParameterLayout) -> torch.Tensor:
    """The gradients of all parameters in flat-buffer order (zeros where autograd gave none)."""
    params = dict(model.named_parameters())
    parts = []
    for slot in layout.slots:
        grad = params[slot.name].grad
        parts.append(
            torch.zeros(slot.numel, device=params[slot.name].device)
            if grad is None
            else grad.reshape(-1)
        )
    return torch.cat(parts)


def microbatches(
    x: torch.Tensor, y: torch.Tensor, size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batch in chunks of ``size`` samples (the whole batch when ``size`` <= 0)."""
    if size <= 0 or size >= y.shape[0]:
        yield x, y
        return
    for start in range(0, y.shape[0], size):
        yield x[start : start + size], y[start : start + size]


def accumulate_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    microbatch_size: int = 0,
    loss_fn: PerSampleLoss = cross_entropy,
) -> float:
    """Backpropagate the batch's mean loss (per sample: ``task.losses``) into the
    parameters' ``.grad``.

    With ``microbatch_size`` > 0 the batch goes through forward and backward in chunks and
    the gradients accumulate (gradient accumulation): the same gradient up to summation
    order, with the activations of one chunk alive instead of the whole batch's: the BP
    counterpart of ``zo.microbatch_size``. Returns the batch's mean loss.
    """
    if microbatch_size <= 0 or microbatch_size >= y.shape[0]:
        loss = loss_fn(model(x), y).mean()
        loss.backward()
        return float(loss.detach())
    total = 0.0
    for xc, yc in microbatches(x, y, microbatch_size):
        loss = loss_fn(model(xc), yc).sum() / y.shape[0]
        loss.backward()
        total += float(loss.detach())
    return total


def bp_client_update(
    model: nn.Module,
    layout: ParameterLayout,
    flat: torch.Tensor,
    kept_index: torch.Tensor | None,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    momentum: float,
    microbatch_size: int = 0,
    adjust_gradient: GradientAdjustment | None = None,
    loss_fn: PerSampleLoss = cross_entropy,
) -> BPClientResult:
    """Local SGD from the weights loaded in ``flat``; ``flat`` is restored afterwards.

    ``adjust_gradient(gradient, weights, start)``, when given, returns the gradient each step
    takes in place of the loss's (FedProx adds ``mu * (weights - start)``); all three are
    vectors over the trained coordinates."""
    start = read_trained(flat, kept_index)
    weights = start.clone()
    buffer: torch.Tensor | None = None
    losses = []
    try:
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            losses.append(accumulate_gradient(model, x, y, microbatch_size, loss_fn))
            grad = flat_gradient(model, layout)
            grad = grad if kept_index is None else grad[kept_index]
            if adjust_gradient is not None:
                grad = adjust_gradient(grad, weights, start)
            buffer = client_sgd_step(weights, grad, buffer, lr, momentum)
            write_trained(flat, kept_index, weights)
    finally:
        model.zero_grad(set_to_none=True)
        write_trained(flat, kept_index, start)
    return BPClientResult(weights, sum(losses) / len(losses))
