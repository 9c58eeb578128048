"""A federated run on Ray: start the actors, prune, run the rounds, report, checkpoint.

One run = one server actor + a fixed pool of client worker actors. The data set and the
partition are put in the object store once and shared by every actor. Inside a Tune trial
the actors land in the trial's placement group (Tune captures child actors), so a sweep
reserves exactly the resources its trials use.
"""

from __future__ import annotations

import functools
import gc
import math
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray.exceptions import GetTimeoutError
from ray.util import get_current_placement_group

from fpzo_ray.config import RunConfig
from fpzo_ray.data import federated_data
from fpzo_ray.failure import RunFailed
from fpzo_ray.logs import configure as configure_logging
from fpzo_ray.sim.allocator import keep_freed_memory
from fpzo_ray.sim.callbacks import RunCallback
from fpzo_ray.sim.devices import client_devices
from fpzo_ray.sim.ray.placement import actor_options, server_resources, worker_resources
from fpzo_ray.sim.ray.ray_pool import RayWorkerPool
from fpzo_ray.sim.ray.worker import ClientWorker, threads_for
from fpzo_ray.sim.server import FederatedServer

DRIVER_CPUS = 0.1


class _ServerProcess(FederatedServer):
    """The server, with torch's threads matched to its CPU share, keeping the memory it frees
    (``allocator``) as the workers do."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cfg: RunConfig = args[0]
        configure_logging()
        keep_freed_memory()
        torch.set_num_threads(threads_for(cfg.simulation.server_cpus))
        super().__init__(*args, **kwargs)
        gc.freeze()  # what was built so far lives as long as the actor (see ClientWorker)


ServerActor = ray.remote(_ServerProcess)
WorkerActor = ray.remote(ClientWorker)


def resolve_num_workers(cfg: RunConfig, cpus: float | None = None, concurrent_runs: int = 1) -> int:
    """``simulation.num_workers``, or (when 0) as many workers as the CPUs allow.

    ``cpus`` defaults to the connected cluster's total; the share of one of
    ``concurrent_runs`` runs, less its driver and server, is divided by ``worker_cpus``.
    Never more than the clients of a round, never fewer than one.
    """
    sim = cfg.simulation
    if sim.num_workers > 0:
        return sim.num_workers
    total = cpus if cpus is not None else float(ray.cluster_resources().get("CPU", 1))
    room = total / concurrent_runs - DRIVER_CPUS - sim.server_cpus
    return max(1, min(cfg.training.clients_per_round, math.floor(room / sim.worker_cpus + 1e-9)))


def bundles(cfg: RunConfig, num_workers: int | None = None) -> list[dict[str, float]]:
    """Placement-group bundles of one run: its driver, its server, its workers."""
    sim = cfg.simulation
    count = num_workers if num_workers is not None else resolve_num_workers(cfg)
    return [{"CPU": DRIVER_CPUS}, server_resources(sim)] + [worker_resources(sim)] * count


def _spawn_worker(cfg: RunConfig, dataset_ref: Any, partition_ref: Any) -> Any:
    """A new worker actor (also used by the pool to replace a dead one)."""
    sim = cfg.simulation
    options = actor_options(worker_resources(sim))
    if sim.placement == "spread" and get_current_placement_group() is None:
        options["scheduling_strategy"] = "SPREAD"
    return WorkerActor.options(**options).remote(cfg, dataset_ref, partition_ref)


@dataclass
class Federation:
    """A running federation: the server actor and the pool of worker actors."""

    server: Any  # actor handle of FederatedServer
    pool: RayWorkerPool

    def shutdown(self) -> None:
        for actor in [self.server, *self.pool.workers]:
            ray.kill(actor, no_restart=True)


def start_federation(cfg: RunConfig) -> Federation:
    dataset, partition = federated_data(cfg)
    dataset_ref, partition_ref = ray.put(dataset), ray.put(partition)
    pool = RayWorkerPool(
        functools.partial(_spawn_worker, cfg, dataset_ref, partition_ref),
        resolve_num_workers(cfg),
        cfg.simulation.on_worker_failure,
        cfg.simulation.round_timeout_s,
    )
    server = ServerActor.options(**actor_options(server_resources(cfg.simulation))).remote(
        cfg, dataset_ref, pool, client_devices(cfg)
    )
    return Federation(server, pool)


def _within(call: Any, limit_s: float, what: str) -> Any:
    """The result of the server's ``call``, or :class:`RunFailed` (``round_timeout``) when it
    takes longer than ``limit_s``: a server step (an algorithm's, an evaluation) that hangs
    must not hold the run, its resources and its sweep forever."""
    try:
        return ray.get(call, timeout=limit_s)
    except GetTimeoutError:
        raise RunFailed(
            "round_timeout",
            f"{what} did not end within {limit_s:g} s (twice simulation.round_timeout_s): the "
            "server's step hangs or is far too slow",
        ) from None


@dataclass(frozen=True)
class FederatedResult:
    """What a finished run leaves: its client records and its final model."""

    records: list[dict]  # one per sampled client and round (``clients.csv``)
    model: dict[str, Any]  # the final global model, ``models.pruned.save_pruned``-ready
    rounds_done: int  # ``training.rounds``, or fewer when a callback ended the run early


def run_federated(
    cfg: RunConfig,
    callbacks: RunCallback,
    resume_state: dict[str, Any] | None = None,
) -> FederatedResult:
    """Prune (or restore), then train to ``cfg.training.rounds``, calling ``callbacks``
    (``sim.callbacks``) around the rounds; returns the client records and the final
    global model.

    Each round's metrics (the first round's also carry the pruning summary under
    ``"setup"``) go to ``callbacks.on_round``, which may end the run there, and then to
    ``callbacks.after_round`` with, every ``simulation.checkpoint_every`` rounds, the
    server's state (else None), so that a checkpoint and its round are recorded together;
    ``resume_state`` continues a run from such a state, round for round identical.

    The next round is submitted between ``on_round`` and ``after_round``, so that recording
    (MLflow, Tune, files) overlaps the clients' work instead of adding to it. The server
    actor runs its calls in order, so a checkpoint asked for after round r and before round
    r + 1 is round r's.
    """
    federation = start_federation(cfg)
    every = cfg.simulation.checkpoint_every
    try:
        server = federation.server
        # a round: the workers' share (each within round_timeout_s), then the server's step
        limit = 2 * cfg.simulation.round_timeout_s
        if resume_state is not None:
            ray.get(server.load_state_dict.remote(resume_state))
            setup, first = resume_state["pruning_summary"], resume_state["rounds_done"]
        else:
            pruning_limit = limit * max(1, cfg.pruning.iterations)
            setup, first = _within(server.prune.remote(), pruning_limit, "the pruning phase"), 0
        callbacks.on_start(cfg, first)
        rounds, done = cfg.training.rounds, first
        running: Any = server.run_round.remote(first) if first < rounds else None
        for r in range(first, rounds):
            metrics: dict[str, Any] = _within(running, limit, f"round {r + 1}")
            if r == first:
                metrics = {**metrics, "setup": setup}
            done = r + 1
            last = callbacks.on_round(metrics) or done == rounds
            due = every > 0 and done % every == 0 and not last
            state = server.state_dict.remote() if due else None
            running = None if last else server.run_round.remote(done)
            callbacks.after_round(metrics, ray.get(state) if state is not None else None)
            if last:
                break
        result = FederatedResult(
            ray.get(server.records.remote()), ray.get(server.export_model.remote()), done
        )
    finally:
        federation.shutdown()
    callbacks.on_end(result)
    return result
