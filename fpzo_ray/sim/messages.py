"""Typed records that travel between the server and the client workers.

A *broadcast* is what every participant of a round (or pruning iteration) receives; a *task*
names one virtual client; a *reply* is what that client uploads, plus the accounting figures
the simulator attaches (FLOPs, bytes) which a real client would not need to send.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MaskBroadcast:
    """The current mask, sent once per mask version; workers cache it."""

    version: int
    prunable_kept: torch.Tensor  # bool over the prunable coordinates


@dataclass(frozen=True)
class ZOBroadcast:
    round_index: int
    mask_version: int
    weights: torch.Tensor  # float32, the d trained coordinates


@dataclass(frozen=True)
class PruningBroadcast:
    iteration: int
    mask_version: int


@dataclass(frozen=True)
class ZOReply:
    client_id: int
    num_samples: int  # size of the client's partition: its aggregation weight
    batch_size: int
    base_loss: float
    loss_differences: torch.Tensor  # float32, (K,)
    forward_flops: int
    upload_bytes: int
    download_bytes: int


@dataclass(frozen=True)
class PruningReply:
    client_id: int
    kept_scores: torch.Tensor  # signed mask gradient at the kept prunable coordinates
    flops: int
    upload_bytes: int
    download_bytes: int


@dataclass(frozen=True)
class ClientFailure:
    """A client that raised: the run goes on without it, and the error is recorded."""

    client_id: int
    error: str
