"""Bytes on the wire per client and round, for each message the protocol sends.

Floats are 4 bytes (float32), seeds 8 bytes, sample counts 4 bytes; a mask costs
``Mask.wire_bytes()`` (bitmap or index list, whichever is smaller, nothing when dense).
Clients are stateless, as in cross-device FL: every participant is sent the mask and the
current weights each time it takes part.
"""

from __future__ import annotations

FLOAT_BYTES = 4
SEED_BYTES = 8
COUNT_BYTES = 4


def zo_download_bytes(num_trained: int, mask_bytes: int) -> int:
    """Server -> client in a FedSGD ZO round: kept weights, the mask, the round's seed."""
    return FLOAT_BYTES * num_trained + mask_bytes + SEED_BYTES


def zo_upload_bytes(num_perturbations: int) -> int:
    """Client -> server: K loss differences, the seed id and the sample count."""
    return FLOAT_BYTES * num_perturbations + SEED_BYTES + COUNT_BYTES


def pruning_download_bytes(mask_bytes: int) -> int:
    """Server -> client in a data-free pruning iteration: the current mask and a seed."""
    return mask_bytes + SEED_BYTES


def pruning_upload_bytes(num_kept_prunable: int) -> int:
    """Client -> server: one saliency per kept prunable weight."""
    return FLOAT_BYTES * num_kept_prunable
