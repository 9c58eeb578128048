"""Running statistics of normalisation layers: the model state beyond its parameters.

A BatchNorm layer (any of torch's ``_NormBase`` layers that tracks running statistics)
normalises a training batch by the batch's own mean and variance and keeps running averages of
them for evaluation. Federated training moves only the parameters: clients train in training
mode (batch statistics, so their losses never read the running averages), and a server that
evaluates in eval mode with the running averages a model was built with (mean 0, variance 1)
scores a model that learned well at chance. ``model.buffers`` chooses how the global model
gets statistics that fit its weights:

- ``aggregate`` (default): each client measures the statistics of the broadcast model on its
  batch (one forward pass, counted) and uploads them beside its update; the server takes
  their sample-weighted mean, as FedAvg does with parameters.
- ``recalibrate``: the server measures them itself, before each evaluation, on inputs of the
  validation split (never the test split; the labels are not read).
- ``batch_stats``: evaluation normalises each evaluation batch by its own statistics; no
  statistics exist or travel.
- ``local`` (FedBN's idea, for the statistics): each client normalises by statistics of its
  own data, measured on its training inputs with the model it scores and never sent; only a
  federated evaluation (``task.federated_eval_clients``) reads them. The server, which holds
  none, normalises its own evaluation by batch.

Models without such layers (this project's own, which use GroupNorm or batch statistics) have
nothing to keep: every policy is then a no-op. Plain PyTorch, nothing here knows Ray.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase


def norm_layers(model: nn.Module) -> list[tuple[str, _NormBase]]:
    """The normalisation layers of ``model`` that keep running statistics, in module order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, _NormBase)
        and module.track_running_stats
        and module.running_mean is not None
    ]


def _statistics_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Each norm layer's running mean and running variance, in :func:`norm_layers` order."""
    tensors = []
    for _, layer in norm_layers(model):
        assert layer.running_mean is not None and layer.running_var is not None
        tensors += [layer.running_mean, layer.running_var]
    return tensors


def statistics_size(model: nn.Module) -> int:
    """How many numbers the running statistics hold (means and variances): 0 without any."""
    return sum(int(t.numel()) for t in _statistics_tensors(model))


def read_statistics(model: nn.Module) -> torch.Tensor:
    """The running means and variances as one float32 vector (CPU), in :func:`norm_layers`
    order; empty for a model without any."""
    parts = [t.detach().float().flatten().cpu() for t in _statistics_tensors(model)]
    return torch.cat(parts) if parts else torch.zeros(0)


def write_statistics(model: nn.Module, values: torch.Tensor) -> None:
    """Load a :func:`read_statistics` vector into ``model``'s layers, in place."""
    offset = 0
    with torch.no_grad():
        for t in _statistics_tensors(model):
            n = t.numel()
            t.copy_(values[offset : offset + n].view_as(t))
            offset += n
    if offset != values.numel():
        raise ValueError(f"{values.numel()} statistics for a model that keeps {offset}")


@contextlib.contextmanager
def _kept_state(model: nn.Module) -> Iterator[list[tuple[str, _NormBase]]]:
    """Whatever happens inside, the norm layers' buffers, momentum and mode come back as they
    were (a client's runtime serves many clients; its model must not remember one)."""
    layers = norm_layers(model)
    saved = [
        (layer.momentum, layer.training, {k: b.clone() for k, b in layer.named_buffers()})
        for _, layer in layers
    ]
    try:
        yield layers
    finally:
        with torch.no_grad():
            for (_, layer), (momentum, training, buffers) in zip(layers, saved):
                layer.momentum = momentum
                layer.train(training)
                for key, value in buffers.items():
                    getattr(layer, key).copy_(value)


@torch.no_grad()
def measure_statistics(model: nn.Module, inputs: Iterable[torch.Tensor]) -> torch.Tensor:
    """The statistics of ``model`` as it is on ``inputs`` (batches): each layer's mean and
    (unbiased) variance of its input averaged over the batches, as a :func:`read_statistics`
    vector. Only the norm layers run in training mode (dropout stays off); the model's own
    buffers are left as they were."""
    with _kept_state(model) as layers:
        was_training = model.training
        model.eval()
        for _, layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # a cumulative average over the batches
            layer.train()
        try:
            for x in inputs:
                model(x)
            return read_statistics(model)
        finally:
            model.train(was_training)


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Inside, ``model`` (in eval mode) normalises each batch by its own statistics; its
    running statistics are left as they were."""
    with _kept_state(model) as layers:
        for _, layer in layers:
            layer.train()
        yield


@contextlib.contextmanager
def using_statistics(model: nn.Module, values: torch.Tensor) -> Iterator[None]:
    """Inside, ``model``'s norm layers hold ``values`` (a :func:`read_statistics` vector);
    their buffers come back as they were."""
    with _kept_state(model):
        write_statistics(model, values)
        yield
