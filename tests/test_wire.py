"""Records crossing process boundaries pickle their tensors as NumPy arrays and come back the
same, bit for bit, as writable tensors."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from fpzo_ray.algorithms.base import Upload
from fpzo_ray.sim.messages import MaskBroadcast, TrainBroadcast, TrainReply


def _reply() -> TrainReply:
    gen = torch.Generator().manual_seed(0)
    return TrainReply(
        client_id=3,
        num_samples=17,
        batch_size=8,
        base_loss=2.25,
        upload=Upload(step_differences=(torch.randn(20, generator=gen), torch.randn(20))),
        contribution=torch.randn(1898, generator=gen),
        forward_flops=10,
        flops=12,
        upload_bytes=80,
        download_bytes=7592,
        peak_memory_bytes=1000,
    )


def test_a_reply_round_trips_bit_for_bit_as_writable_tensors():
    reply = _reply()
    for data in (pickle.dumps(reply), pickle.dumps(reply, protocol=5)):
        back = pickle.loads(data)
        assert back.client_id == 3 and back.base_loss == 2.25 and back.sparse_memory_bytes is None
        assert torch.equal(back.contribution, reply.contribution)
        assert all(
            torch.equal(a, b)
            for a, b in zip(back.upload.step_differences, reply.upload.step_differences)
        )
        back.contribution.add_(1.0)  # writable, and not the sender's memory
        assert not torch.equal(back.contribution, reply.contribution)


def _through_read_only_buffers(record):
    """Pickle out of band and load from read-only buffers, as Ray does from its store: the
    record, and the buffers it arrived in."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(record, protocol=5, buffer_callback=buffers.append)
    assert buffers  # the tensors went out of band
    views = [memoryview(b.raw()).toreadonly() for b in buffers]
    return pickle.loads(data, buffers=views), views


def test_tensors_arriving_read_only_are_copied_unless_only_read():
    reply, _ = _through_read_only_buffers(_reply())
    reply.contribution.mul_(2)  # owned, writable memory
    assert torch.equal(reply.contribution, 2 * _reply().contribution)
    # The broadcast weights are only read (each worker copies them into its flat buffer):
    # they stay a view of the arriving buffer, one copy fewer per worker and round.
    sent = TrainBroadcast(4, 1, torch.arange(6, dtype=torch.float32))
    back, views = _through_read_only_buffers(sent)
    assert torch.equal(back.weights, sent.weights)
    assert back.weights.data_ptr() == np.frombuffer(views[0], dtype=np.uint8).ctypes.data


def test_bool_masks_keep_their_dtype():
    mask = MaskBroadcast(2, torch.tensor([True, False, True]))
    back = pickle.loads(pickle.dumps(mask, protocol=5))
    assert back.prunable_kept.dtype == torch.bool
    assert torch.equal(back.prunable_kept, mask.prunable_kept)
