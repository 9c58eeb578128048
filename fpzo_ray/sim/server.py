"""The federated server: global state and what happens in a round.

It holds the global weights (only the d trained coordinates), the mask, the server optimizer
and the run's counters, and drives the two phases of the method:

1. foresight pruning (``sim.pruning_phase``): the global mask;
2. training rounds: sample clients, let the algorithm choose who takes part and what they
   receive (``configure_round``), broadcast, collect the replies in client-id order, turn
   each into a contribution in the server's coordinates, aggregate them (by default their
   sample-weighted average) into one server step. What a contribution is (an estimate
   rebuilt from K scalars and the seeds, a replayed local trajectory, a dense update) and how
   the aggregate steps the server optimizer is the training algorithm's server half
   (``algorithms``): the round loop does not branch on the algorithm or its mode.

The class is plain Python; ``sim.ray.federation`` runs it as a Ray actor.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fpzo_ray.accounting import forward_flops, layer_flops
from fpzo_ray.algorithms import algorithm_for
from fpzo_ray.config import RunConfig
from fpzo_ray.data.registry import ArrayDataset
from fpzo_ray.failure import RunFailed
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.models.staged import StageBlocks
from fpzo_ray.models.statistics import read_statistics
from fpzo_ray.optim.server import ServerOptimizer, weighted_average
from fpzo_ray.protocol import evaluation_participants, round_participants, zo_update_spec
from fpzo_ray.pruning import Mask
from fpzo_ray.pruning.connectivity import check_connectivity
from fpzo_ray.seeding import Purpose, derive_seed
from fpzo_ray.sim.checkpoint import CheckpointError, run_key
from fpzo_ray.sim.devices import ClientDevices, reachable
from fpzo_ray.sim.evaluation import Evaluator
from fpzo_ray.sim.federated_evaluation import federated_figures
from fpzo_ray.sim.messages import (
    EvalBroadcast,
    EvalReply,
    MaskBroadcast,
    PruningReply,
    TrainBroadcast,
    TrainReply,
)
from fpzo_ray.sim.pool import ClientPool, FailureCounts, RoundReport, RoundTiming
from fpzo_ray.sim.pruning_phase import PruningPhase
from fpzo_ray.sim.ray.placement import server_device
from fpzo_ray.sim.round_tally import RoundTally
from fpzo_ray.task import build_task
from fpzo_ray.zo.layerwise import blocks_for


@dataclass(frozen=True)
class DispatchedRound:
    """A round whose clients were started: who was sampled, who could be reached, the
    broadcast weights, and the pool's handle on the work (None: nobody to wait for)."""

    round_index: int
    chosen: list[int]
    present: list[int]
    start: torch.Tensor
    submitted: Any  # None: nobody to wait for


def _plain_number(value: Any) -> Any:
    """numpy scalars in a client record, as the Python numbers JSON knows."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


class FederatedServer:
    """The global state of a run and its two phases (see the module docstring)."""

    def __init__(
        self,
        cfg: RunConfig,
        dataset: ArrayDataset,
        pool: ClientPool,
        devices: ClientDevices | None = None,
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.device = server_device(cfg.simulation)
        self.input_shape = dataset.input_shape
        self.num_classes = dataset.num_classes
        self.model = build_model(
            cfg,
            dataset.input_shape,
            dataset.num_classes,
            init_seed=derive_seed(cfg.seed, Purpose.MODEL_INIT),
        )
        self.model.to(self.device)
        self.flat, self.layout = bind_flat_buffer(self.model)
        self.evaluator = Evaluator(
            self.model,
            self.flat,
            dataset,
            self.device,
            buffers=cfg.model.buffers,
            task=build_task(cfg.task.loss, cfg.task.metrics),
            subset_size=cfg.training.eval_subset,
            seed=cfg.seed,
        )
        # the global running statistics (``model.buffers: aggregate``): the clients' last
        # measured ones, averaged; the model's own until a round has some
        self.statistics = read_statistics(self.model)
        # token ids have no gradient: the mask's connectivity check needs real inputs
        self.inputs_are_real = self.evaluator.test[0].dtype.is_floating_point
        self.initial_flat = self.flat.detach().cpu().clone()
        self.layers = layer_flops(self.model, dataset.input_shape)
        self.algorithm = algorithm_for(cfg)
        # the layer-wise scope's blocks come from it, whatever the algorithm
        self.zo_spec = zo_update_spec(cfg, clip_on_client=self.algorithm.moves)
        self.mask = Mask.dense(self.layout)
        self.mask_version = 0
        self.blocks: StageBlocks | None = None
        self.optimizer = self._new_optimizer()
        self.devices = devices
        self.client_records: list[dict[str, Any]] = []
        self.totals: dict[str, Any] = {}
        self.reached: dict[str, Any] = {}  # time / rounds to the target accuracy, once reached
        self.pruning_summary: dict[str, Any] = {}
        self.rounds_done = 0
        self.empty_rounds = 0  # rounds in a row with nothing to aggregate
        self.engine_faults = FailureCounts()  # the pool's, as of its last round
        self._next: DispatchedRound | None = None  # the next round, already started

    def _new_optimizer(self) -> ServerOptimizer:
        t = self.cfg.training
        start = self.initial_flat
        if self.cfg.pruning.init_scaling == "fan_in":
            start = self.mask.fan_in_rescaled(start)
        return ServerOptimizer(
            start[self.mask.kept_index()],
            t.server_optimizer,
            t.server_lr,
            (t.adam_beta1, t.adam_beta2),
            self.algorithm.server_clip_inf_norm,
            t.ema_decay,
            t.server_momentum,
        )

    @property
    def num_trained(self) -> int:
        return self.mask.num_trained

    # -- phase 1: pruning ------------------------------------------------------------------
    def prune(self) -> dict[str, Any]:
        """Build the global mask the configuration asks for; returns a summary of the phase."""
        cfg = self.cfg
        phase = PruningPhase(
            cfg,
            self.model,
            self.layout,
            self.initial_flat,
            self.input_shape,
            self.pool,
            self.mask_version,
        )
        self._next = None
        self.mask = phase.build(cfg.pruning_method, 1.0 - cfg.pruning.sparsity)
        self.mask_version = phase.version + 1
        self.blocks = blocks_for(self.zo_spec, self.model, self.layout, self.mask.kept_index())
        self.optimizer = self._new_optimizer()
        self.totals["cumulative_upload_bytes"] = phase.cost["pruning_upload_bytes"]
        self.totals["cumulative_download_bytes"] = phase.cost["pruning_download_bytes"]
        self.pruning_summary = {
            "pruning_method": cfg.pruning_method,
            **phase.summary(self.mask),
            **self._connectivity(),
            "sparse_forward_flops_per_sample": forward_flops(
                self.layers, self.mask.layer_densities()
            ),
            "dense_forward_flops_per_sample": forward_flops(self.layers),
        }
        return self.pruning_summary

    def _connectivity(self) -> dict[str, Any]:
        """Check that the mask leaves a network that computes (``pruning.connectivity``):
        a collapsed one fails the run unless ``pruning.allow_collapse``; empty layers and
        removed weights that never meet data are a warning line each. Returns the
        figures and warnings for the summary (none for a dense model or one that reads token
        ids)."""
        cfg = self.cfg
        if self.mask.is_dense or not self.inputs_are_real:  # integer inputs: token ids
            return {}
        found = check_connectivity(
            self.model,
            self.layout,
            self.initial_flat.to(self.device),
            self.mask,
            self.input_shape,
            derive_seed(cfg.seed, Purpose.CONNECTIVITY),
        )
        if not found.checked:  # its output has no input gradient even dense: token ids
            return {}
        what = f"pruning: {cfg.pruning_method} at sparsity {cfg.pruning.sparsity:g}"
        if found.collapsed and not cfg.pruning.allow_collapse:
            empty = ", ".join(found.empty_layers)
            raise RunFailed(
                "pruning_collapsed",
                f"{what}: the model's output no longer depends on its input"
                + (f" (empty layers: {empty})" if empty else "")
                + "; another method or a lower sparsity, or pruning.allow_collapse: true to "
                "train it anyway",
            )
        return {
            "unused_weights": int(found.unused.sum()),
            "removed_unused_weights": found.removed_unused,
            "effective_sparsity": found.effective_sparsity,
            "empty_layers": list(found.empty_layers),
            "pruning_warnings": found.warnings(what, self.layout, self.input_shape),
        }

    # -- phase 2: training -----------------------------------------------------------------
    def _dispatch(self, round_index: int) -> DispatchedRound:
        """Decide round ``round_index``'s participants and broadcast, and start their work."""
        cfg = self.cfg
        plan = self.algorithm.configure_round(round_index, round_participants(cfg, round_index))
        present = plan.clients
        if self.devices is not None:
            answers = reachable(
                self.devices.catalog, self.devices.device_of, cfg.seed, round_index, plan.clients
            )
            present = [c for c, ok in zip(plan.clients, answers) if ok]
        start = self.optimizer.weights.detach().clone()
        broadcast = TrainBroadcast(round_index, self.mask_version, start, plan.payload)
        submitted = None
        if present:
            mask = MaskBroadcast(self.mask_version, self.mask.prunable_kept)
            submitted = self.pool.submit(mask, broadcast, present)
        return DispatchedRound(round_index, plan.clients, present, start, submitted)

    def run_round(self, round_index: int) -> dict[str, Any]:
        """One training round; returns the round's metrics (evaluation included when due).

        The next round's clients are started as soon as this round's server step is taken,
        before this round's evaluation and before the driver reports it: their work depends
        only on the new weights, so evaluating, reporting and checkpointing overlap it. (A
        checkpoint holds the server's state after this round; the next round's work in
        flight is not state: a resumed run submits it again, the same work from the same
        seeds.)
        """
        cfg = self.cfg
        started = time.perf_counter()
        dispatched = self._next
        if dispatched is None or dispatched.round_index != round_index:
            dispatched = self._dispatch(round_index)
        self._next = None
        report = RoundReport([], failures=self.engine_faults)
        if dispatched.submitted is not None:
            report = self.pool.gather(dispatched.submitted)
            self.engine_faults = report.failures
        pooled = time.perf_counter()

        chosen, present, start = dispatched.chosen, dispatched.present, dispatched.start
        tally = RoundTally(round_index + 1, self.devices, cfg.devices.round_deadline_s)
        for client in sorted(set(chosen) - set(present)):
            tally.unavailable(client)
        contributions, weights, statistics = [], [], []
        for reply in report.replies:
            assert not isinstance(reply, PruningReply | EvalReply)  # a training round's
            if tally.accept(reply, isinstance(reply, TrainReply) and reply.is_finite()):
                assert isinstance(reply, TrainReply)
                contributions.append(self._contribution(reply, round_index, start))
                weights.append(float(reply.num_samples))
                if reply.statistics is not None:
                    statistics.append(reply.statistics)
        self.client_records.extend(tally.records)
        if statistics and len(statistics) == len(weights):
            self.statistics = weighted_average(statistics, weights)
        if contributions:
            aggregate = self.algorithm.aggregate(contributions, weights)
            self.algorithm.server_step(self.optimizer, aggregate)
            if not bool(torch.isfinite(self.optimizer.weights).all()):
                raise RunFailed(
                    "non_finite_weights",
                    f"round {round_index + 1}: the server step made the global weights "
                    "infinite or NaN (a learning rate, sigma or update too large?)",
                )
        self._count_empty_round(round_index, contributions, tally)
        self.rounds_done = round_index + 1
        if self.rounds_done < cfg.training.rounds:
            self._next = self._dispatch(self.rounds_done)
        aggregated = time.perf_counter()

        for key, value in tally.totals().items():
            self.totals[key] = self.totals.get(key, 0) + value
        metrics: dict[str, Any] = {
            "round": round_index + 1,
            "participants": len(chosen),
            "aggregated_clients": len(contributions),
            **tally.round_metrics(),
            **self.totals,
        }
        if failures := tally.failures():
            metrics["client_failures"] = failures  # text: for the terminal, not a metric
        metrics["cumulative_worker_failures"] = report.failures.worker_failures
        metrics["cumulative_retried_clients"] = report.failures.retried_clients
        metrics.update(self.evaluator.evaluate_subset(self.global_flat_weights(), self.statistics))
        last = round_index + 1 == cfg.training.rounds
        if (round_index + 1) % cfg.training.eval_every == 0 or last:
            metrics.update(self.evaluate())
            if cfg.task.federated_eval_clients:
                metrics.update(self._federated_evaluation(round_index))
            target = cfg.training.target_accuracy
            if (
                target > 0
                and "time_to_target_s" not in self.reached
                and metrics["test_accuracy"] >= target
            ):
                self.reached["time_to_target_s"] = self.totals.get("simulated_time_s", 0.0)
                self.reached["rounds_to_target"] = round_index + 1
        metrics.update(self.reached)
        metrics.update(_timing(report.timing, started, pooled, aggregated))
        return metrics

    def _count_empty_round(
        self, round_index: int, contributions: list[torch.Tensor], tally: RoundTally
    ) -> None:
        """Fail the run once more than ``training.max_empty_rounds`` rounds in a row had no
        reply to aggregate: the weights no longer change, and a run that trains nothing
        must not end as if it had."""
        self.empty_rounds = 0 if contributions else self.empty_rounds + 1
        allowed = self.cfg.training.max_empty_rounds
        if self.empty_rounds > allowed:
            first = round_index + 1 - allowed
            rounds = f"rounds {first}-{round_index + 1}" if allowed else f"round {first}"
            why = tally.failures() or "no client was sampled"
            raise RunFailed(
                "no_usable_clients",
                f"{rounds}: no sampled client's reply could be aggregated (round "
                f"{round_index + 1}: {why}); training.max_empty_rounds is {allowed}",
            )

    def _contribution(
        self, reply: TrainReply, round_index: int, start: torch.Tensor
    ) -> torch.Tensor:
        """A client's contribution in the server's coordinates: rebuilt here from its upload
        and the seeds by the algorithm, unless the worker already did (the same numbers:
        see ``simulation.estimate_on``)."""
        if reply.contribution is not None:
            return reply.contribution
        return self.algorithm.contribution(
            reply.upload, round_index, reply.client_id, start, self.blocks
        )

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly (seeds make the rest stateless)."""
        # The client records, one per sampled client and round, are most of the state and
        # grow with the run: as one JSON text they save and load 5x faster than as objects.
        return {
            "rounds_done": self.rounds_done,
            "mask": self.mask.prunable_kept.clone(),
            "mask_version": self.mask_version,
            "optimizer": self.optimizer.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "totals": dict(self.totals),
            "reached": dict(self.reached),
            "client_records": json.dumps(self.client_records, default=_plain_number),
            "pruning_summary": dict(self.pruning_summary),
            "empty_rounds": self.empty_rounds,
            "run_key": run_key(self.cfg),
            "statistics": self.statistics.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``, a :meth:`state_dict` that ``sim.checkpoint`` has checked.

        What only this model can tell is checked first, before anything changes: the mask
        covers the model's prunable weights, and the trained vector holds the coordinates the
        mask trains. A checkpoint of another model (the run folder's configuration edited)
        raises a one-line :class:`CheckpointError` naming the field.
        """
        kept = state["mask"]
        if kept.shape != (self.layout.num_prunable,):
            raise CheckpointError(
                f"checkpoint field 'mask' has {kept.numel()} entries, but this model has "
                f"{self.layout.num_prunable} prunable weights"
            )
        mask = Mask(self.layout, kept)
        trained = state["optimizer"]["weights"].numel()
        if trained != mask.num_trained:
            raise CheckpointError(
                f"checkpoint field 'optimizer.weights' holds {trained} values, but the mask "
                f"trains {mask.num_trained} coordinates of this model"
            )
        self._next = None
        self.mask = mask
        self.mask_version = state["mask_version"]
        self.blocks = blocks_for(self.zo_spec, self.model, self.layout, self.mask.kept_index())
        self.optimizer = self._new_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.algorithm.load_state_dict(state.get("algorithm", {}))
        self.totals = dict(state["totals"])
        self.reached = dict(state["reached"])
        self.client_records = json.loads(state["client_records"])
        self.pruning_summary = dict(state["pruning_summary"])
        self.rounds_done = state["rounds_done"]
        self.empty_rounds = state.get("empty_rounds", 0)
        statistics = state.get("statistics", read_statistics(self.model))
        if statistics.shape != self.statistics.shape:
            raise CheckpointError(
                f"checkpoint field 'statistics' holds {statistics.numel()} values, but this "
                f"model keeps {self.statistics.numel()} running statistics"
            )
        self.statistics = statistics.clone()

    # -- evaluation ------------------------------------------------------------------------
    def global_flat_weights(self, use_ema: bool = True) -> torch.Tensor:
        """The global model as a full flat vector (pruned coordinates exactly zero)."""
        weights = self.optimizer.eval_weights if use_ema else self.optimizer.weights.detach()
        full = torch.zeros(self.layout.total, dtype=torch.float32)
        full[self.mask.kept_index()] = weights.cpu()
        return full

    def evaluate(self) -> dict[str, float]:
        """The global model (EMA weights when on) on the validation and test splits."""
        return self.evaluator.evaluate(self.global_flat_weights(), self.statistics)

    def _federated_evaluation(self, round_index: int) -> dict[str, float]:
        """The global model (the weights :meth:`evaluate` scored) scored by the clients of
        ``evaluation_participants`` on their held-out data (``sim.federated_evaluation``),
        sent the global statistics where ``model.buffers`` has any. With Ray, their calls
        queue behind the next round's, already submitted, on the same workers."""
        policy = self.evaluator.buffers
        statistics = {"aggregate": self.statistics, "recalibrate": self.evaluator.recalibrated}
        broadcast = EvalBroadcast(
            round_index,
            self.mask_version,
            self.optimizer.eval_weights.detach().clone(),
            statistics.get(policy),
        )
        report = self.pool.run(
            MaskBroadcast(self.mask_version, self.mask.prunable_kept),
            broadcast,
            evaluation_participants(self.cfg, round_index),
        )
        devices = self.devices
        metrics, cost, records = federated_figures(
            report.replies,
            round_index + 1,
            lambda c: devices.profile(c).name if devices is not None else None,
        )
        self.client_records.extend(records)
        for key, value in cost.items():
            total = f"cumulative_{key}"
            self.totals[total] = self.totals.get(total, 0) + value
            metrics[total] = self.totals[total]
        return metrics

    def records(self) -> list[dict[str, Any]]:
        return list(self.client_records)

    def export_model(self) -> dict[str, Any]:
        """The final global model, stored sparsely (``models.pruned``), with its test and
        validation figures: the weights the last evaluation used."""
        from fpzo_ray.config import config_to_dict
        from fpzo_ray.models.pruned import pruned_state

        metrics = self.evaluate()
        return pruned_state(
            config_to_dict(self.cfg),
            self.input_shape,
            self.num_classes,
            self.global_flat_weights(),
            self.mask.kept_index(),
            self.model,
            metrics,
        )


def _timing(
    pool: RoundTiming, started: float, pooled: float, aggregated: float
) -> dict[str, float]:
    """This round's wall time, split: client compute, waiting, Ray, aggregation, evaluation."""
    now = time.perf_counter()
    return {
        "time_round_s": now - started,
        "time_aggregation_s": aggregated - pooled,
        "time_evaluation_s": now - aggregated,
        "time_client_compute_s": pool.compute_max_s,
        "time_waiting_s": pool.waiting_s,
        "time_ray_transfer_s": pool.transfer_s + pool.dispatch_s,
    }
