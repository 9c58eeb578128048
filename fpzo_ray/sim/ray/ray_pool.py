"""Virtual clients multiplexed onto long-lived Ray worker actors, surviving worker loss.

Each round the sorted client ids are cut into one contiguous chunk per live worker: one remote
call per worker. The round's broadcast is put in the object store once and every worker reads
it from there; the mask is sent only to workers that do not hold its version yet.

A worker whose share of a round takes longer than the pool's ``timeout_s``
(``simulation.round_timeout_s``) is killed and replaced, its clients reported as failed
(``timeout``): a client whose work hangs fails, the run goes on. A worker that dies mid-round
(``ray.kill``, SIGKILL, node loss) raises an actor error for its
chunk. Its clients are then either run again on another worker (``retry``: the results are
the same, every client's work being a function of its seeds) or reported as failed (``drop``);
a chunk that has killed ``MAX_RETRIES`` workers is dropped (a client whose work kills the
process must not take the pool down one worker after another). The dead worker is replaced by
a fresh actor, and the events are counted. Replies are returned in client-id order, never
arrival order.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError

from fpzo_ray.sim.messages import ClientFailure, EvalBroadcast, MaskBroadcast, TrainBroadcast
from fpzo_ray.sim.pool import Broadcast, FailureCounts, Reply, RoundReport, RoundTiming, by_client

log = logging.getLogger(__name__)

MAX_RETRIES = 2
#: Broadcasts whose weights are smaller than this travel inside each call (Ray inlines
#: arguments up to 100 KiB); larger ones are put in the object store once.
INLINE_BYTES = 64 * 1024


class RayWorkerPool:
    """A fixed pool of worker actors (see the module docstring); ``make_worker`` starts one,
    also to replace a dead one."""

    def __init__(
        self,
        make_worker: Callable[[], Any],
        size: int,
        on_worker_failure: str = "retry",
        timeout_s: float = math.inf,
    ) -> None:
        if on_worker_failure not in ("retry", "drop"):
            raise ValueError(f"simulation.on_worker_failure: unknown {on_worker_failure!r}")
        self.timeout_s = timeout_s
        self.make_worker = make_worker
        self.workers = [make_worker() for _ in range(size)]
        self.mask_version = [-1] * size
        self.on_worker_failure = on_worker_failure
        self.worker_failures = 0
        self.retried_clients = 0

    def _submit(self, index: int, mask: MaskBroadcast, broadcast_ref: Any, chunk: list[int]) -> Any:
        stale = self.mask_version[index] != mask.version
        self.mask_version[index] = mask.version
        return self.workers[index].run.remote(mask if stale else None, broadcast_ref, chunk)

    def _replace(self, index: int, why: str = "died") -> None:
        self.worker_failures += 1
        log.warning(
            "worker %d %s; starting a replacement (%d worker failures so far)",
            index,
            why,
            self.worker_failures,
        )
        with contextlib.suppress(Exception):  # it is already gone
            ray.kill(self.workers[index], no_restart=True)
        self.workers[index] = self.make_worker()
        self.mask_version[index] = -1

    def submit(
        self, mask: MaskBroadcast, broadcast: Broadcast, client_ids: Sequence[int]
    ) -> SubmittedRound:
        started = time.perf_counter()
        ids = np.asarray(sorted(client_ids), dtype=np.int64)
        chunks = [list(map(int, c)) for c in np.array_split(ids, len(self.workers))]
        # Ray copies a small argument into each call (cheaper than an object-store round
        # trip: 0.5 against 1.2 ms for two calls here) and puts a large one in the store once
        # per call: put it once for every worker.
        small = (
            isinstance(broadcast, TrainBroadcast | EvalBroadcast)
            and broadcast.weights.nbytes < INLINE_BYTES
        )
        broadcast_ref = broadcast if small else ray.put(broadcast)
        pending = {
            self._submit(i, mask, broadcast_ref, chunk): (i, chunk, 0)
            for i, chunk in enumerate(chunks)
            if chunk
        }
        return SubmittedRound(mask, broadcast_ref, pending, started, time.perf_counter())

    def gather(self, submitted: SubmittedRound) -> RoundReport:
        mask, broadcast_ref, pending = submitted.mask, submitted.broadcast_ref, submitted.pending
        waited = time.perf_counter()
        replies: list[Reply] = []
        compute: list[float] = []
        deadline = waited + self.timeout_s
        while pending:
            left = deadline - time.perf_counter()
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, left))
            if not ready:  # past the limit: the workers still busy are hung or far too slow
                for index, chunk, _ in pending.values():
                    self._replace(index, f"gave no reply within {self.timeout_s:g} s")
                    replies.extend(
                        ClientFailure(c, f"no reply within {self.timeout_s:g} s", kind="timeout")
                        for c in chunk
                    )
                pending.clear()
                break
            index, chunk, attempt = pending.pop(ready[0])
            try:
                batch, seconds = ray.get(ready[0])
            except RayActorError as error:
                self._replace(index)
                if self.on_worker_failure == "retry" and attempt < MAX_RETRIES:
                    self.retried_clients += len(chunk)
                    target = (index + 1) % len(self.workers)  # a live one, if there is another
                    log.info(
                        "rerunning clients %s of the dead worker on worker %d (attempt %d)",
                        chunk,
                        target,
                        attempt + 1,
                    )
                    pending[self._submit(target, mask, broadcast_ref, chunk)] = (
                        target,
                        chunk,
                        attempt + 1,
                    )
                else:
                    log.warning(
                        "dropping clients %s of the dead worker (%s)",
                        chunk,
                        "policy drop"
                        if self.on_worker_failure == "drop"
                        else f"{MAX_RETRIES} workers lost to them",
                    )
                    replies.extend(
                        ClientFailure(c, f"worker lost: {type(error).__name__}", kind="worker_lost")
                        for c in chunk
                    )
                continue
            replies.extend(batch)
            compute.append(seconds)
        done = time.perf_counter()
        timing = RoundTiming(
            submitted.submitted - submitted.started,
            # from the submission, or from when the server came to wait if it came later
            # (the work overlapped what the server did in between)
            done - max(submitted.submitted, waited),
            max(compute, default=0.0),
            float(np.mean(compute)) if compute else 0.0,
        )
        return RoundReport(
            by_client(replies), timing, FailureCounts(self.worker_failures, self.retried_clients)
        )

    def run(
        self, mask: MaskBroadcast, broadcast: Broadcast, client_ids: Sequence[int]
    ) -> RoundReport:
        return self.gather(self.submit(mask, broadcast, client_ids))


@dataclass
class SubmittedRound:
    """A round's calls in flight: what :meth:`RayWorkerPool.gather` waits for (and resubmits
    when a worker dies)."""

    mask: MaskBroadcast
    broadcast_ref: Any
    pending: dict[Any, tuple[int, list[int], int]]  # call -> (worker, chunk, attempt)
    started: float
    submitted: float
