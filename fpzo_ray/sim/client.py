"""What a virtual client does, in plain PyTorch: the code a worker actor runs for each client.

A :class:`ClientRuntime` holds one model (built once, parameters in a flat buffer, initialised
from the run's model seed like the server's), the training set and the partition, and serves
any number of virtual clients one after another: a virtual client is only an id, i.e. a
partition, a device profile and a set of seeds. The training algorithm's client half
(``algorithms``) does the local work; the runtime draws the batches, meters the memory, holds
the peak against the device's budget and packs the reply. Nothing here knows Ray, so the same
runtime serves the Ray workers, the in-process pool and the benchmarks.

Memory is the device's, not the simulator's. A device runs a ZO step one perturbed forward
pass at a time (``zo.batching: loop``, eager); the simulator may run the same step faster in
another exact mode (``batched``: K + 1 models stacked into one pass, up to 19x the
activations; ``simulation.compile``). So a client's peak is that of the device's step,
measured by a metered reference step (:func:`device_config`) once per mask and batch size (the
model, the estimator and K are the runtime's for its whole life) and cached; the device budget
gate holds every client against it. Where the simulator's execution *is* the device's step,
that step is metered itself and nothing runs twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import torch

from fpzo_ray.accounting import (
    evaluation_download_bytes,
    evaluation_upload_bytes,
    forward_flops,
    layer_flops,
    pruning_download_bytes,
    pruning_upload_bytes,
    stage_forward_flops,
    statistics_bytes,
)
from fpzo_ray.accounting.memory import MemoryMeter, sparse_peak_bytes
from fpzo_ray.algorithms import algorithm_for
from fpzo_ray.algorithms.base import ClientModel
from fpzo_ray.config import RunConfig
from fpzo_ray.data.partition import client_holdout
from fpzo_ray.data.registry import ArrayDataset
from fpzo_ray.models import StagedModel, bind_flat_buffer, build_model
from fpzo_ray.models.statistics import (
    batch_statistics,
    measure_statistics,
    statistics_size,
    using_statistics,
)
from fpzo_ray.protocol import minibatch_indices, pruning_draw_seeds, zo_update_spec
from fpzo_ray.pruning import Mask
from fpzo_ray.pruning.methods import SaliencyInputs, checked_scores, pruning_method
from fpzo_ray.seeding import Purpose, derive_seed
from fpzo_ray.sim.devices import MemoryGate
from fpzo_ray.sim.evaluation import score
from fpzo_ray.sim.messages import (
    ClientFailure,
    EvalBroadcast,
    EvalReply,
    MaskBroadcast,
    PruningBroadcast,
    PruningReply,
    TrainBroadcast,
    TrainReply,
)
from fpzo_ray.task import build_task
from fpzo_ray.zo.client_update import ZOWorkspace
from fpzo_ray.zo.execution.auto_batching import auto_batching
from fpzo_ray.zo.execution.compiled import compile_forwards
from fpzo_ray.zo.layerwise import blocks_for

log = logging.getLogger(__name__)
Batches = list[tuple[torch.Tensor, torch.Tensor]]

#: ``model.buffers: local``: a client measures its statistics on at most this many of its
#: training samples (the first ones of its partition) before a federated evaluation.
LOCAL_STATISTICS_SAMPLES = 256


def device_config(cfg: RunConfig) -> RunConfig:
    """The run's configuration as a device executes its step: one perturbed model at a time,
    eager (what :class:`ClientRuntime` meters for every execution mode)."""
    return dataclasses.replace(
        cfg,
        zo=dataclasses.replace(cfg.zo, batching="loop", chunk_size=0),
        simulation=dataclasses.replace(cfg.simulation, compile=False),
    )


class ClientRuntime:
    """One model serving many virtual clients (see the module docstring)."""

    def __init__(
        self, cfg: RunConfig, dataset: ArrayDataset, partition: Sequence[np.ndarray]
    ) -> None:
        self.cfg = cfg
        self.dataset = dataset
        # with federated evaluation, each client trains on its partition less what it keeps
        # for scoring the global model (``task.client_holdout``)
        self.partition: Sequence[np.ndarray] = partition
        self.held_out: Sequence[np.ndarray] = [np.zeros(0, np.int64)] * len(partition)
        if cfg.task.federated_eval_clients:
            self.partition, self.held_out = client_holdout(
                list(partition), cfg.task.client_holdout, cfg.seed
            )
        self.device = torch.device(cfg.simulation.device)
        self.model = build_model(
            cfg,
            dataset.input_shape,
            dataset.num_classes,
            init_seed=derive_seed(cfg.seed, Purpose.MODEL_INIT),
        )
        self.model.to(self.device)
        self.flat, self.layout = bind_flat_buffer(self.model)
        self.initial_flat = self.flat.detach().clone()
        self.layers = layer_flops(self.model, dataset.input_shape)
        self.algorithm = algorithm_for(cfg)
        # how this worker's ZO steps execute (the layer-wise blocks, whether a step runs as a
        # device runs it); under BP it decides only how memory is measured
        self.zo_spec = zo_update_spec(cfg, clip_on_client=self.algorithm.moves)
        self.device_algorithm = algorithm_for(device_config(cfg))  # for the memory reference
        self.auto_batching = auto_batching(self.model, forward_flops(self.layers))
        self.gate = MemoryGate.of(cfg)
        self.compiled = compile_forwards(self.model) if cfg.simulation.compile else None
        self.has_statistics = statistics_size(self.model) > 0
        self.task = build_task(cfg.task.loss, cfg.task.metrics)
        self.mask_version = -1
        self._install(Mask.dense(self.layout))

    # -- state shared by all clients of a round ------------------------------------------
    def _install(self, mask: Mask) -> None:
        self.mask = mask
        kept = None if mask.is_dense else mask.kept_index().to(self.device)
        blocks = blocks_for(self.zo_spec, self.model, self.layout, kept)
        self.workspace = ZOWorkspace(
            self.model,
            self.layout,
            self.flat,
            kept,
            self.task.loss,
            blocks=blocks,
            compiled=self.compiled,
            auto_batching=self.auto_batching,
        )
        density = mask.layer_densities()
        forward = forward_flops(self.layers, density)
        # per stage, for the layer-wise variant; any other model is one stage
        stages = (
            stage_forward_flops(self.layers, len(self.model.stages), density)
            if isinstance(self.model, StagedModel)
            else [forward]
        )
        initial = self.initial_flat if kept is None else self.initial_flat[kept]
        self.client_model = ClientModel(
            self.workspace, initial.cpu(), forward, tuple(stages), mask.num_trained
        )
        # batch size -> the device step's (measured peak, the same with the model stored
        # sparsely), for this mask
        self.peak_memory: dict[int, tuple[int, int]] = {}

    def set_mask(self, broadcast: MaskBroadcast) -> None:
        """Install a new mask: the model is reset to the initial weights under that mask."""
        if broadcast.version == self.mask_version:
            return
        self._install(Mask(self.layout, broadcast.prunable_kept))
        self.mask_version = broadcast.version
        with torch.no_grad():
            self.flat.copy_(self.initial_flat * self.mask.kept_flat().to(self.device))

    def check_mask_version(self, version: int) -> None:
        if version != self.mask_version:
            raise RuntimeError(f"worker holds mask {self.mask_version}, round needs {version}")

    # -- one virtual client: training ----------------------------------------------------
    def _batches(
        self, purpose: Purpose, index: int, client_id: int, count: int, batch_size: int
    ) -> Batches:
        part = self.partition[client_id]
        out = []
        for step in range(count):
            idx = minibatch_indices(
                self.cfg.seed, purpose, index, client_id, step, part, batch_size
            )
            x, y = self.dataset.train_batch(idx)
            out.append((x.to(self.device), y.to(self.device)))
        return out

    def train(self, broadcast: TrainBroadcast, client_id: int) -> TrainReply | ClientFailure:
        """The client's work for a round, from the broadcast weights (already loaded).

        The client's peak memory is the device's step's, measured once per batch size after a
        mask change (see the module docstring) and every client's figure for that batch size.
        A client whose peak exceeds its device's budget fails like a device running out of
        memory: before computing when the peak is known, after the measured step otherwise;
        either way it delivers nothing.
        """
        round_index = broadcast.round_index
        batches = self._batches(
            Purpose.MINIBATCH,
            round_index,
            client_id,
            self.algorithm.local_steps,
            self.cfg.training.batch_size,
        )
        batch = int(batches[0][1].shape[0])
        download = self.algorithm.download_bytes(
            self.mask.num_trained, self.mask.wire_bytes(), broadcast.payload
        )
        if batch not in self.peak_memory and not self.workspace.runs_as_device(self.zo_spec):
            self.peak_memory[batch] = self._device_peak(batches, broadcast, client_id)
        if batch in self.peak_memory:
            failure = self._out_of_memory(client_id, batch, download)
            if failure is not None:
                return failure
        meter = None if batch in self.peak_memory else self._meter(batches)
        # Shortcuts (the server's rebuild computed on the way) only where memory is not
        # measured: a metered step holds what the client holds, nothing more.
        shortcuts = meter is None and self.cfg.simulation.estimate_on == "workers"
        with meter if meter is not None else contextlib.nullcontext():
            work = self.algorithm.local_work(
                self.client_model,
                batches,
                broadcast.weights,
                round_index,
                client_id,
                shortcuts,
                broadcast.payload,
            )
        if meter is not None:
            self.peak_memory[batch] = (
                meter.peak_bytes,
                sparse_peak_bytes(meter.peak_breakdown, self.mask.stored_bytes()),
            )
            failure = self._out_of_memory(client_id, batch, download)
            if failure is not None:
                return failure
        contribution = None
        if self.cfg.simulation.estimate_on == "workers":
            contribution = self.algorithm.worker_contribution(
                work, round_index, client_id, broadcast.weights, self.workspace.blocks
            )
        dense, sparse = self.peak_memory[batch]
        statistics, measured_flops = self._statistics(batches)
        return TrainReply(
            client_id=client_id,
            num_samples=int(self.partition[client_id].shape[0]),
            batch_size=batch,
            base_loss=work.base_loss,
            upload=work.upload,
            contribution=contribution,
            forward_flops=int(work.forward_flops) + measured_flops,
            flops=int(work.flops) + measured_flops,
            upload_bytes=work.upload_bytes
            + statistics_bytes(0 if statistics is None else statistics.numel()),
            download_bytes=download,
            peak_memory_bytes=dense,
            sparse_memory_bytes=sparse,
            statistics=statistics,
        )

    def _statistics(self, batches: Batches) -> tuple[torch.Tensor | None, int]:
        """Under ``model.buffers: aggregate``, for a model with running statistics: those of
        the broadcast model on the client's first batch (one forward pass, no gradient), and
        the FLOPs of that pass; else (None, 0)."""
        if self.cfg.model.buffers != "aggregate" or not self.has_statistics:
            return None, 0
        x = batches[0][0]
        measured = measure_statistics(self.model, [x])
        return measured, int(x.shape[0]) * self.client_model.forward_flops_per_sample

    def _out_of_memory(self, client_id: int, batch: int, download: int) -> ClientFailure | None:
        over = self.gate.check(client_id, *self.peak_memory[batch])
        if over is None:
            return None
        log.info("client %d: %s", client_id, over.message())
        return ClientFailure(
            client_id,
            over.message(),
            kind="oom",
            peak_memory_bytes=over.peak_bytes,
            budget_bytes=over.budget_bytes,
            download_bytes=download,
        )

    def _device_peak(
        self, batches: Batches, broadcast: TrainBroadcast, client_id: int
    ) -> tuple[int, int]:
        """The device's step on these batches, metered (its results are dropped; the weights
        stay loaded): (peak, the same with the model stored sparsely)."""
        workspace = dataclasses.replace(self.workspace, compiled=None)
        model = dataclasses.replace(self.client_model, workspace=workspace)
        with self._meter(batches) as meter:
            self.device_algorithm.local_work(
                model,
                batches,
                broadcast.weights,
                broadcast.round_index,
                client_id,
                False,
                broadcast.payload,
            )
        return meter.peak_bytes, sparse_peak_bytes(meter.peak_breakdown, self.mask.stored_bytes())

    def _meter(self, batches: Batches) -> MemoryMeter:
        meter = MemoryMeter()
        meter.track(self.flat, "parameters")
        for buffer in self.model.buffers():  # running statistics and the like: model state
            meter.track(buffer, "parameters")
        if self.workspace.kept_index is not None:
            meter.track(self.workspace.kept_index, "masks")
        for x, y in batches:
            meter.track(x, "inputs")
            meter.track(y, "inputs")
        return meter

    # -- one virtual client: federated evaluation ----------------------------------------
    @torch.no_grad()
    def evaluate(self, broadcast: EvalBroadcast, client_id: int) -> EvalReply:
        """The client's score of the broadcast weights (already loaded) on its held-out data,
        in eval mode, normalised as ``model.buffers`` says: by the global statistics it was
        sent (aggregate, recalibrate), by each batch's own (batch_stats) or by its own data's
        (local: measured on up to :data:`LOCAL_STATISTICS_SAMPLES` of its training samples,
        one forward pass counted, never sent)."""
        held = self.held_out[client_id]
        per_sample = self.client_model.forward_flops_per_sample
        sent = 0 if broadcast.statistics is None else int(broadcast.statistics.numel())
        download = evaluation_download_bytes(self.mask.num_trained, self.mask.wire_bytes(), sent)
        if held.shape[0] == 0:
            return EvalReply(client_id, 0, {}, 0, evaluation_upload_bytes(0), download)
        inputs, targets = self.dataset.train_batch(held)
        flops = per_sample * int(held.shape[0])
        was_training = self.model.training
        self.model.eval()
        policy = self.cfg.model.buffers
        normalised: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if self.has_statistics and policy == "local":
            own = self.partition[client_id][:LOCAL_STATISTICS_SAMPLES]
            x = self.dataset.train_batch(own)[0].to(self.device)
            batches = x.split(self.cfg.training.batch_size)
            normalised = using_statistics(self.model, measure_statistics(self.model, batches))
            flops += per_sample * int(own.shape[0])
        elif self.has_statistics and policy == "batch_stats":
            normalised = batch_statistics(self.model)
        elif self.has_statistics and broadcast.statistics is not None:
            normalised = using_statistics(self.model, broadcast.statistics.to(self.device))
        try:
            with normalised:
                scores = score(
                    self.model,
                    self.task,
                    inputs,
                    targets,
                    self.cfg.training.batch_size,
                    self.device,
                )
        finally:
            self.model.train(was_training)
        return EvalReply(
            client_id,
            int(held.shape[0]),
            scores,
            flops,
            evaluation_upload_bytes(len(scores)),
            download,
        )

    # -- one virtual client: pruning -----------------------------------------------------
    def pruning_scores(self, broadcast: PruningBroadcast, client_id: int) -> PruningReply:
        """The client's additive saliency contribution, at its kept prunable weights."""
        p = self.cfg.pruning
        saliency = pruning_method(broadcast.method, p.args).client
        if saliency is None:
            raise ValueError(f"pruning method {broadcast.method!r} is not computed by clients")
        batches = None
        if saliency.data_batches:
            batches = self._batches(
                Purpose.PRUNING_DRAW,
                broadcast.iteration,
                client_id,
                p.draws_per_client,
                p.batch_size,
            )
        computed = saliency.compute(
            SaliencyInputs(
                self.model,
                self.layout,
                self.mask,
                self.initial_flat,
                pruning_draw_seeds(self.cfg, broadcast.iteration, client_id),
                batches,
                p.batch_size,
                self.dataset.input_shape,
                p.epsilon,
                p.draw_init,
                self.task.loss,
            )
        )
        signed = checked_scores(broadcast.method, computed, self.layout.num_prunable)
        flops = (
            saliency.forward_passes
            * p.batch_size
            * p.draws_per_client
            * self.client_model.forward_flops_per_sample
        )
        kept = self.mask.prunable_kept
        return PruningReply(
            client_id=client_id,
            kept_scores=signed[kept].clone(),
            flops=int(flops),
            upload_bytes=pruning_upload_bytes(self.mask.num_kept_prunable),
            download_bytes=pruning_download_bytes(self.mask.wire_bytes()),
        )


def serve_clients(
    runtime: ClientRuntime,
    mask: MaskBroadcast | None,
    broadcast: TrainBroadcast | PruningBroadcast | EvalBroadcast,
    client_ids: Sequence[int],
) -> list[TrainReply | PruningReply | EvalReply | ClientFailure]:
    """Run a batch of virtual clients on one runtime, one after another.

    A client that raises becomes a :class:`ClientFailure` carrying its error message; the
    others are unaffected. ``mask`` may be None when the runtime already holds that version.
    """
    if mask is not None:
        runtime.set_mask(mask)
    runtime.check_mask_version(broadcast.mask_version)
    if isinstance(broadcast, TrainBroadcast | EvalBroadcast):
        runtime.workspace.load(broadcast.weights)
    replies: list[TrainReply | PruningReply | EvalReply | ClientFailure] = []
    for client_id in client_ids:
        try:
            if isinstance(broadcast, TrainBroadcast):
                replies.append(runtime.train(broadcast, client_id))
            elif isinstance(broadcast, EvalBroadcast):
                replies.append(runtime.evaluate(broadcast, client_id))
            else:
                replies.append(runtime.pruning_scores(broadcast, client_id))
        except Exception as exc:  # noqa: BLE001 - a client's crash must not end the run
            log.warning("client %d raised %s: %s", client_id, type(exc).__name__, exc)
            replies.append(ClientFailure(client_id, f"{type(exc).__name__}: {exc}"))
    return replies
