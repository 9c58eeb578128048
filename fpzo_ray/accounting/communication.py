"""Bytes on the wire per client and round, for each message the protocol sends.

Floats are 4 bytes (float32), seeds 8 bytes, sample counts 4 bytes; a mask costs
:func:`mask_position_bytes` (bitmap or index list, whichever is smaller, nothing when dense).
Clients are stateless, as in cross-device FL: every participant is sent the mask and the
current weights each time it takes part. Initial weights never travel: clients regenerate
them from the run's model seed (counted in the 8-byte seed).
"""

from __future__ import annotations

FLOAT_BYTES = 4
SEED_BYTES = 8
COUNT_BYTES = 4
INDEX_BYTES = 4


def mask_position_bytes(num_kept: int, num_prunable: int) -> int:
    """Bytes that say which of ``num_prunable`` coordinates survive: a bitmap (ceil(P / 8)
    bytes) or a list of 4-byte indices of the kept ones, or of the pruned ones when fewer,
    whichever is smaller; nothing when every coordinate is kept. Both the mask on the wire
    and a model stored sparsely pay this."""
    if not 0 <= num_kept <= num_prunable:
        raise ValueError(f"need 0 <= num_kept ({num_kept}) <= num_prunable ({num_prunable})")
    if num_kept == num_prunable:
        return 0
    bitmap = (num_prunable + 7) // 8
    return min(bitmap, INDEX_BYTES * min(num_kept, num_prunable - num_kept))


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


def statistics_bytes(num_statistics: int) -> int:
    """Client -> server under ``model.buffers: aggregate``: the running statistics the client
    measured (float32 means and variances; none for a model without any)."""
    return FLOAT_BYTES * num_statistics


def evaluation_download_bytes(num_trained: int, mask_bytes: int, num_statistics: int) -> int:
    """Server -> client for a federated evaluation: the weights to score, the mask, the
    global running statistics when the policy sends them."""
    return FLOAT_BYTES * (num_trained + num_statistics) + mask_bytes


def evaluation_upload_bytes(num_scores: int) -> int:
    """Client -> server for a federated evaluation: its loss and metrics, its sample count."""
    return FLOAT_BYTES * num_scores + COUNT_BYTES


def pruning_upload_bytes(num_kept_prunable: int) -> int:
    """Client -> server: one saliency per kept prunable weight."""
    return FLOAT_BYTES * num_kept_prunable
