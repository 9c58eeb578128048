"""Pools that execute a round's virtual clients: on Ray worker actors, or in this process.

Both return replies sorted by client id, never in arrival order, so aggregation (and hence
the whole run) is bit-identical whatever the number of workers.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from fpzo_ray.sim.client import ClientRuntime, serve_clients
from fpzo_ray.sim.messages import (
    ClientFailure,
    MaskBroadcast,
    PruningBroadcast,
    PruningReply,
    TrainBroadcast,
    TrainReply,
)

Reply = TrainReply | PruningReply | ClientFailure
Broadcast = TrainBroadcast | PruningBroadcast


class ClientPool(Protocol):
    def run(self, mask: MaskBroadcast, broadcast: Broadcast,
            client_ids: Sequence[int]) -> list[Reply]:
        """Run ``client_ids`` under ``mask`` and ``broadcast``; replies in client-id order."""
        ...


def _by_client(replies: list[Reply]) -> list[Reply]:
    return sorted(replies, key=lambda r: r.client_id)


class InProcessPool:
    """All clients on one runtime in this process (tests, benchmarks, plain loops)."""

    def __init__(self, runtime: ClientRuntime) -> None:
        self.runtime = runtime

    def run(self, mask: MaskBroadcast, broadcast: Broadcast,
            client_ids: Sequence[int]) -> list[Reply]:
        return _by_client(serve_clients(self.runtime, mask, broadcast, client_ids))


class RayWorkerPool:
    """Virtual clients multiplexed onto long-lived worker actors.

    The round's broadcast is put in the object store once and every worker reads it from
    there; the mask is sent only to workers that do not hold its version yet. Each worker
    gets one contiguous chunk of the sorted client ids per round: one remote call per worker.
    """

    def __init__(self, workers: Sequence) -> None:
        self.workers = list(workers)
        self._worker_mask_version = [-1] * len(self.workers)

    def run(self, mask: MaskBroadcast, broadcast: Broadcast,
            client_ids: Sequence[int]) -> list[Reply]:
        import ray

        ids = sorted(client_ids)
        chunks = [list(map(int, c)) for c in np.array_split(np.asarray(ids, dtype=np.int64),
                                                            len(self.workers))]
        broadcast_ref = ray.put(broadcast)
        calls = []
        for i, (worker, chunk) in enumerate(zip(self.workers, chunks)):
            if not chunk:
                continue
            stale = self._worker_mask_version[i] != mask.version
            calls.append(worker.run.remote(mask if stale else None, broadcast_ref, chunk))
            self._worker_mask_version[i] = mask.version
        replies: list[Reply] = []
        for batch in ray.get(calls):
            replies.extend(batch)
        return _by_client(replies)
