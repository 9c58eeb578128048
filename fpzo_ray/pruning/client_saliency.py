"""The pruning methods' client part: what a federated client computes in a pruning iteration.

Each method in :data:`CLIENT_SALIENCIES` returns an *additive* contribution (signed, over the
prunable coordinates, zero where the mask has pruned): the server sums the clients' vectors
before taking the keep-scores (``saliencies.keep_scores``), which for NTK-SAP and SNIP equals
one centralised computation over the union of the clients' draws or batches.

``data_batches``: the method reads local labelled batches (one per draw), drawn by the caller;
``forward_passes``: its cost per input sample and draw, in forward passes (backward counted as
two), for the FLOPs accounting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.models.staged import StagedModel
from fpzo_ray.pruning.masks import Mask
from fpzo_ray.pruning.ntk_sap import ntk_sap_mask_gradient
from fpzo_ray.pruning.saliencies import Batch, grasp_contribution, snip_contribution


@dataclass(frozen=True)
class SaliencyInputs:
    """Everything a client's saliency may read."""

    model: StagedModel
    layout: ParameterLayout
    mask: Mask
    initial_weights: torch.Tensor  # the flat initial parameters (the model seed's)
    draw_seeds: Sequence[int]  # one per draw (``protocol.pruning_draw_seeds``)
    batches: Sequence[Batch] | None  # one per draw, for the methods that read data
    batch_size: int
    input_shape: tuple[int, int, int]
    epsilon: float
    draw_init: str


@dataclass(frozen=True)
class ClientSaliency:
    """One method's client part: how to compute it, whether it reads data, its cost."""

    compute: Callable[[SaliencyInputs], torch.Tensor]
    data_batches: bool
    forward_passes: int


def _ntk_sap(inputs: SaliencyInputs, with_data: bool) -> torch.Tensor:
    images = [x for x, _ in inputs.batches] if with_data and inputs.batches else None
    return ntk_sap_mask_gradient(
        inputs.model,
        inputs.layout,
        inputs.mask,
        inputs.draw_seeds,
        inputs.batch_size,
        inputs.input_shape,
        inputs.epsilon,
        inputs=images,
        draw_init=inputs.draw_init,
    )


def _snip(inputs: SaliencyInputs) -> torch.Tensor:
    assert inputs.batches is not None
    return snip_contribution(
        inputs.model, inputs.layout, inputs.mask, inputs.initial_weights, inputs.batches
    )


def _grasp(inputs: SaliencyInputs) -> torch.Tensor:
    assert inputs.batches is not None
    return grasp_contribution(
        inputs.model, inputs.layout, inputs.mask, inputs.initial_weights, inputs.batches
    )


#: Method -> its client part. NTK-SAP: two forward passes and a backward through both per
#: draw; SNIP: forward and backward; GraSP: a gradient, then a Hessian-vector product (about
#: twice that).
CLIENT_SALIENCIES: dict[str, ClientSaliency] = {
    "ntk_sap": ClientSaliency(lambda i: _ntk_sap(i, with_data=False), False, 6),
    "ntk_sap_data": ClientSaliency(lambda i: _ntk_sap(i, with_data=True), True, 6),
    "snip": ClientSaliency(_snip, True, 3),
    "grasp": ClientSaliency(_grasp, True, 9),
}
