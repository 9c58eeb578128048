"""The client worker actor: a long-lived process that serves many virtual clients.

It builds its model once and keeps the data set (shared read-only through Ray's object
store). Torch's thread count follows the actor's CPU share, so fractional actors do not
oversubscribe the cores they emulate, and the process keeps the memory it frees
(``allocator``): every step allocates the same activations again.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from fpzo_ray.config import RunConfig
from fpzo_ray.data.registry import ArrayDataset
from fpzo_ray.logs import configure as configure_logging
from fpzo_ray.sim.allocator import keep_freed_memory
from fpzo_ray.sim.client import ClientRuntime, serve_clients
from fpzo_ray.sim.messages import MaskBroadcast
from fpzo_ray.sim.pool import Broadcast, Reply


def threads_for(num_cpus: float) -> int:
    return max(1, math.floor(num_cpus))


class ClientWorker:
    """A worker actor's body: one :class:`ClientRuntime` serving chunks of virtual clients."""

    def __init__(
        self, cfg: RunConfig, dataset: ArrayDataset, partition: Sequence[np.ndarray]
    ) -> None:
        configure_logging()
        keep_freed_memory()
        torch.set_num_threads(threads_for(cfg.simulation.worker_cpus))
        self.runtime = ClientRuntime(cfg, dataset, partition)
        # What was built so far lives as long as the actor: never walk it again (the cyclic
        # collector, set off by the rounds' allocations, would)
        gc.freeze()

    def run(
        self, mask: MaskBroadcast | None, broadcast: Broadcast, client_ids: Sequence[int]
    ) -> tuple[list[Reply], float]:
        """The clients' replies, and the seconds this worker spent computing them."""
        started = time.perf_counter()
        replies = serve_clients(self.runtime, mask, broadcast, client_ids)
        return replies, time.perf_counter() - started

    def node_id(self) -> str:
        """The Ray node this worker runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def memory_report(self) -> dict[str, int]:
        """Resident set size and bytes of live torch tensors: idle workers must not grow."""
        import gc

        import psutil

        live = {
            t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
            for t in gc.get_objects()
            if isinstance(t, torch.Tensor)
        }
        return {
            "rss_bytes": psutil.Process().memory_info().rss,
            "tensor_bytes": int(sum(live.values())),
        }
