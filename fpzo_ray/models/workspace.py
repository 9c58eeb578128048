"""A model with its trained coordinates: what every federated algorithm's client works on.

The model's parameters are views of one flat buffer (``models.flat.bind_flat_buffer``); a
mask trains only the kept coordinates (``kept_index``), read and written as one vector of d
numbers. The engine builds one per mask and reuses it for every client of a worker; a ZO
client's is a ``zo.client_update.ZOWorkspace``, which adds how the ZO steps execute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fpzo_ray.models.flat import ParameterLayout, read_trained, write_trained
from fpzo_ray.task.losses import PerSampleLoss, cross_entropy


@dataclass
class ModelWorkspace:
    """The client's model and its trained coordinates (built once per mask, reused)."""

    model: nn.Module
    layout: ParameterLayout
    flat: torch.Tensor
    kept_index: torch.Tensor | None  # None: every coordinate is trained
    #: The task's per-sample loss (``task.loss``), which every step of this model minimises.
    loss: PerSampleLoss = cross_entropy

    def trained_weights(self) -> torch.Tensor:
        return read_trained(self.flat, self.kept_index)

    def load(self, weights: torch.Tensor) -> None:
        write_trained(self.flat, self.kept_index, weights)
