"""Runs in this process, without Ray: the in-process pool, and a whole reference run.

Every result of the Ray engine must equal :func:`run_in_process`'s bit for bit, whatever the
number of workers or nodes (``tests/test_engine.py``, ``tests/test_cluster_runs.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from fpzo_ray.config import RunConfig
from fpzo_ray.data.registry import ArrayDataset
from fpzo_ray.sim.client import ClientRuntime, serve_clients
from fpzo_ray.sim.devices import client_devices
from fpzo_ray.sim.messages import MaskBroadcast
from fpzo_ray.sim.pool import Broadcast, RoundReport, RoundTiming, by_client
from fpzo_ray.sim.server import FederatedServer


class InProcessPool:
    """All clients on one runtime in this process (tests, benchmarks, plain loops)."""

    def __init__(self, runtime: ClientRuntime) -> None:
        self.runtime = runtime

    def submit(
        self, mask: MaskBroadcast, broadcast: Broadcast, client_ids: Sequence[int]
    ) -> tuple[MaskBroadcast, Broadcast, Sequence[int]]:
        """Nothing runs beside this process: the work waits for :meth:`gather`."""
        return mask, broadcast, client_ids

    def gather(self, submitted: tuple[MaskBroadcast, Broadcast, Sequence[int]]) -> RoundReport:
        started = time.perf_counter()
        replies = by_client(serve_clients(self.runtime, *submitted))
        seconds = time.perf_counter() - started
        return RoundReport(replies, RoundTiming(0.0, seconds, seconds, seconds))

    def run(
        self, mask: MaskBroadcast, broadcast: Broadcast, client_ids: Sequence[int]
    ) -> RoundReport:
        return self.gather(self.submit(mask, broadcast, client_ids))


def run_in_process(
    cfg: RunConfig, dataset: ArrayDataset, partition: Sequence[np.ndarray]
) -> list[dict[str, Any]]:
    """A whole run in this process, no Ray: the reference the Ray engine must agree with.

    ``dataset, partition``: ``data.federated_data(cfg)``, as the Ray engine builds them.
    """
    server = FederatedServer(
        cfg, dataset, InProcessPool(ClientRuntime(cfg, dataset, partition)), client_devices(cfg)
    )
    server.prune()
    return [server.run_round(r) for r in range(cfg.training.rounds)]
