"""The federated server: global state and what happens in a round.

It holds the global weights (only the d trained coordinates), the mask, the server optimizer
and the run's counters, and drives the two phases of the method:

1. foresight pruning (``sim.pruning_phase``): the global mask;
2. training rounds: sample clients, broadcast the weights, collect the replies in client-id
   order and turn them into one server step:

   - ZO FedSGD: rebuild each client's estimate from its K loss differences and the seeds,
     average by sample count, clip (infinity norm), step the server optimizer;
   - ZO FedAvg: replay each client's E local steps from its scalars and seeds (or take its
     uploaded dense update), average the updates by sample count, and step the server
     optimizer with the negated average as pseudo-gradient (server SGD at lr 1 = FedAvg);
   - BP FedAvg: the same with the clients' dense updates.

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
from fpzo_ray.pruning import Mask
from fpzo_ray.seeding import Purpose, derive_seed
from fpzo_ray.sim.client import step_seeds
from fpzo_ray.sim.messages import ClientFailure, MaskBroadcast, TrainBroadcast, TrainReply
from fpzo_ray.sim.pool import ClientPool
from fpzo_ray.sim.pruning_phase import PruningPhase
from fpzo_ray.sim.sampling import sample_clients
from fpzo_ray.sim.specs import zo_update_spec
from fpzo_ray.zo import ServerOptimizer, weighted_average
from fpzo_ray.zo.client_update import rebuild_estimate, replay_local_steps
from fpzo_ray.zo.layerwise import StageBlocks, stage_blocks


def _finite(reply: TrainReply) -> bool:
    parts = [reply.dense_update] if reply.dense_update is not None else list(
        reply.step_differences or ())
    return math.isfinite(reply.base_loss) and all(bool(torch.isfinite(p).all()) for p in parts)


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
        self.zo_spec = zo_update_spec(cfg)
        self.mask = Mask.dense(self.layout)
        self.mask_version = 0
        self.blocks: StageBlocks | None = None
        self.optimizer = self._new_optimizer()
        self.client_records: list[dict[str, Any]] = []
        self.totals = {"cumulative_client_forward_flops": 0, "cumulative_client_flops": 0,
                       "cumulative_upload_bytes": 0,
                       "cumulative_download_bytes": 0, "cumulative_failed_clients": 0}
        self.pruning_summary: dict[str, Any] = {}

    def _new_optimizer(self) -> ServerOptimizer:
        t = self.cfg.training
        fedsgd_zo = t.algorithm == "zo" and t.mode == "fedsgd"
        start = self.initial_flat
        if self.cfg.pruning.init_scaling == "fan_in":
            start = self.mask.fan_in_rescaled(start)
        return ServerOptimizer(start[self.mask.kept_index()], t.server_optimizer,
                               t.server_lr, (t.adam_beta1, t.adam_beta2),
                               self.cfg.zo.clip_inf_norm if fedsgd_zo else 0.0,
                               self.cfg.zo.ema_decay, t.server_momentum)

    @property
    def num_trained(self) -> int:
        return self.mask.num_trained

    # -- phase 1: pruning ------------------------------------------------------------------
    def prune(self) -> dict[str, Any]:
        """Build the global mask the configuration asks for; returns a summary of the phase."""
        cfg = self.cfg
        phase = PruningPhase(cfg, self.model, self.layout, self.initial_flat, self.input_shape,
                             self.pool, self.mask_version)
        self.mask = phase.build(cfg.pruning_method, 1.0 - cfg.pruning.sparsity)
        self.mask_version = phase.version + 1
        if cfg.zo.perturbation_scope == "layerwise":
            self.blocks = stage_blocks(self.layout, self.mask.kept_index(),
                                       len(self.model.stages))
        self.optimizer = self._new_optimizer()
        self.totals["cumulative_upload_bytes"] += phase.cost["pruning_upload_bytes"]
        self.totals["cumulative_download_bytes"] += phase.cost["pruning_download_bytes"]
        self.pruning_summary = {
            "pruning_method": cfg.pruning_method, **phase.summary(self.mask),
            "sparse_forward_flops_per_sample": forward_flops(self.layers,
                                                             self.mask.layer_densities()),
            "dense_forward_flops_per_sample": forward_flops(self.layers),
        }
        return self.pruning_summary

    # -- phase 2: training -----------------------------------------------------------------
    def _client_update(self, reply: TrainReply, round_index: int,
                       start: torch.Tensor) -> torch.Tensor:
        """A client's contribution in the server's coordinates: estimate (FedSGD) or update."""
        if reply.dense_update is not None:
            return reply.dense_update
        assert reply.step_differences is not None
        seeds = step_seeds(self.cfg, round_index, reply.client_id)
        if self.cfg.training.mode == "fedsgd":
            return rebuild_estimate(reply.step_differences[0], seeds[0], self.zo_spec,
                                    self.num_trained, self.blocks)
        final = replay_local_steps(start, reply.step_differences, seeds, self.zo_spec,
                                   self.blocks)
        return final - start

    def run_round(self, round_index: int) -> dict[str, Any]:
        """One training round; returns the round's metrics (evaluation included when due)."""
        cfg = self.cfg
        clients = sample_clients(cfg.seed, Purpose.CLIENT_SAMPLING, round_index,
                                 cfg.data.num_clients, cfg.training.clients_per_round)
        start = self.optimizer.weights.detach().clone()
        replies = self.pool.run(MaskBroadcast(self.mask_version, self.mask.prunable_kept),
                                TrainBroadcast(round_index, self.mask_version, start), clients)
        contributions, weights, losses, peaks = [], [], [], []
        forward = flops = up = down = failed = 0
        for reply in replies:
            record: dict[str, Any] = {"round": round_index + 1, "client_id": reply.client_id}
            if isinstance(reply, ClientFailure):
                failed += 1
                self.client_records.append({**record, "status": "error", "error": reply.error})
                continue
            record.update(num_samples=reply.num_samples, batch_size=reply.batch_size,
                          base_loss=reply.base_loss, forward_flops=reply.forward_flops,
                          flops=reply.flops,
                          upload_bytes=reply.upload_bytes, download_bytes=reply.download_bytes,
                          peak_memory_bytes=reply.peak_memory_bytes)
            forward += reply.forward_flops
            flops += reply.flops
            peaks.append(reply.peak_memory_bytes or 0)
            up += reply.upload_bytes
            down += reply.download_bytes
            if not _finite(reply):
                failed += 1
                self.client_records.append({**record, "status": "rejected_non_finite"})
                continue
            self.client_records.append({**record, "status": "ok"})
            contributions.append(self._client_update(reply, round_index, start))
            weights.append(float(reply.num_samples))
            losses.append(reply.base_loss)
        if contributions:
            average = weighted_average(contributions, weights)
            fedsgd_zo = cfg.training.algorithm == "zo" and cfg.training.mode == "fedsgd"
            self.optimizer.step(average if fedsgd_zo else -average)

        self.totals["cumulative_client_forward_flops"] += forward
        self.totals["cumulative_client_flops"] += flops
        self.totals["cumulative_upload_bytes"] += up
        self.totals["cumulative_download_bytes"] += down
        self.totals["cumulative_failed_clients"] += failed
        metrics: dict[str, Any] = {
            "round": round_index + 1,
            "train_loss": float(np.average(losses, weights=weights)) if losses else float("nan"),
            "participants": len(clients), "aggregated_clients": len(contributions),
            "failed_clients": failed, "round_client_forward_flops": forward,
            "round_client_flops": flops,
            "round_upload_bytes": up, "round_download_bytes": down,
            "max_client_peak_memory_bytes": max(peaks, default=0), **self.totals,
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
