"""Typed records that travel between the server and the client workers.

A *broadcast* is what every participant of a round (or pruning iteration) receives; a *task*
is a client id; a *reply* is what that client uploads, plus the accounting figures the
simulator attaches (FLOPs, bytes, peak memory) which a real client would not send.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from fpzo_ray.algorithms.base import Upload
from fpzo_ray.wire import WireRecord


@dataclass(frozen=True)
class MaskBroadcast(WireRecord):
    """The current mask, sent once per mask version; workers cache it."""

    version: int
    prunable_kept: torch.Tensor  # bool over the prunable coordinates


@dataclass(frozen=True)
class TrainBroadcast(WireRecord):
    """A training round's broadcast: the global weights (workers derive everything else,
    seeds and device budgets included, from the configuration they hold)."""

    round_index: int
    mask_version: int
    weights: torch.Tensor  # float32, the d trained coordinates (read-only on arrival)
    payload: Any = None  # what the algorithm sends besides (``RoundPlan.payload``)

    BORROWED: ClassVar[tuple[str, ...]] = ("weights",)


@dataclass(frozen=True)
class PruningBroadcast:
    """A pruning iteration's broadcast (the mask travels as a :class:`MaskBroadcast`)."""

    iteration: int
    mask_version: int
    method: str  # which client-side saliency to compute


@dataclass(frozen=True)
class EvalBroadcast(WireRecord):
    """A federated evaluation's broadcast (``task.federated_eval_clients``): the global
    weights to score and, under ``model.buffers`` aggregate or recalibrate, the global
    running statistics."""

    round_index: int
    mask_version: int
    weights: torch.Tensor  # float32, the d trained coordinates (read-only on arrival)
    statistics: torch.Tensor | None = None

    BORROWED: ClassVar[tuple[str, ...]] = ("weights",)


@dataclass(frozen=True)
class TrainReply(WireRecord):
    """A client's round: its upload and the figures the simulator attaches."""

    client_id: int
    num_samples: int  # size of the client's partition: its aggregation weight
    batch_size: int
    base_loss: float
    upload: Upload  # ZO scalars (one (K,) tensor per local step) or a masked dense update
    # The client's estimate (FedSGD) or update (FedAvg) as computed where it ran, when
    # ``simulation.estimate_on`` is workers: what the server would rebuild from the upload,
    # bit for bit. Simulation shortcut only: not counted as bytes on the wire.
    contribution: torch.Tensor | None
    forward_flops: int  # forward passes only (stage-weighted for the layer-wise variant)
    flops: int  # everything: forward, backward, vector work, client updates
    upload_bytes: int
    download_bytes: int
    peak_memory_bytes: int | None = None  # measured: the simulator's dense buffers
    sparse_memory_bytes: int | None = None  # the same peak with the model stored sparsely
    # The running statistics (BatchNorm's) of the broadcast model on the client's batch,
    # uploaded under ``model.buffers: aggregate`` (counted in ``upload_bytes``).
    statistics: torch.Tensor | None = None

    def is_finite(self) -> bool:
        """False when the loss, the upload or the statistics hold a NaN or an infinity
        (never aggregated)."""
        tensors = self.upload.tensors()
        if self.statistics is not None:
            tensors = [*tensors, self.statistics]
        return math.isfinite(self.base_loss) and all(bool(torch.isfinite(t).all()) for t in tensors)


@dataclass(frozen=True)
class EvalReply(WireRecord):
    """A client's score of the global model on its held-out data: ``loss`` (the mean
    per-sample loss) and the task's metrics, each over its ``num_samples`` held-out samples."""

    client_id: int
    num_samples: int
    scores: dict[str, float]
    flops: int
    upload_bytes: int
    download_bytes: int


@dataclass(frozen=True)
class PruningReply(WireRecord):
    """A client's saliency contribution in a pruning iteration."""

    client_id: int
    kept_scores: torch.Tensor  # additive saliency contribution at the kept prunable weights
    flops: int
    upload_bytes: int
    download_bytes: int


@dataclass(frozen=True)
class ClientFailure:
    """A client that did not deliver: the run goes on without it, and why is recorded.

    ``kind``: ``error`` (it raised), ``oom`` (its training peak exceeds its device's memory
    budget, like a real device running out of memory), ``worker_lost`` (its worker died and
    the pool's policy is to drop).
    """

    client_id: int
    error: str
    kind: str = "error"
    peak_memory_bytes: int | None = None
    budget_bytes: float | None = None
    download_bytes: int = 0
