"""How a round's virtual clients are executed: the pool protocol, and the in-process pool.

Every pool returns replies sorted by client id, never in arrival order, so aggregation (and
hence the whole run) is bit-identical whatever the number of workers. The Ray pool is in
``sim.ray_pool``.
"""

from __future__ import annotations

from typing import Protocol, Sequence

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
