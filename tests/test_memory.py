"""The memory meter against hand counts, and measured LeNet-5 steps against the estimate.

How to measure a client's local step (what the LeNet-5 tests below do):

* seed the meter with what exists before the step: ``meter.track(flat, "parameters")`` for the
  flat buffer of ``bind_flat_buffer``, ``meter.track(images, "inputs")`` and the labels, masks
  or ``kept_index`` as ``"masks"``, optimizer state as ``"optimizer_state"``;
* ZO step: run ``forward_difference`` under ``meter.phase("zo_buffers")`` and have the loss
  function enter ``meter.phase("activations")``, so the base copy and direction buffers
  are tagged ``zo_buffers`` and the forward passes ``activations``;
* BP step: forward (default category ``activations``), ``loss.backward()`` under
  ``phase("gradients")``, ``optimizer.step()`` under ``phase("optimizer_state")``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fpzo_ray.accounting.memory import (
    MemoryMeter,
    analytical_peak_bytes,
    sparse_peak_bytes,
    sparse_storage_bytes,
)
from fpzo_ray.config import config_from_dict
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.zo import forward_difference, perturbation_seeds

BATCH = 64
LENET_PARAMS = 61_706
LENET_INPUT_BYTES = BATCH * 28 * 28 * 4 + BATCH * 8  # float32 images + int64 labels


def _lenet() -> nn.Module:
    return build_model(config_from_dict({"data": {"name": "mnist"}}), (1, 28, 28), 10, init_seed=0)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(BATCH, 1, 28, 28, generator=gen), torch.randint(
        0, 10, (BATCH,), generator=gen
    )


def _seeded_meter(flat: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> MemoryMeter:
    meter = MemoryMeter()
    meter.track(flat, "parameters")
    meter.track(images, "inputs")
    meter.track(labels, "inputs")
    return meter


def _zo_step(
    model: nn.Module, kept_index: torch.Tensor | None = None
) -> tuple[MemoryMeter, dict[str, int]]:
    """A metered ZO step; also the live breakdown right after it (model and batch alive)."""
    flat, _ = bind_flat_buffer(model)
    images, labels = _batch()
    meter = _seeded_meter(flat, images, labels)
    if kept_index is not None:
        meter.track(kept_index, "masks")

    def loss_fn() -> torch.Tensor:
        with meter.phase("activations"):
            return F.cross_entropy(model(images), labels)

    with meter, meter.phase("zo_buffers"):
        forward_difference(loss_fn, flat, kept_index, perturbation_seeds(0, 0, 0, 0, 3), sigma=1e-3)
    return meter, meter.live_breakdown


@pytest.fixture(scope="module")
def zo_step() -> tuple[MemoryMeter, dict[str, int]]:
    return _zo_step(_lenet())


@pytest.fixture(scope="module")
def bp_step() -> tuple[MemoryMeter, dict[str, int]]:
    """A metered BP step (SGD); also the live breakdown right after it."""
    model = _lenet()
    flat, _ = bind_flat_buffer(model)
    images, labels = _batch()
    meter = _seeded_meter(flat, images, labels)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with meter:
        loss = F.cross_entropy(model(images), labels)
        with meter.phase("gradients"):
            loss.backward()
        with meter.phase("optimizer_state"):
            optimizer.step()
    return meter, meter.live_breakdown


# -- hand counts ------------------------------------------------------------------------------


def test_allocation_free_views_and_in_place_by_hand():
    meter = MemoryMeter()
    with meter:
        x = torch.empty(1000)  # float32
        assert meter.live_bytes == 4000
        view, reshaped, detached = x[10:], x.view(10, 100), x.detach()
        x.add_(1)
        torch.mul(x, 2, out=x)
        assert meter.live_bytes == 4000  # views and in-place writes allocate nothing
        del x
        assert meter.live_bytes == 4000  # the views keep the storage alive
        del view, reshaped, detached
        assert meter.live_bytes == 0
        with meter.phase("gradients"):
            g = torch.zeros(100)
        assert meter.live_breakdown["gradients"] == 400
    assert meter.peak_bytes == 4000
    assert meter.peak_breakdown == {
        **dict.fromkeys(meter.peak_breakdown, 0),
        "activations": 4000,
    }  # as at the peak, not now
    del g
    assert meter.live_bytes == 0


def test_seeded_tensors_sharing_storage_are_counted_once():
    meter = MemoryMeter()
    a = torch.zeros(1000)
    assert meter.track(a, "parameters")
    assert not meter.track(a.view(10, 100), "parameters")
    assert not meter.track(a[500:], "masks")
    assert meter.live_breakdown["parameters"] == 4000 and meter.live_bytes == 4000
    untracked = torch.empty(1000)  # allocated before the meter: never charged to it
    with meter:
        torch.add(a, a, out=untracked)
        assert meter.live_bytes == 4000
        grown = torch.empty(0)  # 0 B, then resized by out=: re-measured
        torch.add(a, a, out=grown)
        assert meter.live_bytes == 8000
    assert meter.peak_bytes == 8000
    with pytest.raises(ValueError, match="unknown memory category"):
        meter.track(a, "weights")


def test_linear_forward_allocates_exactly_its_output():
    """nn.Linear(100, 50), batch 8, no_grad: one ``addmm`` output of 8 * 50 float32.

    ``w.t()`` is a view of the weight's storage; nothing else is allocated. Exact.
    """
    layer = nn.Linear(100, 50)
    x = torch.randn(8, 100)
    meter = MemoryMeter()
    meter.track(layer.weight, "parameters")
    meter.track(layer.bias, "parameters")
    meter.track(x, "inputs")
    with meter, torch.no_grad():
        y = layer(x)
    assert meter.peak_breakdown["activations"] == 8 * 50 * 4
    assert meter.peak_breakdown["parameters"] == (100 * 50 + 50) * 4
    assert meter.peak_bytes == (100 * 50 + 50) * 4 + 8 * 100 * 4 + 8 * 50 * 4
    del y
    assert meter.live_breakdown["activations"] == 0


# -- LeNet-5 ----------------------------------------------------------------------------------


def test_lenet5_analytical_figures_by_hand():
    model = _lenet()
    zo = analytical_peak_bytes(model, (1, 28, 28), BATCH, "zo")
    # conv1's output and its GroupNorm's output, 6 x 28 x 28 float32 each, per sample
    assert zo["activations"] == BATCH * 2 * 6 * 28 * 28 * 4 == 2_408_448
    assert zo["zo_buffers"] == 2 * LENET_PARAMS * 4
    assert zo["total"] == LENET_PARAMS * 4 * 3 + LENET_INPUT_BYTES + 2_408_448  # params + 2 buffers
    bp = analytical_peak_bytes(model, (1, 28, 28), BATCH, "bp")
    floats = (3 * 4704 + 1176) + (3 * 1600 + 400) + 2 * 120 + 2 * 84 + 10  # leaf outputs
    indices = 8 * (1176 + 400)  # int64 argmax of both max-pools
    assert bp["activations"] == BATCH * (4 * floats + indices) == 6_158_848
    assert bp["gradients"] == LENET_PARAMS * 4 and bp["optimizer_state"] == 0
    adam = analytical_peak_bytes(model, (1, 28, 28), BATCH, "bp", optimizer="adam")
    assert adam["optimizer_state"] == 2 * LENET_PARAMS * 4


def test_lenet5_zo_step_measured_by_hand(zo_step):
    zo_meter, after = zo_step
    peak = zo_meter.peak_breakdown
    assert peak["parameters"] == LENET_PARAMS * 4
    assert peak["inputs"] == LENET_INPUT_BYTES
    # base copy and direction, plus the K = 3 float32 loss differences
    assert peak["zo_buffers"] == 2 * LENET_PARAMS * 4 + 3 * 4
    # conv1 and GroupNorm outputs, plus GroupNorm's mean and rstd (64 samples x 2 groups each)
    assert peak["activations"] == 2 * BATCH * 6 * 28 * 28 * 4 + 2 * BATCH * 2 * 4
    assert peak["gradients"] == 0 and peak["optimizer_state"] == 0
    assert sum(after.values()) == LENET_PARAMS * 4 + LENET_INPUT_BYTES  # nothing leaked


def test_lenet5_measured_peaks_agree_with_the_estimate(zo_step, bp_step):
    (zo_meter, _), (bp_meter, bp_after) = zo_step, bp_step
    model = _lenet()
    zo = analytical_peak_bytes(model, (1, 28, 28), BATCH, "zo")["total"]
    bp = analytical_peak_bytes(model, (1, 28, 28), BATCH, "bp")["total"]
    assert abs(zo_meter.peak_bytes / zo - 1) < 0.15
    assert abs(bp_meter.peak_bytes / bp - 1) < 0.15
    assert bp_meter.peak_bytes > zo_meter.peak_bytes
    assert bp_meter.peak_breakdown["gradients"] > 0
    assert zo_meter.peak_breakdown["gradients"] == 0
    assert bp_meter.peak_breakdown["zo_buffers"] == 0
    # after the step: parameter gradients remain, plain SGD keeps no state
    assert bp_after["gradients"] == LENET_PARAMS * 4
    assert bp_after["optimizer_state"] == 0
    assert bp_after["activations"] == 4  # only the scalar loss is still referenced


def test_sparse_zo_step_buffers_scale_with_kept_coordinates():
    model = _lenet()
    kept_index = torch.arange(0, LENET_PARAMS, 10)  # 6171 trained coordinates
    meter, _ = _zo_step(model, kept_index)
    num_kept = kept_index.numel()
    assert meter.peak_breakdown["masks"] == num_kept * 8  # the int64 index itself
    assert meter.peak_breakdown["zo_buffers"] == 2 * num_kept * 4 + 3 * 4
    sparse = sparse_storage_bytes(num_kept, LENET_PARAMS, 0)
    assert (
        sparse_peak_bytes(meter.peak_breakdown, sparse)
        == meter.peak_bytes - LENET_PARAMS * 4 - num_kept * 8 + sparse
    )


# -- sparse storage ---------------------------------------------------------------------------


def test_sparse_storage_by_hand():
    # 10% of 1000 prunable kept: 400 B values + bitmap 125 B (< 400 B of indices) + 40 B dense
    assert sparse_storage_bytes(100, 1000, 10) == 400 + 125 + 40
    # 1% kept: the int32 index list (40 B) beats the bitmap (125 B)
    assert sparse_storage_bytes(10, 1000, 10) == 40 + 40 + 40
    assert sparse_storage_bytes(0, 1001, 0) == 0  # nothing kept: no positions either
    assert sparse_storage_bytes(1001, 1001, 0) == 4004  # nothing pruned: no positions
    assert sparse_storage_bytes(990, 1001, 0) == 3960 + 44  # 11 pruned: their indices
    assert sparse_storage_bytes(900, 1001, 0) == 3600 + 126  # ceil(1001 / 8) < 4 * 101
    with pytest.raises(ValueError):
        sparse_storage_bytes(11, 10, 0)
    breakdown = {"parameters": 4040, "masks": 800, "activations": 1000, "zo_buffers": 1200}
    assert sparse_peak_bytes(breakdown, 565) == 565 + 1000 + 1200
    with pytest.raises(ValueError):
        sparse_peak_bytes(breakdown, -1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_allocator_peak_covers_tracked_storages():
    layer = nn.Linear(100, 50).cuda()
    x = torch.randn(8, 100, device="cuda")
    meter = MemoryMeter(cuda_device="cuda")
    meter.track(layer.weight, "parameters")
    meter.track(layer.bias, "parameters")
    meter.track(x, "inputs")
    with meter, torch.no_grad():
        layer(x)
    assert meter.peak_breakdown["activations"] == 8 * 50 * 4
    assert meter.allocator_peak_bytes is not None
    assert meter.allocator_peak_bytes >= meter.peak_bytes
