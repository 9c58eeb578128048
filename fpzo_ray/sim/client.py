"""What a virtual client does, in plain PyTorch: the code a worker actor runs for each client.

A :class:`ClientRuntime` holds one model (built once, parameters in a flat buffer, initialised
from the run's model seed like the server's), the training set and the partition, and serves
any number of virtual clients one after another: a virtual client is only an id, i.e. a
partition and a set of seeds. Nothing here knows Ray, so the same runtime serves the Ray
workers, the in-process pool and the benchmarks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from fpzo_ray.accounting import (
    bp_step_flops,
    dense_update_upload_bytes,
    forward_flops,
    layer_flops,
    pruning_download_bytes,
    pruning_upload_bytes,
    stage_forward_flops,
    train_download_bytes,
    update_flops,
    zo_scalar_upload_bytes,
    zo_vector_flops,
)
from fpzo_ray.accounting.memory import MemoryMeter, sparse_peak_bytes
from fpzo_ray.bp import bp_client_update
from fpzo_ray.config import RunConfig
from fpzo_ray.data.registry import ImageDataset
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.pruning import Mask, ntk_sap_mask_gradient
from fpzo_ray.pruning.saliencies import grasp_contribution, snip_contribution
from fpzo_ray.seeding import Purpose, derive_seed
from fpzo_ray.sim.messages import (
    ClientFailure,
    MaskBroadcast,
    PruningBroadcast,
    PruningReply,
    TrainBroadcast,
    TrainReply,
)
from fpzo_ray.sim.specs import zo_update_spec
from fpzo_ray.zo import perturbation_seeds
from fpzo_ray.zo.client_update import ZOWorkspace, rebuild_estimate, zo_client_update
from fpzo_ray.zo.layerwise import stage_blocks


def minibatch_indices(run_seed: int, purpose: Purpose, index: int, client_id: int, step: int,
                      partition: np.ndarray, batch_size: int) -> np.ndarray:
    """A seeded mini-batch of the client's partition, without replacement."""
    if partition.shape[0] <= batch_size:
        return partition
    rng = np.random.default_rng(derive_seed(run_seed, purpose, index, client_id, step))
    return np.sort(rng.choice(partition, size=batch_size, replace=False))


def pruning_draw_seeds(run_seed: int, iteration: int, client_id: int, draws: int) -> list[int]:
    return [derive_seed(run_seed, Purpose.PRUNING_DRAW, iteration, client_id, r)
            for r in range(draws)]


def step_seeds(cfg: RunConfig, round_index: int, client_id: int) -> list[list[int]]:
    """The perturbation seeds of every local step of a client's round."""
    steps = cfg.training.local_steps if cfg.training.mode == "fedavg" else 1
    return [perturbation_seeds(cfg.seed, round_index, client_id, s, cfg.zo.num_perturbations)
            for s in range(steps)]


@dataclass(frozen=True)
class LocalWork:
    """What a client's local training produced (see :class:`TrainReply`)."""

    step_differences: tuple[torch.Tensor, ...] | None  # the scalar upload
    dense_update: torch.Tensor | None  # the dense upload
    update: torch.Tensor | None  # final - start weights, when the client moved (FedAvg, BP)
    base_loss: float
    forward_flops: int
    flops: int


class ClientRuntime:
    def __init__(self, cfg: RunConfig, dataset: ImageDataset,
                 partition: Sequence[np.ndarray]) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.partition = partition
        self.device = torch.device(cfg.simulation.device)
        self.model = build_model(cfg, dataset.input_shape, dataset.num_classes,
                                 init_seed=derive_seed(cfg.seed, Purpose.MODEL_INIT))
        self.model.to(self.device)
        self.flat, self.layout = bind_flat_buffer(self.model)
        self.initial_flat = self.flat.detach().clone()
        self.layers = layer_flops(self.model, dataset.input_shape)
        self.zo_spec = zo_update_spec(cfg)
        self.mask = Mask.dense(self.layout)
        self.mask_version = -1
        self.workspace = self._workspace()
        # batch size -> (measured peak, peak with the model stored sparsely) of a client step
        self.peak_memory: dict[int, tuple[int, int]] = {}

    # -- state shared by all clients of a round ------------------------------------------
    def _workspace(self) -> ZOWorkspace:
        kept = None if self.mask.is_dense else self.mask.kept_index().to(self.device)
        blocks = None
        if self.cfg.zo.perturbation_scope == "layerwise":
            blocks = stage_blocks(self.layout, kept, len(self.model.stages))
        return ZOWorkspace(self.model, self.layout, self.flat, kept, blocks)

    def set_mask(self, broadcast: MaskBroadcast) -> None:
        """Install a new mask: the model is reset to the initial weights under that mask."""
        if broadcast.version == self.mask_version:
            return
        self.mask = Mask(self.layout, broadcast.prunable_kept)
        self.mask_version = broadcast.version
        self.workspace = self._workspace()
        self.peak_memory.clear()
        density = self.mask.layer_densities()
        self.forward_flops = forward_flops(self.layers, density)
        self.stage_flops = stage_forward_flops(self.layers, len(self.model.stages), density)
        with torch.no_grad():
            self.flat.copy_(self.initial_flat * self.mask.kept_flat().to(self.device))

    def check_mask_version(self, version: int) -> None:
        if version != self.mask_version:
            raise RuntimeError(f"worker holds mask {self.mask_version}, round needs {version}")

    # -- one virtual client: training ----------------------------------------------------
    def _batches(self, purpose: Purpose, index: int, client_id: int, count: int,
                 batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        part = self.partition[client_id]
        out = []
        for step in range(count):
            idx = minibatch_indices(self.cfg.seed, purpose, index, client_id, step, part,
                                    batch_size)
            x, y = self.dataset.train_batch(idx)
            out.append((x.to(self.device), y.to(self.device)))
        return out

    def train(self, broadcast: TrainBroadcast, client_id: int) -> TrainReply | ClientFailure:
        """The client's work for a round, from the broadcast weights (already loaded).

        The first client step of each batch size after a mask change runs under a
        :class:`MemoryMeter`; its measured peak (a function of shapes only) is every client's
        figure for that batch size. A client whose peak exceeds its device's budget fails
        like a device running out of memory: before computing when the peak is known, after
        the measured step otherwise; either way it delivers nothing.
        """
        cfg = self.cfg
        steps = cfg.training.local_steps if cfg.training.mode == "fedavg" else 1
        batches = self._batches(Purpose.MINIBATCH, broadcast.round_index, client_id, steps,
                                cfg.training.batch_size)
        batch = int(batches[0][1].shape[0])
        d = self.mask.num_trained
        download = train_download_bytes(d, self.mask.wire_bytes())
        budget = (broadcast.memory_budgets or {}).get(client_id)
        if batch in self.peak_memory and budget is not None:
            failure = self._out_of_memory(client_id, batch, budget, broadcast, download)
            if failure is not None:
                return failure
        meter = None if batch in self.peak_memory else self._meter(batches)
        with meter if meter is not None else contextlib.nullcontext():
            work = self._local_work(broadcast, client_id, batches, batch, d)
        if meter is not None:
            stored = 4 * d + self.mask.wire_bytes()  # values + bitmap / index list
            self.peak_memory[batch] = (meter.peak_bytes,
                                       sparse_peak_bytes(meter.peak_breakdown, stored))
            if budget is not None:
                failure = self._out_of_memory(client_id, batch, budget, broadcast, download)
                if failure is not None:
                    return failure
        contribution = None
        if cfg.simulation.estimate_on == "workers" and cfg.training.algorithm == "zo":
            contribution = self._contribution(work, broadcast.round_index, client_id)
        upload = (dense_update_upload_bytes(d) if work.dense_update is not None
                  else zo_scalar_upload_bytes(cfg.zo.num_perturbations, steps))
        measured, device = self.peak_memory[batch]
        return TrainReply(
            client_id=client_id, num_samples=int(self.partition[client_id].shape[0]),
            batch_size=batch, base_loss=work.base_loss, step_differences=work.step_differences,
            dense_update=work.dense_update, contribution=contribution,
            forward_flops=int(work.forward_flops), flops=int(work.flops), upload_bytes=upload,
            download_bytes=download, peak_memory_bytes=measured, device_memory_bytes=device)

    def _out_of_memory(self, client_id: int, batch: int, budget: float,
                       broadcast: TrainBroadcast, download: int) -> ClientFailure | None:
        measured, device = self.peak_memory[batch]
        peak = measured if broadcast.memory_figure == "measured" else device
        if peak <= budget:
            return None
        return ClientFailure(client_id, f"out of memory: peak {peak} B > budget {budget:.0f} B",
                             kind="oom", peak_memory_bytes=peak, budget_bytes=budget,
                             download_bytes=download)

    def _meter(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> MemoryMeter:
        meter = MemoryMeter()
        meter.track(self.flat, "parameters")
        if self.workspace.kept_index is not None:
            meter.track(self.workspace.kept_index, "masks")
        for x, y in batches:
            meter.track(x, "inputs")
            meter.track(y, "inputs")
        return meter

    def _local_work(self, broadcast: TrainBroadcast, client_id: int,
                    batches: list[tuple[torch.Tensor, torch.Tensor]], batch: int,
                    d: int) -> LocalWork:
        """The client's local training: BP FedAvg, or ZO (FedSGD or FedAvg)."""
        cfg = self.cfg
        t = cfg.training
        fedavg = t.mode == "fedavg"
        steps = t.local_steps if fedavg else 1
        start = broadcast.weights
        if t.algorithm == "bp":
            result = bp_client_update(self.model, self.layout, self.flat,
                                      self.workspace.kept_index, batches, t.client_lr,
                                      t.client_momentum, t.bp_microbatch_size)
            update = result.final_weights.cpu() - start
            return LocalWork(None, update, update, result.base_loss,
                             steps * batch * self.forward_flops,
                             steps * bp_step_flops(batch, self.forward_flops, d))
        zo = zo_client_update(self.workspace, batches,
                              step_seeds(cfg, broadcast.round_index, client_id), self.zo_spec,
                              fedavg)
        forward = flops = 0
        for r in zo.step_results:
            runs = r.stage_runs or (r.num_forward_passes,) * len(self.stage_flops)
            forward += batch * sum(n * f for n, f in zip(runs, self.stage_flops))
            flops += zo_vector_flops(len(r.loss_differences), d, cfg.zo.estimator == "central",
                                     fedavg)
            flops += update_flops(d) if fedavg else 0
        update = None if zo.final_weights is None else zo.final_weights.cpu() - start
        dense = update if fedavg and t.fedavg_upload == "dense_update" else None
        return LocalWork(None if dense is not None else zo.step_differences, dense, update,
                         zo.base_loss, forward, flops + forward)

    def _contribution(self, work: LocalWork, round_index: int, client_id: int) -> torch.Tensor:
        """The server's view of the client (``simulation.estimate_on: workers``): the update,
        or the FedSGD estimate rebuilt from the differences and seeds with the server's own
        function, here, outside the metered step (a real client does not build it)."""
        if work.update is not None:
            return work.update
        assert work.step_differences is not None
        seeds = step_seeds(self.cfg, round_index, client_id)[0]
        return rebuild_estimate(work.step_differences[0], seeds, self.zo_spec,
                                self.mask.num_trained, self.workspace.blocks)

    # -- one virtual client: pruning -----------------------------------------------------
    def pruning_scores(self, broadcast: PruningBroadcast, client_id: int) -> PruningReply:
        """The client's additive saliency contribution, at its kept prunable weights."""
        p = self.cfg.pruning
        seeds = pruning_draw_seeds(self.cfg.seed, broadcast.iteration, client_id,
                                   p.draws_per_client)
        method = broadcast.method
        batches = None
        if method in ("ntk_sap_data", "snip", "grasp"):
            batches = self._batches(Purpose.PRUNING_DRAW, broadcast.iteration, client_id,
                                    p.draws_per_client, p.batch_size)
        if method in ("ntk_sap", "ntk_sap_data"):
            inputs = None if batches is None else [x for x, _ in batches]
            signed = ntk_sap_mask_gradient(self.model, self.layout, self.mask, seeds,
                                           p.batch_size, self.dataset.input_shape, p.epsilon,
                                           inputs=inputs, draw_init=p.draw_init)
            # Two forward passes and a backward through both per draw.
            flops = 6 * p.batch_size * p.draws_per_client * self.forward_flops
        elif method == "snip":
            signed = snip_contribution(self.model, self.layout, self.mask, self.initial_flat,
                                       batches)
            flops = 3 * p.batch_size * p.draws_per_client * self.forward_flops
        elif method == "grasp":
            signed = grasp_contribution(self.model, self.layout, self.mask, self.initial_flat,
                                        batches)
            # Gradient (forward + backward), then a Hessian-vector product (about twice that).
            flops = 9 * p.batch_size * p.draws_per_client * self.forward_flops
        else:
            raise ValueError(f"pruning method {method!r} is not computed by clients")
        kept = self.mask.prunable_kept
        return PruningReply(
            client_id=client_id, kept_scores=signed[kept].clone(), flops=int(flops),
            upload_bytes=pruning_upload_bytes(self.mask.num_kept_prunable),
            download_bytes=pruning_download_bytes(self.mask.wire_bytes()))


def serve_clients(runtime: ClientRuntime, mask: MaskBroadcast | None,
                  broadcast: TrainBroadcast | PruningBroadcast,
                  client_ids: Sequence[int]) -> list[TrainReply | PruningReply | ClientFailure]:
    """Run a batch of virtual clients on one runtime, one after another.

    A client that raises becomes a :class:`ClientFailure` carrying its error message; the
    others are unaffected. ``mask`` may be None when the runtime already holds that version.
    """
    if mask is not None:
        runtime.set_mask(mask)
    runtime.check_mask_version(broadcast.mask_version)
    if isinstance(broadcast, TrainBroadcast):
        runtime.workspace.load(broadcast.weights)
        work = runtime.train
    else:
        work = runtime.pruning_scores
    replies: list[TrainReply | PruningReply | ClientFailure] = []
    for client_id in client_ids:
        try:
            replies.append(work(broadcast, client_id))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - a client's crash must not end the run
            replies.append(ClientFailure(client_id, f"{type(exc).__name__}: {exc}"))
    return replies
