"""``zo.batching: batched``: the K + 1 (central: 2K) perturbed models stacked into one pass
give the loop's losses to float32 rounding, on every shipped model and normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fpzo_ray.config import config_from_dict
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.zo import CENTRAL, FORWARD, fill_gaussian, perturbation_seeds
from fpzo_ray.zo.estimator import EstimatorSpec, estimate_from_differences, loss_differences
from fpzo_ray.zo.execution.stacked import Stacked, forward, stacked_differences, stacked_losses

MODELS = [
    ("digits_cnn", "digits", (1, 8, 8), "group"),
    ("lenet5", "mnist", (1, 28, 28), "group"),
    ("lenet5", "mnist", (1, 28, 28), "none"),
    ("resnet20", "cifar10", (3, 32, 32), "group"),
    ("resnet20", "cifar10", (3, 32, 32), "batch"),
    ("resnet20", "cifar10", (3, 32, 32), "none"),
]


def _model(name, data, shape, norm):
    cfg = config_from_dict({"model": {"name": name, "norm": norm}, "data": {"name": data}})
    model = build_model(cfg, shape, 10, init_seed=0)
    flat, layout = bind_flat_buffer(model)
    return model, flat, layout


@pytest.mark.parametrize("name, data, shape, norm", MODELS)
@pytest.mark.parametrize("estimator", [FORWARD, CENTRAL], ids=["forward", "central"])
def test_stacked_passes_give_the_loops_differences(name, data, shape, norm, estimator):
    model, flat, layout = _model(name, data, shape, norm)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, *shape, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    kept = torch.arange(0, layout.total, 3)  # a sparse model
    seeds = perturbation_seeds(0, 1, 2, 0, 5)
    spec = EstimatorSpec(estimator, fill_gaussian, 1e-3)
    before = flat.clone()
    loop = loss_differences(lambda: float(F.cross_entropy(model(x), y)), flat, kept, seeds, spec)
    for chunk in (0, 2):  # all models in one pass, and chunks of two (one straddles)
        stacked = stacked_differences(model, layout, flat, kept, x, y, seeds, spec, chunk, True)
        # losses near 2.3: float32 rounding is about 2.4e-7 a loss
        torch.testing.assert_close(
            stacked.loss_differences, loop.loss_differences, rtol=0, atol=2e-6
        )
        assert stacked.base_loss == pytest.approx(loop.base_loss, abs=1e-6)
        # the client's own estimate is the server's rebuild from its differences, bit for bit
        assert torch.equal(
            stacked.estimate,
            estimate_from_differences(stacked.loss_differences, seeds, spec, kept.numel()),
        )
        assert stacked.num_forward_passes == loop.num_forward_passes
    assert torch.equal(flat, before)  # the model is untouched


@pytest.mark.parametrize("name, data, shape, norm", MODELS[:2])
def test_a_dense_model_is_perturbed_as_a_mask_of_every_coordinate(name, data, shape, norm):
    """The dense rows are written directly, masked ones scattered: the same numbers."""
    model, flat, layout = _model(name, data, shape, norm)
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, *shape, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    seeds = perturbation_seeds(0, 1, 2, 0, 5)
    spec = EstimatorSpec(FORWARD, fill_gaussian, 1e-3)
    every = torch.arange(layout.total)
    dense = stacked_differences(model, layout, flat, None, x, y, seeds, spec, 0, True)
    masked = stacked_differences(model, layout, flat, every, x, y, seeds, spec, 0, True)
    assert torch.equal(dense.loss_differences, masked.loss_differences)
    assert torch.equal(dense.estimate, masked.estimate)
    loop = loss_differences(lambda: float(F.cross_entropy(model(x), y)), flat, None, seeds, spec)
    torch.testing.assert_close(dense.loss_differences, loop.loss_differences, rtol=0, atol=2e-6)


def test_activations_in_place_leave_the_input_alone():
    """Activations run in place on stacked outputs, never on the shared input batch."""
    model = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(4, 3), nn.Hardswish(), nn.Linear(3, 2))
    flat, layout = bind_flat_buffer(model)
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 1, 0, 1])
    before = x.clone()
    losses = stacked_losses(model, layout, flat.detach().expand(2, -1).clone(), x, y)
    assert torch.equal(x, before)
    with torch.no_grad():
        alone = F.cross_entropy(model(x), y)
    torch.testing.assert_close(losses, alone.expand(2), rtol=1e-6, atol=1e-7)


def test_every_copy_sees_only_its_own_weights():
    """Stacked copies of one model, one of them with a changed first filter: only that
    copy's output changes."""
    model, flat, layout = _model("lenet5", "mnist", (1, 28, 28), "group")
    x = torch.randn(4, 1, 28, 28)
    flats = flat.detach().expand(3, -1).clone()
    flats[1, :25] += 1.0  # the first filter of copy 1
    params = {
        s.name: flats[:, s.offset : s.offset + s.numel].view(3, *s.shape) for s in layout.slots
    }
    out = forward(model, Stacked(x, "shared", 3), params).value
    with torch.no_grad():
        alone = model(x)
    torch.testing.assert_close(out[0], alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[2], alone, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out[1], alone)


def test_an_unknown_module_is_named():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh())
    flat, layout = bind_flat_buffer(model)
    with pytest.raises(NotImplementedError, match="Tanh"):
        stacked_differences(
            model,
            layout,
            flat,
            None,
            torch.randn(2, 1, 5, 5),
            torch.tensor([0, 1]),
            [1, 2],
            EstimatorSpec(),
        )


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 4, 7, 9), (2, 5, 2, 4), (3, 6, 5, 4)])
def test_the_fast_two_by_two_pool_is_max_pool(shape):
    from fpzo_ray.zo.execution.stacked import _max_pool

    x = torch.randn(*shape)
    x[0, 0, 0, 0] = float("nan")
    pool = nn.MaxPool2d(2)
    torch.testing.assert_close(_max_pool(pool, x), pool(x), equal_nan=True, rtol=0, atol=0)


def test_the_memory_figure_is_the_devices_whatever_mode_ran(digits):
    """Stacked models hold more activations at once, but a device runs one at a time: the
    client's recorded peak (what the device budget is checked against) is the loop step's in
    every mode (``tests/test_device_memory.py`` checks every shipped model)."""
    peaks = {
        (batching, chunk): _client_replies(digits, {"batching": batching, "chunk_size": chunk})[
            1
        ].peak_memory_bytes
        for batching, chunk in (("loop", 0), ("batched", 0), ("batched", 3), ("vmap", 0))
    }
    assert len(set(peaks.values())) == 1, peaks


def _client_replies(digits, zo: dict, simulation: dict | None = None):
    from fpzo_ray.data import make_partition
    from fpzo_ray.pruning import Mask
    from fpzo_ray.sim.client import ClientRuntime, serve_clients
    from fpzo_ray.sim.messages import MaskBroadcast, TrainBroadcast

    cfg = config_from_dict(
        {
            "data": {"num_clients": 10},
            "zo": {"num_perturbations": 10, **zo},
            "training": {"batch_size": 32},
            "simulation": simulation or {},
        }
    )
    runtime = ClientRuntime(cfg, digits, make_partition(cfg.data, digits.train_labels, 0))
    mask = MaskBroadcast(1, Mask.dense(runtime.layout).prunable_kept)
    # client 0's step is the metered one (per batch size); client 1's runs as configured
    broadcast = TrainBroadcast(0, 1, runtime.initial_flat.clone())
    return serve_clients(runtime, mask, broadcast, [0, 1])


@pytest.mark.slow
def test_compiled_forward_passes_give_the_eager_differences(digits, tmp_path, monkeypatch):
    """``simulation.compile``: inductor's fused kernels sum in another order (float32
    rounding); the compiled model reads the flat buffer the perturbations write in place."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    in_temp = Path(default_cache_dir())  # where inductor keeps what it is not told to keep
    before = set(in_temp.rglob("*"))
    eager = _client_replies(digits, {"batching": "loop"})[1]
    for batching in ("loop", "batched"):
        compiled = _client_replies(digits, {"batching": batching}, {"compile": True})[1]
        torch.testing.assert_close(
            compiled.upload.step_differences[0],
            eager.upload.step_differences[0],
            rtol=0,
            atol=2e-6,
        )
    assert any((tmp_path / "inductor").iterdir())  # kernels cached for the next workers
    assert set(in_temp.rglob("*")) == before  # nothing left in the temp folder
