"""The pruning methods: what each computes, where, and how its total becomes keep-scores.

A :class:`PruningMethod` is one entry of ``fpzo_ray.registry.PRUNING_METHODS`` (or a
researcher's own, named by import path in ``pruning.method``). It is one of three kinds:

- a **client saliency** (``client``): each sampled client computes an *additive* contribution
  (signed, over the prunable coordinates, zero where the mask has pruned) and the server sums
  them in client-id order before taking the keep-scores (``keep``); for NTK-SAP and SNIP this
  equals one centralised computation over the union of the clients' draws or batches;
- a **server saliency** (``server``): computed on the server, data-free;
- a **direct mask** (``direct``): no saliency (dense, random, layer-matched random).

Saliencies are pruned iteratively on the exponential schedule (``pruning.iterations``).
``forward_passes`` is a client saliency's cost per input sample and draw, in forward passes
(backward counted as two), for the FLOPs accounting; ``data_batches``: it reads local
labelled batches (one per draw), drawn by the caller.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.pruning.masks import Mask, kept_count, random_mask
from fpzo_ray.pruning.ntk_sap import ntk_sap_mask_gradient
from fpzo_ray.pruning.saliencies import (
    Batch,
    grasp_contribution,
    magnitude_scores,
    snip_contribution,
    synflow_scores,
)
from fpzo_ray.pruning.scopes import random_layerwise_mask
from fpzo_ray.registry import PRUNING_METHODS, is_import_path
from fpzo_ray.task.losses import PerSampleLoss, cross_entropy


@dataclass(frozen=True)
class SaliencyInputs:
    """Everything a saliency may read (a client's, or the server's for a server saliency)."""

    model: nn.Module
    layout: ParameterLayout
    mask: Mask
    initial_weights: torch.Tensor  # the flat initial parameters (the model seed's)
    draw_seeds: Sequence[int]  # the draws' seeds (``protocol.pruning_draw_seeds``)
    batches: Sequence[Batch] | None  # one per draw, for the methods that read data
    batch_size: int
    input_shape: tuple[int, ...]
    epsilon: float
    draw_init: str
    loss: PerSampleLoss = cross_entropy  # the task's (``task.loss``), for SNIP and GraSP


@dataclass(frozen=True)
class ClientSaliency:
    """A client saliency: how to compute it, whether it reads data, its cost."""

    compute: Callable[[SaliencyInputs], torch.Tensor]
    data_batches: bool = False
    forward_passes: int = 3


#: Builds a mask without a saliency: ``direct(layout, density, generator, reference)`` where
#: ``reference(density)`` builds ``pruning.reference_method``'s mask, and ``layer_scope``
#: says ``pruning.scope: layer``.
DirectMask = Callable[
    [ParameterLayout, float, torch.Generator, Callable[[float], Mask], bool], Mask
]


def _identity(total: torch.Tensor) -> torch.Tensor:
    return total


def _absolute(total: torch.Tensor) -> torch.Tensor:
    return total.abs()


def _negated(total: torch.Tensor) -> torch.Tensor:
    return -total


@dataclass(frozen=True)
class PruningMethod:
    """One pruning method (see the module docstring): exactly one of ``client``, ``server``
    and ``direct`` is set."""

    label: str  # how figures and tables name it
    client: ClientSaliency | None = None
    server: Callable[[SaliencyInputs], torch.Tensor] | None = None
    direct: DirectMask | None = None
    #: total (summed contributions, or a server score) -> keep-scores, higher = keep
    keep: Callable[[torch.Tensor], torch.Tensor] = _identity
    #: whether ``random_layerwise`` may copy this method's per-layer densities
    reference: bool = True

    def __post_init__(self) -> None:
        if sum(part is not None for part in (self.client, self.server, self.direct)) != 1:
            raise ValueError(f"{self.label}: set exactly one of client, server and direct")


# -- the registered methods -------------------------------------------------------------------


def _ntk_sap(inputs: SaliencyInputs, with_data: bool = False) -> torch.Tensor:
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


def _on_batches(
    contribution: Callable[..., torch.Tensor],
) -> Callable[[SaliencyInputs], torch.Tensor]:
    """A saliency of the client's batches under the task's loss (SNIP, GraSP)."""

    def compute(inputs: SaliencyInputs) -> torch.Tensor:
        assert inputs.batches is not None
        return contribution(
            inputs.model,
            inputs.layout,
            inputs.mask,
            inputs.initial_weights,
            inputs.batches,
            loss=inputs.loss,
        )

    return compute


_snip = _on_batches(snip_contribution)
_grasp = _on_batches(grasp_contribution)


def _magnitude(inputs: SaliencyInputs) -> torch.Tensor:
    return magnitude_scores(inputs.layout, inputs.mask, inputs.initial_weights)


def _synflow(inputs: SaliencyInputs) -> torch.Tensor:
    return synflow_scores(
        inputs.model, inputs.layout, inputs.mask, inputs.initial_weights, inputs.input_shape
    )


def _dense(layout: ParameterLayout, *_: Any) -> Mask:
    return Mask.dense(layout)


def _random(
    layout: ParameterLayout,
    density: float,
    gen: torch.Generator,
    reference: Callable[[float], Mask],
    layer_scope: bool,
) -> Mask:
    if layer_scope:
        return random_layerwise_mask(layout, _uniform_layers(layout, density), gen)
    return random_mask(layout, density, gen)


def _uniform_layers(layout: ParameterLayout, density: float) -> Mask:
    """A stand-in reference with the same density in every layer (for random, layer scope)."""
    kept = torch.zeros(layout.num_prunable, dtype=torch.bool)
    start = 0
    for slot in layout.prunable_slots:
        kept[start : start + kept_count(slot.numel, density)] = True
        start += slot.numel
    return Mask(layout, kept)


def _random_layerwise(
    layout: ParameterLayout,
    density: float,
    gen: torch.Generator,
    reference: Callable[[float], Mask],
    layer_scope: bool,
) -> Mask:
    return random_layerwise_mask(layout, reference(density), gen)


# NTK-SAP: two forward passes and a backward through both per draw; SNIP: forward and
# backward; GraSP: a gradient, then a Hessian-vector product (about twice that).
DENSE = PruningMethod("dense", direct=_dense, reference=False)
RANDOM = PruningMethod("random", direct=_random)
RANDOM_LAYERWISE = PruningMethod(
    "random (layer-matched)", direct=_random_layerwise, reference=False
)
MAGNITUDE = PruningMethod("magnitude", server=_magnitude)
SNIP = PruningMethod("SNIP", client=ClientSaliency(_snip, True, 3), keep=_absolute)
GRASP = PruningMethod("GraSP", client=ClientSaliency(_grasp, True, 9), keep=_negated)
SYNFLOW = PruningMethod("SynFlow", server=_synflow)
NTK_SAP = PruningMethod("NTK-SAP", client=ClientSaliency(_ntk_sap, False, 6), keep=_absolute)
NTK_SAP_DATA = PruningMethod(
    "NTK-SAP (data)",
    client=ClientSaliency(functools.partial(_ntk_sap, with_data=True), True, 6),
    keep=_absolute,
)
# The centralised reference: NTK-SAP on the server over the very draws the federated
# clients would make (``sim.pruning_phase`` gathers their seeds).
NTK_SAP_CENTRAL = PruningMethod("NTK-SAP (central)", server=_ntk_sap, keep=_absolute)


def pruning_method(name_or_path: str, args: Mapping[str, Any] | None = None) -> PruningMethod:
    """The method ``pruning.method`` names. A researcher's import path may name a
    :class:`PruningMethod` or a plain function ``saliency(inputs: SaliencyInputs, **args)``
    returning scores over the prunable coordinates (higher = keep). A plain function reads no
    data, so it is the server's: computed once over the draws the sampled clients would make,
    and billed to no client (a saliency that clients compute and upload is a
    ``PruningMethod(client=ClientSaliency(...))``, billed with its declared passes)."""
    found = PRUNING_METHODS.load(name_or_path)
    if isinstance(found, PruningMethod):
        return found
    compute = functools.partial(found, **dict(args or {}))
    label = name_or_path.split(":")[-1] if is_import_path(name_or_path) else name_or_path
    return PruningMethod(label, server=compute)


def checked_scores(label: str, scores: Any, count: int) -> torch.Tensor:
    """``scores`` when it is what a saliency must return, a float tensor of ``count`` finite
    values (one per prunable weight); else a ValueError naming the method and what it gave
    (a researcher's method returning a list, the wrong length or NaN would otherwise be
    summed, broadcast or ranked into a mask that only looks like that method's)."""
    if not isinstance(scores, torch.Tensor):
        raise ValueError(
            f"pruning method {label} returned {type(scores).__name__}, must be a tensor of "
            f"{count} scores (one per prunable weight)"
        )
    if tuple(scores.shape) != (count,):
        raise ValueError(
            f"pruning method {label} returned shape {tuple(scores.shape)}, must be ({count},) "
            "(one score per prunable weight)"
        )
    if not scores.is_floating_point() or not bool(torch.isfinite(scores).all()):
        raise ValueError(f"pruning method {label} returned non-finite or non-float scores")
    return scores


def keep_scores(method: str, total: torch.Tensor) -> torch.Tensor:
    """The keep-scores (higher = keep) of registered method ``method``'s total."""
    return pruning_method(method).keep(total)


def pruning_label(name_or_path: str) -> str:
    """How figures name a method, without building it (a label, or the path's attribute)."""
    if is_import_path(name_or_path) and name_or_path not in PRUNING_METHODS:
        return name_or_path.split(":")[-1]
    return pruning_method(name_or_path).label
