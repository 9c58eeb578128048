"""Federated evaluation: the global model scored by clients on their own held-out data.

The server's evaluation (``sim.evaluation``) scores the global model on a central test set;
in federated learning that set seldom exists, and a single figure hides how well the model
serves each client. With ``task.federated_eval_clients`` set, at every evaluation that many
sampled clients score the broadcast weights on the part of their partition they never train
on (``task.client_holdout``) and send back their loss and metrics. This module turns their
replies into the round's figures:

- ``federated_loss`` and ``federated_<metric>``: the sample-weighted mean over the clients
  that answered (for accuracy, the accuracy of their pooled held-out samples);
- ``federated_<metric>_p10``: the 10th percentile over those clients, one value each: how
  the worst-served clients fare;
- ``federated_eval_clients``: how many answered; ``federated_eval_failures``: how many did
  not (their error is in the client records);
- ``round_eval_*`` and ``cumulative_eval_*``: what the evaluation cost the clients (FLOPs,
  bytes up and down), kept apart from training's counters.

Each client's scores are one record (status ``evaluated``) in the run's ``clients.csv``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fpzo_ray.sim.messages import ClientFailure, EvalReply
from fpzo_ray.sim.pool import Reply

#: The percentile over clients reported beside each metric's mean.
WORST_PERCENTILE = 10


def federated_figures(
    replies: list[Reply], round_number: int, device_of: Callable[[int], str | None]
) -> tuple[dict[str, float], dict[str, float], list[dict[str, Any]]]:
    """``(metrics, cost, records)`` of one federated evaluation: the round's figures (see the
    module docstring), its cost increments (``eval_client_flops``, ``eval_upload_bytes``,
    ``eval_download_bytes``) and one client record per reply."""
    records: list[dict[str, Any]] = []
    scored: list[EvalReply] = []
    cost = {"eval_client_flops": 0.0, "eval_upload_bytes": 0.0, "eval_download_bytes": 0.0}
    failures = 0
    for reply in replies:
        base = {
            "round": round_number,
            "client_id": reply.client_id,
            "device": device_of(reply.client_id),
        }
        if isinstance(reply, ClientFailure):
            failures += 1
            cost["eval_download_bytes"] += reply.download_bytes
            records.append({**base, "status": "eval_failed", "error": reply.error})
            continue
        assert isinstance(reply, EvalReply)
        cost["eval_client_flops"] += reply.flops
        cost["eval_upload_bytes"] += reply.upload_bytes
        cost["eval_download_bytes"] += reply.download_bytes
        records.append(
            {
                **base,
                "status": "evaluated",
                "eval_samples": reply.num_samples,
                **{f"eval_{key}": value for key, value in reply.scores.items()},
            }
        )
        if reply.num_samples > 0:
            scored.append(reply)
    metrics: dict[str, float] = {
        "federated_eval_clients": float(len(scored)),
        "federated_eval_failures": float(failures),
    }
    if scored:
        weights = np.array([r.num_samples for r in scored], dtype=np.float64)
        for key in scored[0].scores:
            values = np.array([r.scores[key] for r in scored], dtype=np.float64)
            metrics[f"federated_{key}"] = float(np.average(values, weights=weights))
            if key != "loss":
                metrics[f"federated_{key}_p{WORST_PERCENTILE}"] = float(
                    np.percentile(values, WORST_PERCENTILE)
                )
    metrics.update({f"round_{key}": value for key, value in cost.items()})
    return metrics, cost, records
