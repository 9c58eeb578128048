"""Phase 1 on the server: build the global mask the configuration asks for.

What each method computes and where is its :class:`~fpzo_ray.pruning.methods.PruningMethod`:

- a client saliency is federated: each iteration samples ``pruning.clients_per_iteration``
  clients, sends them the mask, sums their additive contributions in client-id order and
  keeps the top-k of the keep-scores;
- a server saliency is computed here, data-free, over the very draws the federated clients
  would make (so ``ntk_sap_central`` is the centralised reference of ``ntk_sap``);
- a direct mask needs no saliency (dense, random, layer-matched random, which copies the
  per-layer densities of ``pruning.reference_method``'s mask).

Saliencies follow the exponential schedule density^(t/T), T = ``pruning.iterations``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fpzo_ray.config import RunConfig
from fpzo_ray.failure import RunFailed
from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.protocol import pruning_draw_seeds, pruning_participants
from fpzo_ray.pruning import Mask, prune_iteratively
from fpzo_ray.pruning.methods import (
    PruningMethod,
    SaliencyInputs,
    checked_scores,
    pruning_method,
)
from fpzo_ray.seeding import Purpose, derive_seed, generator
from fpzo_ray.sim.messages import (
    MaskBroadcast,
    PruningBroadcast,
    PruningReply,
)
from fpzo_ray.sim.pool import ClientPool


class PruningPhase:
    """Builds the global mask, federated or on the server (see the module docstring); its
    ``cost`` counts the clients' FLOPs and bytes."""

    def __init__(
        self,
        cfg: RunConfig,
        model: nn.Module,
        layout: ParameterLayout,
        initial_flat: torch.Tensor,
        input_shape: tuple[int, ...],
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

    def _federated_round(
        self, name: str, method: PruningMethod
    ) -> Callable[[int, Mask], torch.Tensor]:
        def saliency_round(iteration: int, mask: Mask) -> torch.Tensor:
            self.version += 1
            report = self.pool.run(
                MaskBroadcast(self.version, mask.prunable_kept),
                PruningBroadcast(iteration, self.version, name),
                pruning_participants(self.cfg, iteration),
            )
            total = torch.zeros(self.layout.num_prunable, dtype=torch.float64)
            usable, errors = 0, []
            for reply in report.replies:
                if not isinstance(reply, PruningReply):
                    self.cost["pruning_failed_clients"] += 1
                    errors.append(getattr(reply, "error", "") or "no reply")
                    continue
                total[mask.prunable_kept] += reply.kept_scores.double()
                self.cost["pruning_client_flops"] += reply.flops
                self.cost["pruning_upload_bytes"] += reply.upload_bytes
                self.cost["pruning_download_bytes"] += reply.download_bytes
                usable += 1
            if not usable:
                first = str(errors[0]).splitlines()[0][:200] if errors else "no client replied"
                raise RunFailed(
                    "pruning_failed",
                    f"{name}, iteration {iteration + 1}: none of the {len(report.replies)} "
                    f"sampled clients produced a usable score ({first})",
                )
            return method.keep(total)

        return saliency_round

    def _server_round(
        self, name: str, method: PruningMethod
    ) -> Callable[[int, Mask], torch.Tensor]:
        p = self.cfg.pruning
        assert method.server is not None
        server = method.server

        def saliency_round(iteration: int, mask: Mask) -> torch.Tensor:
            seeds = [
                s
                for c in pruning_participants(self.cfg, iteration)
                for s in pruning_draw_seeds(self.cfg, iteration, c)
            ]
            inputs = SaliencyInputs(
                self.model,
                self.layout,
                mask,
                self.initial_flat,
                seeds,
                None,
                p.batch_size,
                self.input_shape,
                p.epsilon,
                p.draw_init,
            )
            try:
                scores = checked_scores(method.label, server(inputs), self.layout.num_prunable)
            except Exception as exc:  # noqa: BLE001 - a researcher's saliency: a named failure
                raise RunFailed(
                    "pruning_failed",
                    f"{name}, iteration {iteration + 1}: the saliency computed on the server "
                    f"gave no usable score ({type(exc).__name__}: {str(exc)[:200]})",
                ) from exc
            return method.keep(scores)

        return saliency_round

    def build(self, name: str, density: float) -> Mask:
        """The mask of method ``name`` at ``density`` (kept fraction of the prunable weights)."""
        cfg = self.cfg.pruning
        method = pruning_method(name, cfg.args)
        if density >= 1.0:
            return Mask.dense(self.layout)
        if method.direct is not None:
            gen = generator(derive_seed(self.cfg.seed, Purpose.RANDOM_MASK))
            return method.direct(
                self.layout,
                density,
                gen,
                lambda d: self.build(cfg.reference_method, d),
                cfg.scope == "layer",
            )
        if method.client is not None:
            saliency_round = self._federated_round(name, method)
        else:
            saliency_round = self._server_round(name, method)
        return prune_iteratively(
            Mask.dense(self.layout), density, cfg.iterations, saliency_round, cfg.scope
        )

    def summary(self, mask: Mask) -> dict[str, Any]:
        return {
            "kept_fraction": mask.density,
            "num_trained": mask.num_trained,
            "num_prunable": self.layout.num_prunable,
            "mask_bytes": mask.wire_bytes(),
            "layer_density": mask.layer_densities(),
            **self.cost,
        }
