"""A client's whole ZO contribution to a round, and the server's reconstruction of it.

FedSGD (E = 1, no client step): the client uploads the K loss differences at the broadcast
weights; the server rebuilds the estimate. FedAvg (E local steps): the client estimates, clips
and takes a client SGD step E times and uploads the E x K differences; the server replays the
same steps from the same seeds (:func:`replay_local_steps`) and obtains the client's final
weights bit for bit, or the client uploads its masked dense update instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from fpzo_ray.models.staged import StageBlocks
from fpzo_ray.models.workspace import ModelWorkspace
from fpzo_ray.optim.client import client_sgd_step, clip_inf_norm_
from fpzo_ray.task.losses import PerSampleLoss, cross_entropy
from fpzo_ray.zo.dropout import dropout_layers, dropout_off
from fpzo_ray.zo.estimator import (
    ZOResult,
    ZOUpdateSpec,
    estimate_from_differences,
    loss_differences,
)
from fpzo_ray.zo.execution.batched import vmap_differences
from fpzo_ray.zo.execution.stacked import (
    CannotStack,
    stacked_differences,
    stacked_losses,
    unsupported_module,
)
from fpzo_ray.zo.layerwise import (
    layerwise_differences,
    layerwise_estimate_from_differences,
)

if TYPE_CHECKING:
    from fpzo_ray.zo.execution.compiled import CompiledForwards

logger = logging.getLogger(__name__)


@dataclass
class ZOWorkspace(ModelWorkspace):
    """A client's model workspace with what its ZO steps need to execute.

    ``blocks`` (the layer-wise scope) need a ``StagedModel`` (``zo.layerwise.stage_blocks_for``).
    """

    blocks: StageBlocks | None = None  # for the layer-wise variant
    compiled: CompiledForwards | None = None  # ``simulation.compile``
    #: What ``zo.batching: auto`` runs for this model (``zo.execution.auto_batching``; its
    #: builder knows the model's cost).
    auto_batching: str = "loop"
    #: ``zo.batching: batched``: the module that cannot be stacked (None: all can); decided
    #: at the first batched step of this workspace, which then runs in loop mode.
    unstackable: str | None = field(default=None, init=False, repr=False)
    _stack_checked: bool = field(default=False, init=False, repr=False)

    def batching(self, spec: ZOUpdateSpec) -> str:
        """The mode this workspace's full-scope steps run in under ``spec``: ``auto``
        resolved (micro-batching streams one model: loop)."""
        if spec.batching != "auto":
            return spec.batching
        return "loop" if spec.microbatch_size > 0 else self.auto_batching

    def runs_as_device(self, spec: ZOUpdateSpec) -> bool:
        """Whether a step under ``spec`` runs as a device runs it: one perturbed model at a
        time (``loop``, or the layer-wise variant's own loop), eager. Otherwise the device's
        memory is measured on a separate reference step (``sim.client``)."""
        one_at_a_time = spec.perturbation_scope == "layerwise" or self.batching(spec) == "loop"
        return one_at_a_time and self.compiled is None

    def can_stack(self) -> bool:
        """Whether ``zo.batching: batched`` can stack this model (decided once, logged once)."""
        if not self._stack_checked:
            self._stack_checked = True
            found = unsupported_module(self.model)
            if found is not None:
                self.cannot_stack(found)
        return self.unstackable is None

    def cannot_stack(self, what: str) -> None:
        """Run this workspace's batched steps in loop mode from now on, saying why."""
        self._stack_checked = True
        self.unstackable = what
        logger.warning("zo.batching batched cannot stack %s; running loop", what)


def _differences(
    ws: ZOWorkspace,
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: Sequence[int],
    spec: ZOUpdateSpec,
    with_estimate: bool,
) -> ZOResult:
    same_mask = spec.dropout == "same_mask"
    if spec.perturbation_scope == "layerwise":
        assert ws.blocks is not None
        return layerwise_differences(
            ws.model,
            lambda out: float(ws.loss(out, y).mean()),
            x,
            ws.flat,
            ws.blocks,
            seeds,
            spec.estimator,
            with_estimate,
        )
    batching = "loop" if same_mask else ws.batching(spec)  # it seeds each pass of the loop
    if batching == "batched" and ws.can_stack():
        try:
            return stacked_differences(
                ws.model,
                ws.layout,
                ws.flat,
                ws.kept_index,
                x,
                y,
                seeds,
                spec.estimator,
                spec.chunk_size,
                with_estimate,
                ws.compiled.stacked_losses if ws.compiled else stacked_losses,
                ws.loss,
            )
        except CannotStack as exc:  # found in the pass (shapes); the weights are untouched
            ws.cannot_stack(str(exc))
    if batching == "vmap":
        return vmap_differences(
            ws.model,
            ws.layout,
            ws.flat,
            ws.kept_index,
            x,
            y,
            seeds,
            spec.estimator,
            chunk_size=spec.chunk_size or 8,
            with_estimate=with_estimate,
            loss=ws.loss,
        )
    return loss_differences(
        lambda: batch_loss(
            ws.compiled.model if ws.compiled else ws.model, x, y, spec.microbatch_size, ws.loss
        ),
        ws.flat,
        ws.kept_index,
        seeds,
        spec.estimator,
        with_estimate,
        same_randomness=same_mask,
    )


def batch_loss(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    microbatch_size: int,
    loss: PerSampleLoss = cross_entropy,
) -> float:
    """The batch's mean ``loss``, streamed through chunks of ``microbatch_size`` samples.

    A ZO step needs only the scalar loss, so the batch need not pass through the network at
    once: chunking bounds the live activations by those of one chunk. With per-sample
    normalisation the loss is the same (up to summation order).
    """
    if microbatch_size <= 0 or microbatch_size >= y.shape[0]:
        return float(loss(model(x), y).mean())
    total = 0.0
    for start in range(0, y.shape[0], microbatch_size):
        chunk = slice(start, start + microbatch_size)
        total += float(loss(model(x[chunk]), y[chunk]).sum())
    return total / y.shape[0]


@dataclass(frozen=True)
class ZOClientResult:
    """What a ZO client's round produced: its upload and what it cost."""

    step_differences: tuple[torch.Tensor, ...]  # (K,) per local step: the upload
    step_results: tuple[ZOResult, ...]  # per step, for accounting (passes, stage runs)
    base_loss: float  # mean over steps of the loss at the step's starting weights
    final_weights: torch.Tensor | None  # after the local steps (None in FedSGD)


def zo_client_update(
    ws: ZOWorkspace,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    step_seeds: Sequence[Sequence[int]],
    spec: ZOUpdateSpec,
    local_steps: bool,
    with_estimate: bool = False,
) -> ZOClientResult:
    """Run a client's ZO work from the weights currently loaded in ``ws``.

    ``batches`` and ``step_seeds`` have one entry per local step. With ``local_steps`` the
    client moves: estimate, clip, client SGD step, E times (FedAvg); without, it evaluates its
    differences once at the loaded weights (FedSGD), and with ``with_estimate`` also
    accumulates the estimate the server would rebuild from them (bit for bit, from the very
    directions it drew). The workspace's weights are restored.
    """
    start = ws.trained_weights()
    weights = start.clone()
    momentum: torch.Tensor | None = None
    results = []
    # ``zo.dropout: off``: dropout layers in eval mode, so the passes are deterministic
    off = spec.dropout == "off" and bool(dropout_layers(ws.model))
    try:
        with dropout_off(ws.model) if off else contextlib.nullcontext():
            for (x, y), seeds in zip(batches, step_seeds):
                result = _differences(ws, x, y, seeds, spec, local_steps or with_estimate)
                results.append(result)
                if local_steps:
                    assert result.estimate is not None
                    gradient = clip_inf_norm_(
                        result.estimate.to(weights.device), spec.clip_inf_norm
                    )
                    momentum = client_sgd_step(
                        weights, gradient, momentum, spec.client_lr, spec.client_momentum
                    )
                    ws.load(weights)
    finally:
        ws.load(start)
    return ZOClientResult(
        tuple(r.loss_differences for r in results),
        tuple(results),
        sum(r.base_loss for r in results) / len(results),
        weights if local_steps else None,
    )


def rebuild_estimate(
    differences: torch.Tensor,
    seeds: Sequence[int],
    spec: ZOUpdateSpec,
    dim: int,
    blocks: StageBlocks | None,
) -> torch.Tensor:
    """Server side: one step's estimate from its differences and seeds."""
    if differences.numel() != spec.num_perturbations or len(seeds) != spec.num_perturbations:
        raise ValueError(
            f"a step has K = {spec.num_perturbations} differences and seeds, got "
            f"{differences.numel()} and {len(seeds)}"
        )
    if spec.perturbation_scope == "layerwise":
        assert blocks is not None
        return layerwise_estimate_from_differences(differences, seeds, spec.estimator, blocks)
    return estimate_from_differences(differences, seeds, spec.estimator, dim)


def replay_local_steps(
    start: torch.Tensor,
    step_differences: Sequence[torch.Tensor],
    step_seeds: Sequence[Sequence[int]],
    spec: ZOUpdateSpec,
    blocks: StageBlocks | None,
) -> torch.Tensor:
    """Server side: the client's final weights, replayed from its scalars and seeds."""
    weights = start.clone()
    momentum: torch.Tensor | None = None
    for differences, seeds in zip(step_differences, step_seeds):
        gradient = clip_inf_norm_(
            rebuild_estimate(differences, seeds, spec, weights.numel(), blocks), spec.clip_inf_norm
        )
        momentum = client_sgd_step(
            weights, gradient, momentum, spec.client_lr, spec.client_momentum
        )
    return weights
