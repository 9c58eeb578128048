"""A federated run on Ray: start the actors, prune, run the rounds, report, clean up.

One run = one server actor + a fixed pool of client worker actors. The data set and the
partition are put in the object store once and shared by every actor. Inside a Tune trial
the actors land in the trial's placement group (Tune captures child actors), so a sweep
reserves exactly the resources its trials use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import ray
import torch

from fpzo_ray.config import RunConfig
from fpzo_ray.data import load_dataset, make_partition
from fpzo_ray.sim.pool import RayWorkerPool
from fpzo_ray.sim.server import FederatedServer
from fpzo_ray.sim.worker import ClientWorker, threads_for


class _ServerProcess(FederatedServer):
    """The server, with torch's threads matched to its CPU share."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cfg: RunConfig = args[0]
        torch.set_num_threads(threads_for(cfg.simulation.server_cpus))
        super().__init__(*args, **kwargs)


ServerActor = ray.remote(_ServerProcess)
WorkerActor = ray.remote(ClientWorker)


def bundles(cfg: RunConfig, driver_cpus: float = 0.1) -> list[dict[str, float]]:
    """Placement-group bundles of one run: its driver, its server, its workers."""
    sim = cfg.simulation
    worker: dict[str, float] = {"CPU": sim.worker_cpus}
    if sim.worker_gpus > 0:
        worker["GPU"] = sim.worker_gpus
    return [{"CPU": driver_cpus}, {"CPU": sim.server_cpus}] + [dict(worker)] * sim.num_workers


@dataclass
class Federation:
    server: Any  # actor handle of FederatedServer
    workers: list

    def shutdown(self) -> None:
        for actor in [self.server, *self.workers]:
            ray.kill(actor, no_restart=True)


def start_federation(cfg: RunConfig) -> Federation:
    dataset = load_dataset(cfg.data)
    partition = make_partition(cfg.data, dataset.train_labels, cfg.seed)
    dataset_ref, partition_ref = ray.put(dataset), ray.put(partition)
    sim = cfg.simulation
    workers = [WorkerActor.options(num_cpus=sim.worker_cpus, num_gpus=sim.worker_gpus)
               .remote(cfg, dataset_ref, partition_ref) for _ in range(sim.num_workers)]
    server = ServerActor.options(num_cpus=sim.server_cpus, num_gpus=0).remote(
        cfg, dataset_ref, RayWorkerPool(workers))
    return Federation(server, workers)


def run_federated(cfg: RunConfig, report: Callable[[dict[str, Any]], None]) -> list[dict]:
    """Prune, then train for ``cfg.training.rounds``; ``report`` gets each round's metrics.

    The first report also carries the pruning summary under ``"setup"``. Returns the
    per-client records (one per participant and round).
    """
    federation = start_federation(cfg)
    try:
        setup = ray.get(federation.server.prune.remote())
        for r in range(cfg.training.rounds):
            metrics = ray.get(federation.server.run_round.remote(r))
            if r == 0:
                metrics = {**metrics, "setup": setup}
            report(metrics)
        return ray.get(federation.server.records.remote())
    finally:
        federation.shutdown()
