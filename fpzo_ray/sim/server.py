"""The federated server: global state and what happens in a round.

It holds the global weights (only the d trained coordinates), the mask, the server optimizer
and the run's counters. It drives the two phases of the method:

1. federated foresight pruning: each iteration samples clients, sends them the mask and a
   seed, sums their signed NTK-SAP mask gradients in client-id order and keeps the global
   top-k (``pruning.schedule``);
2. BP-free training (FedSGD): each round samples clients, broadcasts the weights, receives K
   loss differences per client, regenerates the client's directions from the seeds, rebuilds
   and averages the estimates by sample count and steps the optimizer.

The class is plain Python; ``sim.federation`` runs it as a Ray actor.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fpzo_ray.accounting import forward_flops, layer_flops
from fpzo_ray.config import RunConfig
from fpzo_ray.data.registry import ImageDataset
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.pruning import Mask, prune_iteratively, random_mask
from fpzo_ray.seeding import Purpose, derive_seed, generator
from fpzo_ray.sim.messages import (
    ClientFailure,
    MaskBroadcast,
    PruningBroadcast,
    PruningReply,
    ZOBroadcast,
    ZOReply,
)
from fpzo_ray.sim.pool import ClientPool
from fpzo_ray.zo import ServerOptimizer, estimate_from_differences, perturbation_seeds
from fpzo_ray.zo.server_optimizer import weighted_average


def sample_clients(run_seed: int, purpose: Purpose, index: int, num_clients: int,
                   count: int) -> list[int]:
    """``count`` distinct client ids for round (or iteration) ``index``, ascending."""
    rng = np.random.default_rng(derive_seed(run_seed, purpose, index))
    return sorted(int(c) for c in rng.choice(num_clients, size=count, replace=False))


class FederatedServer:
    def __init__(self, cfg: RunConfig, dataset: ImageDataset, pool: ClientPool) -> None:
        self.cfg = cfg
        self.pool = pool
        self.device = torch.device(cfg.simulation.device)
        self.test_x, self.test_y = dataset.test_set()
        self.input_shape = dataset.input_shape
        self.model = build_model(cfg, dataset.input_shape, dataset.num_classes,
                                 init_seed=derive_seed(cfg.seed, Purpose.MODEL_INIT))
        self.model.to(self.device)
        self.flat, self.layout = bind_flat_buffer(self.model)
        self.initial_flat = self.flat.detach().cpu().clone()
        self.layers = layer_flops(self.model, dataset.input_shape)
        self.mask = Mask.dense(self.layout)
        self.mask_version = 0
        self.optimizer = self._new_optimizer()
        self.client_records: list[dict[str, Any]] = []
        self.totals = {"cumulative_client_forward_flops": 0, "cumulative_upload_bytes": 0,
                       "cumulative_download_bytes": 0, "cumulative_failed_clients": 0}
        self.pruning_summary: dict[str, Any] = {}

    # -- helpers ---------------------------------------------------------------------------
    def _new_optimizer(self) -> ServerOptimizer:
        t = self.cfg.training
        weights = self.initial_flat[self.mask.kept_index()]
        return ServerOptimizer(weights, t.server_optimizer, t.server_lr,
                               (t.adam_beta1, t.adam_beta2), self.cfg.zo.clip_inf_norm,
                               self.cfg.zo.ema_decay)

    def _mask_broadcast(self) -> MaskBroadcast:
        return MaskBroadcast(self.mask_version, self.mask.prunable_kept)

    def _set_mask(self, mask: Mask) -> None:
        self.mask = mask
        self.mask_version += 1

    @property
    def num_trained(self) -> int:
        return self.mask.num_trained

    # -- phase 1: pruning ------------------------------------------------------------------
    def prune(self) -> dict[str, Any]:
        """Build the global mask the configuration asks for; returns a summary of the phase."""
        cfg = self.cfg
        method = cfg.pruning_method
        density = 1.0 - cfg.pruning.sparsity
        cost = {"pruning_client_flops": 0, "pruning_upload_bytes": 0,
                "pruning_download_bytes": 0, "pruning_failed_clients": 0}
        if method == "random":
            self._set_mask(random_mask(self.layout, density,
                                       generator(derive_seed(cfg.seed, Purpose.RANDOM_MASK))))
        elif method == "ntk_sap":
            def saliency_round(iteration: int, mask: Mask) -> torch.Tensor:
                if mask is not self.mask:
                    self._set_mask(mask)
                clients = sample_clients(cfg.seed, Purpose.PRUNING_SAMPLING, iteration,
                                         cfg.data.num_clients, cfg.pruning.clients_per_iteration)
                replies = self.pool.run(self._mask_broadcast(),
                                        PruningBroadcast(iteration, self.mask_version), clients)
                signed = torch.zeros(self.layout.num_prunable, dtype=torch.float64)
                kept = mask.prunable_kept
                for reply in replies:
                    if isinstance(reply, ClientFailure) or not bool(
                            torch.isfinite(reply.kept_scores).all()):
                        cost["pruning_failed_clients"] += 1
                        continue
                    assert isinstance(reply, PruningReply)
                    signed[kept] += reply.kept_scores.double()
                    cost["pruning_client_flops"] += reply.flops
                    cost["pruning_upload_bytes"] += reply.upload_bytes
                    cost["pruning_download_bytes"] += reply.download_bytes
                return signed.abs()

            final = prune_iteratively(self.mask, density, cfg.pruning.iterations, saliency_round)
            self._set_mask(final)
        self.optimizer = self._new_optimizer()
        self.totals["cumulative_upload_bytes"] += cost["pruning_upload_bytes"]
        self.totals["cumulative_download_bytes"] += cost["pruning_download_bytes"]
        self.pruning_summary = {
            "pruning_method": method, "kept_fraction": self.mask.density,
            "num_trained": self.num_trained, "num_prunable": self.layout.num_prunable,
            "sparse_forward_flops_per_sample": self.sparse_forward_flops,
            "dense_forward_flops_per_sample": forward_flops(self.layers),
            "mask_bytes": self.mask.wire_bytes(),
            "layer_density": self.mask.layer_densities(), **cost,
        }
        return self.pruning_summary

    @property
    def sparse_forward_flops(self) -> int:
        return forward_flops(self.layers, self.mask.layer_densities())

    # -- phase 2: BP-free training ---------------------------------------------------------
    def run_round(self, round_index: int) -> dict[str, Any]:
        """One FedSGD round; returns the round's metrics (evaluation included when due)."""
        cfg = self.cfg
        clients = sample_clients(cfg.seed, Purpose.CLIENT_SAMPLING, round_index,
                                 cfg.data.num_clients, cfg.training.clients_per_round)
        broadcast = ZOBroadcast(round_index, self.mask_version,
                                self.optimizer.weights.detach().clone())
        replies = self.pool.run(self._mask_broadcast(), broadcast, clients)

        estimates, weights, losses = [], [], []
        flops = up = down = 0
        failed = 0
        for reply in replies:
            record: dict[str, Any] = {"round": round_index, "client_id": reply.client_id}
            if isinstance(reply, ClientFailure):
                failed += 1
                self.client_records.append({**record, "status": "error", "error": reply.error})
                continue
            assert isinstance(reply, ZOReply)
            record.update(num_samples=reply.num_samples, batch_size=reply.batch_size,
                          base_loss=reply.base_loss, forward_flops=reply.forward_flops,
                          upload_bytes=reply.upload_bytes, download_bytes=reply.download_bytes)
            flops += reply.forward_flops
            up += reply.upload_bytes
            down += reply.download_bytes
            if not (math.isfinite(reply.base_loss)
                    and bool(torch.isfinite(reply.loss_differences).all())):
                failed += 1
                self.client_records.append({**record, "status": "rejected_non_finite"})
                continue
            self.client_records.append({**record, "status": "ok"})
            seeds = perturbation_seeds(cfg.seed, round_index, reply.client_id, 0,
                                       cfg.zo.num_perturbations)
            estimates.append(estimate_from_differences(reply.loss_differences, seeds,
                                                       cfg.zo.sigma, self.num_trained))
            weights.append(float(reply.num_samples))
            losses.append(reply.base_loss)
        if estimates:
            self.optimizer.step(weighted_average(estimates, weights))

        self.totals["cumulative_client_forward_flops"] += flops
        self.totals["cumulative_upload_bytes"] += up
        self.totals["cumulative_download_bytes"] += down
        self.totals["cumulative_failed_clients"] += failed
        metrics: dict[str, Any] = {
            "round": round_index + 1,
            "train_loss": float(np.average(losses, weights=weights)) if losses else float("nan"),
            "participants": len(clients), "aggregated_clients": len(estimates),
            "failed_clients": failed, "round_client_forward_flops": flops,
            "round_upload_bytes": up, "round_download_bytes": down, **self.totals,
        }
        last = round_index + 1 == cfg.training.rounds
        if (round_index + 1) % cfg.training.eval_every == 0 or last:
            metrics.update(self.evaluate())
        return metrics

    # -- evaluation ------------------------------------------------------------------------
    def global_flat_weights(self, use_ema: bool = True) -> torch.Tensor:
        """The global model as a full flat vector (pruned coordinates exactly zero)."""
        weights = self.optimizer.eval_weights if use_ema else self.optimizer.weights.detach()
        full = torch.zeros(self.layout.total, dtype=torch.float32)
        full[self.mask.kept_index()] = weights.cpu()
        return full

    @torch.no_grad()
    def evaluate(self, batch_size: int = 1024) -> dict[str, float]:
        self.flat.copy_(self.global_flat_weights().to(self.device))
        self.model.eval()
        correct, loss_sum = 0, 0.0
        for start in range(0, self.test_y.shape[0], batch_size):
            x = self.test_x[start:start + batch_size].to(self.device)
            y = self.test_y[start:start + batch_size].to(self.device)
            logits = self.model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        n = int(self.test_y.shape[0])
        return {"test_accuracy": correct / n, "test_loss": loss_sum / n}

    def records(self) -> list[dict[str, Any]]:
        return list(self.client_records)


def run_in_process(cfg: RunConfig, dataset: ImageDataset,
                   partition: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """A whole run in this process, no Ray: the reference the Ray engine must agree with."""
    from fpzo_ray.sim.client import ClientRuntime
    from fpzo_ray.sim.pool import InProcessPool

    server = FederatedServer(cfg, dataset, InProcessPool(ClientRuntime(cfg, dataset, partition)))
    server.prune()
    return [server.run_round(r) for r in range(cfg.training.rounds)]
