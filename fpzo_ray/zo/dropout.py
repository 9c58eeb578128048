"""Dropout in the forward passes of a ZO difference (``zo.dropout``).

A ZO difference compares two losses of the same batch, ``L(w + s z) - L(w - s z)``, and divides
by ``2 s`` (s is about 1e-3). Dropout draws a fresh mask in every pass, so two passes differ by
the masks as well as by the weights: the mask's change of the loss (of the order of the loss
itself) divided by ``2 s`` drowns the weights' change, and the estimate is mostly noise
(``python -m fpzo_ray.bench dropout`` measures it). Two remedies:

- ``off``: dropout layers are in eval mode during the passes: the difference is that of the
  deterministic network the server evaluates (the default, see the bench);
- ``same_mask``: each pass of direction k draws its masks from a generator seeded by that
  direction's seed, so both passes of a difference see the same masks (common random numbers)
  and the estimate is that of the dropout objective; it needs an estimator without a shared
  base pass (central).

``independent`` keeps PyTorch's behaviour, for comparison. Normalisation layers are untouched:
they stay in training mode (batch statistics). Plain PyTorch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The dropout layers of ``model`` (every ``nn.Dropout*``)."""
    return [m for m in model.modules() if isinstance(m, _DropoutNd)]


@contextlib.contextmanager
def dropout_off(model: nn.Module) -> Iterator[None]:
    """Inside, ``model``'s dropout layers are in eval mode (identity); their modes come back."""
    layers = [(m, m.training) for m in dropout_layers(model)]
    for m, _ in layers:
        m.eval()
    try:
        yield
    finally:
        for m, training in layers:
            m.train(training)


@contextlib.contextmanager
def seeded_randomness(seed: int, device: torch.device) -> Iterator[None]:
    """Inside, torch's global generator (the CPU's, and ``device``'s when it is a GPU) is
    seeded with ``seed``; outside, it continues as if nothing had drawn from it."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed % 2**63)
        yield
