"""Bytes on the wire per client and round, for each message the protocol sends.

Floats are 4 bytes (float32), seeds 8 bytes, sample counts 4 bytes; a mask costs
``Mask.wire_bytes()`` (bitmap or index list, whichever is smaller, nothing when dense).
Clients are stateless, as in cross-device FL: every participant is sent the mask and the
current weights each time it takes part. Initial weights never travel: clients regenerate
them from the run's model seed (counted in the 8-byte seed).
"""

from __future__ import annotations

FLOAT_BYTES = 4
SEED_BYTES = 8
COUNT_BYTES = 4


def train_download_bytes(num_trained: int, mask_bytes: int) -> int:
    """Server -> client in a training round: trained weights, the mask, the round's seed."""
    return FLOAT_BYTES * num_trained + mask_bytes + SEED_BYTES


def zo_scalar_upload_bytes(num_perturbations: int, local_steps: int = 1) -> int:
    """Client -> server, ZO: K loss differences per local step, the seed id, the sample count."""
    return FLOAT_BYTES * num_perturbations * local_steps + SEED_BYTES + COUNT_BYTES


def dense_update_upload_bytes(num_trained: int) -> int:
    """Client -> server: the masked update of the trained coordinates and the sample count."""
    return FLOAT_BYTES * num_trained + COUNT_BYTES


def pruning_download_bytes(mask_bytes: int) -> int:
    """Server -> client in a pruning iteration: the current mask and a seed."""
    return mask_bytes + SEED_BYTES


def pruning_upload_bytes(num_kept_prunable: int) -> int:
    """Client -> server: one saliency per kept prunable weight."""
    return FLOAT_BYTES * num_kept_prunable
