"""Models as a chain of stages: ``forward(x) = stages[n-1](...stages[0](x))``.

The chain is what lets the layer-wise ZO variant resume a forward pass from the cached input
of the stage it perturbs (``zo.perturbation_scope: layerwise``), and what the accounting uses
to name blocks. Every model of the registry is a :class:`StagedModel`; a researcher's model
may be any ``nn.Module`` (every other ZO mode, pruning and saliency runs it), and needs to be
a :class:`StagedModel` only for the layer-wise scope (``zo.layerwise.stage_blocks_for``).
Its parameters must then all live in ``stages`` (nothing outside the chain).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


class StagedModel(nn.Module):
    """A model as a chain of stages, so a forward pass can resume from any stage's input
    (the layer-wise ZO variant reuses the unperturbed prefix)."""

    def __init__(self, stages: Iterable[nn.Module]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(0, x)

    def forward_from(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run stages ``index, index + 1, ...`` on ``x`` (the input of stage ``index``)."""
        for stage in self.stages[index:]:
            x = stage(x)
        return x


def flat_features(stages: Iterable[nn.Module], input_shape: Sequence[int]) -> int:
    """Per-sample output size of ``stages`` on an input of ``input_shape`` (a dry run)."""
    with torch.no_grad():
        x = torch.zeros((1, *input_shape))
        for stage in stages:
            x = stage(x)
    return int(x[0].numel())


@dataclass(frozen=True)
class StageBlocks:
    """The trained coordinates grouped by the stage that owns them (built by
    ``zo.layerwise.stage_blocks``): the layer-wise ZO variant perturbs one block at a time,
    drawn with probability d_b / d, and the server rebuilds its estimate block by block. It
    is a property of the model and its mask, so every algorithm's server half receives it."""

    positions: tuple[torch.Tensor, ...]  # per stage: indices into the trained vector
    flat_index: tuple[torch.Tensor, ...]  # per stage: indices into the flat buffer
    cumulative: torch.Tensor  # float64 cumulative probabilities p_b = d_b / d

    @property
    def num_stages(self) -> int:
        return len(self.positions)

    def probability(self, stage: int) -> float:
        previous = float(self.cumulative[stage - 1]) if stage > 0 else 0.0
        return float(self.cumulative[stage]) - previous
