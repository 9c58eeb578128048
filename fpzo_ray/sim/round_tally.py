"""What became of each sampled client in a round: the records, counters and virtual clock.

Statuses: ``ok`` (aggregated), ``unavailable`` (its device did not answer), ``oom`` (its
training peak exceeds its device's budget), ``error`` (it raised), ``worker_lost`` (its
worker died and the policy drops), ``rejected_non_finite`` (NaN/Inf upload), ``straggler``
(its simulated time passed the round deadline).

The virtual clock: each delivering participant's simulated time is its download, compute and
upload on its device profile; the round lasts until the slowest aggregated participant, or,
with a deadline, until the deadline whenever an expected reply did not come (a straggler, an
out-of-memory device, a crash): the server cannot know before then.
"""

from __future__ import annotations

from typing import Any

from fpzo_ray.sim.devices import ClientDevices
from fpzo_ray.sim.messages import ClientFailure, TrainReply


class RoundTally:
    """What became of each sampled client of one round, its counters and its clock."""

    def __init__(self, round_number: int, devices: ClientDevices | None, deadline_s: float) -> None:
        self.round_number = round_number
        self.devices = devices
        self.deadline_s = deadline_s
        self.records: list[dict[str, Any]] = []
        self.counts = {"failed": 0, "oom": 0, "unavailable": 0, "stragglers": 0}
        self.sums = {"forward_flops": 0, "flops": 0, "upload": 0, "download": 0}
        self.losses: list[tuple[float, float]] = []  # (loss, weight) of aggregated clients
        self.delivered_s: list[float] = []
        self.peak_memory = 0
        self.sparse_memory = 0
        self.missing = False  # an expected reply never came

    def _record(self, client_id: int, status: str, **fields: Any) -> None:
        device = self.devices.profile(client_id).name if self.devices is not None else None
        self.records.append(
            {
                "round": self.round_number,
                "client_id": client_id,
                "device": device,
                "status": status,
                **fields,
            }
        )

    def unavailable(self, client_id: int) -> None:
        self.counts["unavailable"] += 1
        self._record(client_id, "unavailable")

    def accept(self, reply: TrainReply | ClientFailure, finite: bool) -> bool:
        """Record a reply; True when it is to be aggregated."""
        if isinstance(reply, ClientFailure):
            self.missing = True
            self.sums["download"] += reply.download_bytes
            self.counts["oom" if reply.kind == "oom" else "failed"] += 1
            self._record(
                reply.client_id,
                reply.kind,
                error=reply.error,
                peak_memory_bytes=reply.peak_memory_bytes,
                budget_bytes=reply.budget_bytes,
                download_bytes=reply.download_bytes,
            )
            return False
        seconds = None
        if self.devices is not None:
            seconds = self.devices.profile(reply.client_id).seconds(
                reply.flops, reply.upload_bytes, reply.download_bytes
            )
        self.sums["forward_flops"] += reply.forward_flops
        self.sums["flops"] += reply.flops
        self.sums["upload"] += reply.upload_bytes
        self.sums["download"] += reply.download_bytes
        self.peak_memory = max(self.peak_memory, reply.peak_memory_bytes or 0)
        self.sparse_memory = max(self.sparse_memory, reply.sparse_memory_bytes or 0)
        fields = dict(
            num_samples=reply.num_samples,
            batch_size=reply.batch_size,
            base_loss=reply.base_loss,
            forward_flops=reply.forward_flops,
            flops=reply.flops,
            upload_bytes=reply.upload_bytes,
            download_bytes=reply.download_bytes,
            peak_memory_bytes=reply.peak_memory_bytes,
            sparse_memory_bytes=reply.sparse_memory_bytes,
            simulated_s=seconds,
        )
        if not finite:
            self.counts["failed"] += 1
            self.missing = True
            self._record(reply.client_id, "rejected_non_finite", **fields)
            return False
        if seconds is not None and self.deadline_s > 0 and seconds > self.deadline_s:
            self.counts["stragglers"] += 1
            self.missing = True
            self._record(reply.client_id, "straggler", **fields)
            return False
        self._record(reply.client_id, "ok", **fields)
        self.losses.append((reply.base_loss, float(reply.num_samples)))
        if seconds is not None:
            self.delivered_s.append(seconds)
        return True

    def failures(self) -> str:
        """What kept sampled clients out of the aggregate, e.g. ``3 of 10 sampled clients not
        aggregated: 2 error (ValueError: boom), 1 unavailable``, with the first error of each
        kind; "" when every one was aggregated."""
        counts: dict[str, int] = {}
        first_error: dict[str, str] = {}
        for record in self.records:
            status = record["status"]
            if status == "ok":
                continue
            counts[status] = counts.get(status, 0) + 1
            if record.get("error"):
                first_error.setdefault(status, str(record["error"]).splitlines()[0][:160])
        if not counts:
            return ""
        parts = [
            f"{n} {status}" + (f" ({first_error[status]})" if status in first_error else "")
            for status, n in counts.items()
        ]
        return (
            f"{sum(counts.values())} of {len(self.records)} sampled clients not aggregated: "
            + ", ".join(parts)
        )

    def round_seconds(self) -> float | None:
        """Simulated duration of the round (None without device profiles)."""
        if self.devices is None:
            return None
        if self.deadline_s > 0 and self.missing:
            return self.deadline_s
        return max(self.delivered_s, default=0.0)

    def round_metrics(self) -> dict[str, Any]:
        weight = sum(w for _, w in self.losses)
        metrics: dict[str, Any] = {
            "train_loss": sum(loss * w for loss, w in self.losses) / weight
            if weight
            else float("nan"),
            "failed_clients": self.counts["failed"],
            "oom_clients": self.counts["oom"],
            "unavailable_clients": self.counts["unavailable"],
            "stragglers": self.counts["stragglers"],
            "round_client_forward_flops": self.sums["forward_flops"],
            "round_client_flops": self.sums["flops"],
            "round_upload_bytes": self.sums["upload"],
            "round_download_bytes": self.sums["download"],
            "max_client_peak_memory_bytes": self.peak_memory,
            "max_client_sparse_memory_bytes": self.sparse_memory,
        }
        seconds = self.round_seconds()
        if seconds is not None:
            metrics["simulated_round_s"] = seconds
        return metrics

    def totals(self) -> dict[str, float]:
        """This round's increments of the run's cumulative counters."""
        out: dict[str, float] = {
            "cumulative_client_forward_flops": self.sums["forward_flops"],
            "cumulative_client_flops": self.sums["flops"],
            "cumulative_upload_bytes": self.sums["upload"],
            "cumulative_download_bytes": self.sums["download"],
            "cumulative_failed_clients": self.counts["failed"],
            "cumulative_oom_clients": self.counts["oom"],
            "cumulative_unavailable_clients": self.counts["unavailable"],
            "cumulative_stragglers": self.counts["stragglers"],
        }
        seconds = self.round_seconds()
        if seconds is not None:
            out["simulated_time_s"] = seconds
        return out
