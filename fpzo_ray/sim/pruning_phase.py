"""Phase 1 on the server: build the global mask the configuration asks for.

Where each saliency is computed:

- on the clients, summed by the server (federated): ``ntk_sap`` (data-free, the paper's),
  ``ntk_sap_data`` (local batches), ``snip``, ``grasp``. Each iteration samples
  ``pruning.clients_per_iteration`` clients, sends them the mask, sums their additive
  contributions in client-id order and keeps the top-k of the keep-scores;
- on the server, data-free: ``magnitude``, ``synflow``, ``ntk_sap_central`` (NTK-SAP over the
  very draws the federated clients would make: the centralised reference);
- no saliency: ``dense``, ``random``, ``random_layerwise`` (random positions with the per-layer
  densities of ``pruning.reference_method``'s mask).

Iterative methods follow the exponential schedule density^(t/T), T = ``pruning.iterations``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fpzo_ray.config import RunConfig
from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.models.staged import StagedModel
from fpzo_ray.protocol import pruning_draw_seeds, pruning_participants
from fpzo_ray.pruning import (
    Mask,
    kept_count,
    ntk_sap_mask_gradient,
    prune_iteratively,
    random_mask,
)
from fpzo_ray.pruning.client_saliency import CLIENT_SALIENCIES
from fpzo_ray.pruning.saliencies import keep_scores, magnitude_scores, synflow_scores
from fpzo_ray.pruning.scopes import random_layerwise_mask
from fpzo_ray.seeding import Purpose, derive_seed, generator
from fpzo_ray.sim.messages import (
    MaskBroadcast,
    PruningBroadcast,
    PruningReply,
)
from fpzo_ray.sim.pool import ClientPool

SERVER_METHODS = ("magnitude", "synflow", "ntk_sap_central")


class PruningPhase:
    """Builds the global mask, federated or on the server (see the module docstring); its
    ``cost`` counts the clients' FLOPs and bytes."""

    def __init__(
        self,
        cfg: RunConfig,
        model: StagedModel,
        layout: ParameterLayout,
        initial_flat: torch.Tensor,
        input_shape: tuple[int, int, int],
        pool: ClientPool,
        first_version: int,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.layout = layout
        self.initial_flat = initial_flat
        self.input_shape = input_shape
        self.pool = pool
        self.version = first_version
        self.cost = {
            "pruning_client_flops": 0,
            "pruning_upload_bytes": 0,
            "pruning_download_bytes": 0,
            "pruning_failed_clients": 0,
        }

    def _federated_round(self, method: str) -> Callable[[int, Mask], torch.Tensor]:
        def saliency_round(iteration: int, mask: Mask) -> torch.Tensor:
            self.version += 1
            report = self.pool.run(
                MaskBroadcast(self.version, mask.prunable_kept),
                PruningBroadcast(iteration, self.version, method),
                pruning_participants(self.cfg, iteration),
            )
            total = torch.zeros(self.layout.num_prunable, dtype=torch.float64)
            for reply in report.replies:
                if not isinstance(reply, PruningReply) or not bool(
                    torch.isfinite(reply.kept_scores).all()
                ):
                    self.cost["pruning_failed_clients"] += 1
                    continue
                total[mask.prunable_kept] += reply.kept_scores.double()
                self.cost["pruning_client_flops"] += reply.flops
                self.cost["pruning_upload_bytes"] += reply.upload_bytes
                self.cost["pruning_download_bytes"] += reply.download_bytes
            return keep_scores(method, total)

        return saliency_round

    def _server_round(self, method: str) -> Callable[[int, Mask], torch.Tensor]:
        p = self.cfg.pruning

        def saliency_round(iteration: int, mask: Mask) -> torch.Tensor:
            if method == "magnitude":
                return magnitude_scores(self.layout, mask, self.initial_flat)
            if method == "synflow":
                return synflow_scores(
                    self.model, self.layout, mask, self.initial_flat, self.input_shape
                )
            seeds = [
                s
                for c in pruning_participants(self.cfg, iteration)
                for s in pruning_draw_seeds(self.cfg, iteration, c)
            ]
            signed = ntk_sap_mask_gradient(
                self.model,
                self.layout,
                mask,
                seeds,
                p.batch_size,
                self.input_shape,
                p.epsilon,
                draw_init=p.draw_init,
            )
            return keep_scores("ntk_sap", signed)

        return saliency_round

    def build(self, method: str, density: float) -> Mask:
        """The mask of ``method`` at ``density`` (kept fraction of the prunable weights)."""
        cfg = self.cfg.pruning
        dense = Mask.dense(self.layout)
        if method == "dense" or density >= 1.0:
            return dense
        gen = generator(derive_seed(self.cfg.seed, Purpose.RANDOM_MASK))
        if method == "random":
            if cfg.scope == "layer":
                return random_layerwise_mask(
                    self.layout, _uniform_layers(self.layout, density), gen
                )
            return random_mask(self.layout, density, gen)
        if method == "random_layerwise":
            return random_layerwise_mask(
                self.layout, self.build(cfg.reference_method, density), gen
            )
        if method in CLIENT_SALIENCIES:
            saliency_round = self._federated_round(method)
        elif method in SERVER_METHODS:
            saliency_round = self._server_round(method)
        else:
            raise ValueError(f"pruning.method: unknown {method!r}")
        return prune_iteratively(dense, density, cfg.iterations, saliency_round, cfg.scope)

    def summary(self, mask: Mask) -> dict[str, Any]:
        return {
            "kept_fraction": mask.density,
            "num_trained": mask.num_trained,
            "num_prunable": self.layout.num_prunable,
            "mask_bytes": mask.wire_bytes(),
            "layer_density": mask.layer_densities(),
            **self.cost,
        }


def _uniform_layers(layout: ParameterLayout, density: float) -> Mask:
    """A stand-in reference with the same density in every layer (for random, layer scope)."""
    kept = torch.zeros(layout.num_prunable, dtype=torch.bool)
    start = 0
    for slot in layout.prunable_slots:
        kept[start : start + kept_count(slot.numel, density)] = True
        start += slot.numel
    return Mask(layout, kept)
