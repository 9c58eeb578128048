"""What a virtual client does, in plain PyTorch: the code a worker actor runs for each client.

A :class:`ClientRuntime` holds one model (built once, parameters in a flat buffer), the
training set and the partition, and serves any number of virtual clients one after another:
a virtual client is only an id, i.e. a partition and a set of seeds. Nothing here knows Ray,
so the same runtime serves the Ray workers, the in-process pool and the benchmarks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fpzo_ray.accounting import (
    forward_flops,
    layer_flops,
    pruning_download_bytes,
    pruning_upload_bytes,
    zo_download_bytes,
    zo_upload_bytes,
)
from fpzo_ray.config import RunConfig
from fpzo_ray.data.registry import ImageDataset
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.pruning import Mask, ntk_sap_mask_gradient
from fpzo_ray.seeding import Purpose, derive_seed
from fpzo_ray.sim.messages import (
    ClientFailure,
    MaskBroadcast,
    PruningBroadcast,
    PruningReply,
    ZOBroadcast,
    ZOReply,
)
from fpzo_ray.zo import forward_difference, perturbation_seeds


def minibatch_indices(run_seed: int, round_index: int, client_id: int, partition: np.ndarray,
                      batch_size: int) -> np.ndarray:
    """The client's mini-batch of this round: a seeded draw without replacement."""
    rng = np.random.default_rng(derive_seed(run_seed, Purpose.MINIBATCH, round_index, client_id))
    if partition.shape[0] <= batch_size:
        return partition
    return np.sort(rng.choice(partition, size=batch_size, replace=False))


def pruning_draw_seeds(run_seed: int, iteration: int, client_id: int, draws: int) -> list[int]:
    return [derive_seed(run_seed, Purpose.PRUNING_DRAW, iteration, client_id, r)
            for r in range(draws)]


class ClientRuntime:
    def __init__(self, cfg: RunConfig, dataset: ImageDataset,
                 partition: Sequence[np.ndarray]) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.partition = partition
        self.device = torch.device(cfg.simulation.device)
        self.model = build_model(cfg, dataset.input_shape, dataset.num_classes).to(self.device)
        self.flat, self.layout = bind_flat_buffer(self.model)
        self.layers = layer_flops(self.model, dataset.input_shape)
        self.mask = Mask.dense(self.layout)
        self.mask_version = -1
        self.kept_index: torch.Tensor | None = None
        self.sparse_forward_flops = forward_flops(self.layers)

    # -- state shared by all clients of a round ------------------------------------------
    def set_mask(self, broadcast: MaskBroadcast) -> None:
        """Install a new mask: pruned coordinates become (and stay) exactly zero."""
        if broadcast.version == self.mask_version:
            return
        self.mask = Mask(self.layout, broadcast.prunable_kept)
        self.mask_version = broadcast.version
        index = self.mask.kept_index()
        self.kept_index = None if self.mask.is_dense else index.to(self.device)
        self.sparse_forward_flops = forward_flops(self.layers, self.mask.layer_densities())
        with torch.no_grad():
            self.flat.zero_()

    def check_mask_version(self, version: int) -> None:
        if version != self.mask_version:
            raise RuntimeError(f"worker holds mask {self.mask_version}, round needs {version}")

    def load_weights(self, weights: torch.Tensor) -> None:
        with torch.no_grad():
            if self.kept_index is None:
                self.flat.copy_(weights)
            else:
                self.flat.index_copy_(0, self.kept_index, weights.to(self.device))

    # -- one virtual client --------------------------------------------------------------
    def zo_step(self, broadcast: ZOBroadcast, client_id: int) -> ZOReply:
        """Evaluate the client's K loss differences on its mini-batch of this round.

        The weights must already be loaded (:meth:`load_weights`) for this round.
        """
        self.check_mask_version(broadcast.mask_version)
        cfg = self.cfg
        part = self.partition[client_id]
        idx = minibatch_indices(cfg.seed, broadcast.round_index, client_id, part,
                                cfg.training.batch_size)
        x, y = self.dataset.train_batch(idx)
        x, y = x.to(self.device), y.to(self.device)

        def loss() -> float:
            return float(F.cross_entropy(self.model(x), y))

        seeds = perturbation_seeds(cfg.seed, broadcast.round_index, client_id, 0,
                                   cfg.zo.num_perturbations)
        result = forward_difference(loss, self.flat, self.kept_index, seeds, cfg.zo.sigma)
        return ZOReply(
            client_id=client_id, num_samples=int(part.shape[0]), batch_size=int(idx.shape[0]),
            base_loss=result.base_loss, loss_differences=result.loss_differences,
            forward_flops=result.num_forward_passes * int(idx.shape[0]) * self.sparse_forward_flops,
            upload_bytes=zo_upload_bytes(cfg.zo.num_perturbations),
            download_bytes=zo_download_bytes(self.mask.num_trained, self.mask.wire_bytes()))

    def pruning_scores(self, broadcast: PruningBroadcast, client_id: int) -> PruningReply:
        """The client's data-free NTK-SAP mask gradient, at its kept prunable weights."""
        self.check_mask_version(broadcast.mask_version)
        p = self.cfg.pruning
        seeds = pruning_draw_seeds(self.cfg.seed, broadcast.iteration, client_id,
                                   p.draws_per_client)
        signed = ntk_sap_mask_gradient(self.model, self.layout, self.mask, seeds, p.batch_size,
                                       self.dataset.input_shape, p.epsilon)
        kept = self.mask.prunable_kept
        # Two forward passes and a backward through both (counted as 2x forward) per draw.
        flops = 6 * p.batch_size * p.draws_per_client * self.sparse_forward_flops
        return PruningReply(
            client_id=client_id, kept_scores=signed[kept].clone(), flops=flops,
            upload_bytes=pruning_upload_bytes(self.mask.num_kept_prunable),
            download_bytes=pruning_download_bytes(self.mask.wire_bytes()))


def serve_clients(runtime: ClientRuntime, mask: MaskBroadcast | None,
                  broadcast: ZOBroadcast | PruningBroadcast,
                  client_ids: Sequence[int]) -> list[ZOReply | PruningReply | ClientFailure]:
    """Run a batch of virtual clients on one runtime, one after another.

    A client that raises becomes a :class:`ClientFailure` carrying its error message; the
    others are unaffected. ``mask`` may be None when the runtime already holds that version.
    """
    if mask is not None:
        runtime.set_mask(mask)
    runtime.check_mask_version(broadcast.mask_version)
    if isinstance(broadcast, ZOBroadcast):
        runtime.load_weights(broadcast.weights)
        work = runtime.zo_step
    else:
        work = runtime.pruning_scores
    replies: list[ZOReply | PruningReply | ClientFailure] = []
    for client_id in client_ids:
        try:
            replies.append(work(broadcast, client_id))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - a client's crash must not end the run
            replies.append(ClientFailure(client_id, f"{type(exc).__name__}: {exc}"))
    return replies
