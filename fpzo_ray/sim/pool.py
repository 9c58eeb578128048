"""How a round's virtual clients are executed: the pool protocol and its round report.

Every pool answers with a :class:`RoundReport`: the replies sorted by client id (never in
arrival order, so aggregation, and hence the whole run, is bit-identical whatever the number
of workers), the engine faults it survived so far and where the round's time went. The pools:
``sim.in_process.InProcessPool`` and ``sim.ray.ray_pool.RayWorkerPool``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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

Reply = TrainReply | PruningReply | EvalReply | ClientFailure
Broadcast = TrainBroadcast | PruningBroadcast | EvalBroadcast


@dataclass(frozen=True)
class RoundTiming:
    """Where a round's wall time went, as seen from the pool (seconds)."""

    dispatch_s: float = 0.0  # putting the broadcast, submitting the calls
    gather_s: float = 0.0  # from submission to the last reply
    compute_max_s: float = 0.0  # the busiest worker's own compute time
    compute_mean_s: float = 0.0

    @property
    def waiting_s(self) -> float:
        """Time the less busy workers idled while the busiest one finished."""
        return self.compute_max_s - self.compute_mean_s

    @property
    def transfer_s(self) -> float:
        """Gather time not explained by compute: Ray scheduling, serialisation, transfer."""
        return max(0.0, self.gather_s - self.compute_max_s)


@dataclass(frozen=True)
class FailureCounts:
    """Engine faults a pool survived over the run so far."""

    worker_failures: int = 0
    retried_clients: int = 0


@dataclass(frozen=True)
class RoundReport:
    """What a pool returns for a round: the replies in client-id order, the faults survived
    so far, and the round's timing."""

    replies: list[Reply]
    timing: RoundTiming = field(default_factory=RoundTiming)
    failures: FailureCounts = field(default_factory=FailureCounts)


class ClientPool(Protocol):
    """Runs a round's clients somewhere: in this process, or on Ray worker actors.

    :meth:`submit` starts the clients' work and returns at once; :meth:`gather` waits for it.
    The server submits a round as soon as its broadcast is known and gathers it when it
    needs the replies, so what it does in between (the previous round's evaluation, the
    driver's reporting) overlaps the clients' work. ``run`` is the two in one.
    """

    def submit(self, mask: MaskBroadcast, broadcast: Broadcast, client_ids: Sequence[int]) -> Any:
        """Start ``client_ids`` under ``mask`` and ``broadcast``; a handle for :meth:`gather`."""
        ...

    def gather(self, submitted: Any) -> RoundReport:
        """The replies of a :meth:`submit` (each submission is gathered once)."""
        ...

    def run(
        self, mask: MaskBroadcast, broadcast: Broadcast, client_ids: Sequence[int]
    ) -> RoundReport:
        """Run ``client_ids`` under ``mask`` and ``broadcast``."""
        ...


def by_client(replies: list[Reply]) -> list[Reply]:
    return sorted(replies, key=lambda r: r.client_id)
