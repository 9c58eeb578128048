"""A client's recorded peak memory is the device's step's, whatever mode the simulator runs.

The device runs a ZO step one perturbed model at a time (``zo.batching: loop``, eager); the
simulator may stack the K + 1 models (``batched``, ``vmap``) or choose for itself (``auto``).
The recorded figure, and the budget gate, must not follow the simulator: for every shipped
model, dense and masked, the cached figure of a run in another mode equals the metered step
of a ``loop`` run, exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fpzo_ray.config import config_from_dict
from fpzo_ray.data import from_arrays, make_partition
from fpzo_ray.pruning import Mask
from fpzo_ray.sim.client import ClientRuntime, serve_clients
from fpzo_ray.sim.messages import MaskBroadcast, TrainBroadcast, TrainReply
from fpzo_ray.sweep.spec import load_sweep

ROOT = Path(__file__).resolve().parents[1]

#: model -> (its data set's name, channels, side): random images, small where the model allows.
SHIPPED = {
    "digits_cnn": ("digits", 1, 8),
    "lenet5": ("mnist", 1, 28),
    "resnet20": ("cifar10", 3, 16),
    "resnet18": ("cifar10", 3, 16),
}


def _images(name: str, channels: int, side: int, samples: int = 60):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (samples, channels, side, side), dtype=np.uint8)
    y = rng.integers(0, 10, samples)
    cut = samples * 2 // 3
    return from_arrays(train=(x[:cut], y[:cut]), test=(x[cut:], y[cut:]), num_classes=10, name=name)


def _replies(model: str, dataset, batching: str, density: float, extra: dict | None = None):
    sections = {
        "model": {"name": model},
        "data": {"name": dataset.name, "num_clients": 10},
        "zo": {"num_perturbations": 3, "batching": batching},
        "training": {"batch_size": 4, "clients_per_round": 3},
    }
    for section, values in (extra or {}).items():
        sections[section] = {**sections[section], **values}
    cfg = config_from_dict(sections)
    runtime = ClientRuntime(cfg, dataset, make_partition(cfg.data, dataset.train_labels, 0))
    kept = Mask.dense(runtime.layout).prunable_kept.clone()
    if density < 1:
        kept = torch.rand(kept.numel(), generator=torch.Generator().manual_seed(1)) < density
    broadcast = TrainBroadcast(0, 1, runtime.initial_flat[kept_index(runtime, kept)])
    replies = serve_clients(runtime, MaskBroadcast(1, kept), broadcast, [0, 1, 2])
    assert all(isinstance(r, TrainReply) for r in replies), replies
    return runtime, replies


def kept_index(runtime: ClientRuntime, prunable_kept: torch.Tensor) -> torch.Tensor:
    return Mask(runtime.layout, prunable_kept).kept_index()


@pytest.mark.parametrize("density", [1.0, 0.1], ids=["dense", "masked"])
@pytest.mark.parametrize("model", list(SHIPPED))
def test_the_cached_figure_is_the_metered_loop_step(model, density):
    dataset = _images(*SHIPPED[model])
    _, loop = _replies(model, dataset, "loop", density)
    expected = (loop[0].peak_memory_bytes, loop[0].sparse_memory_bytes)
    assert expected[0] > 0
    for batching in ("batched", "auto") + (("vmap",) if model == "digits_cnn" else ()):
        runtime, replies = _replies(model, dataset, batching, density)
        for reply in replies:
            assert (reply.peak_memory_bytes, reply.sparse_memory_bytes) == expected, batching
        assert runtime.peak_memory == {4: expected}


def test_every_algorithm_and_estimator_is_metered_as_the_device_runs_it():
    dataset = _images("digits", 1, 8)
    for extra in (
        {"training": {"algorithm": "zo", "mode": "fedavg", "local_steps": 2}},
        {"training": {"algorithm": "bp", "mode": "fedavg"}},
    ):
        _, loop = _replies("digits_cnn", dataset, "loop", 1.0, extra)
        _, batched = _replies("digits_cnn", dataset, "batched", 1.0, extra)
        assert [r.peak_memory_bytes for r in batched] == [loop[0].peak_memory_bytes] * 3
    central = {"zo": {"num_perturbations": 3, "estimator": "central"}}
    _, loop = _replies("digits_cnn", dataset, "loop", 1.0, central)
    _, batched = _replies("digits_cnn", dataset, "batched", 1.0, central)
    assert batched[0].peak_memory_bytes == loop[0].peak_memory_bytes


def test_auto_stacks_the_small_models_and_loops_the_resnets():
    chosen = {}
    for model, shape in SHIPPED.items():
        runtime = _replies(model, _images(*shape), "auto", 1.0)[0]
        chosen[model] = runtime.workspace.batching(runtime.algorithm.spec)
    assert chosen == {
        "digits_cnn": "batched",
        "lenet5": "batched",
        "resnet20": "loop",
        "resnet18": "loop",
    }


SWEEP_FILES = sorted([*(ROOT / "sweeps").glob("*.yaml"), *(ROOT / "examples").glob("*/sweep.yaml")])


def _memory_cases(path: Path) -> dict[tuple, dict]:
    """The distinct client steps of a sweep file: its cells' run configurations, one per
    combination of what a step's memory depends on."""
    spec = load_sweep(path)
    cases: dict[tuple, dict] = {}
    for cell in spec.cells():
        tree = spec.run_config(cell, {})
        cfg = config_from_dict(tree)
        key = (
            cfg.model_name,
            cfg.data_name,
            cfg.training.algorithm,
            cfg.training.mode,
            cfg.training.batch_size,
            cfg.zo.num_perturbations,
            cfg.zo.estimator,
            cfg.zo.perturbation_scope,
            cfg.zo.microbatch_size,
            cfg.pruning.sparsity if cfg.pruning_method != "dense" else 0.0,
        )
        cases.setdefault(key, tree)
    return cases


def _dataset_for(cfg):
    """The data set itself where it is bundled or a researcher's file, else random images of
    its shape (the figures depend on shapes only)."""
    if cfg.data.target or cfg.data_name == "digits":
        from fpzo_ray.data import load_dataset

        return load_dataset(cfg.data)
    channels, side = {"mnist": (1, 28), "cifar10": (3, 32)}[cfg.data_name]
    return _images(cfg.data_name, channels, side, samples=1500)


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_memory_figures_of_every_shipped_configuration_do_not_depend_on_the_mode(
    path, monkeypatch
):
    """What a shipped sweep records as client memory is the same under the default (``auto``)
    and under ``loop``, the mode every figure was recorded in before ``auto`` existed."""
    monkeypatch.syspath_prepend(str(path.parent))
    for tree in _memory_cases(path).values():
        cfg = config_from_dict(tree)
        dataset = _dataset_for(cfg)
        figures = {}
        for batching in ("loop", "auto"):
            run = config_from_dict({**tree, "zo": {**tree.get("zo", {}), "batching": batching}})
            runtime = ClientRuntime(run, dataset, make_partition(run.data, dataset.train_labels, 0))
            kept = Mask.dense(runtime.layout).prunable_kept
            if run.pruning_method != "dense":  # a mask of the configured sparsity
                scores = torch.rand(kept.numel(), generator=torch.Generator().manual_seed(2))
                keep = round((1 - run.pruning.sparsity) * kept.numel())
                kept = torch.zeros_like(kept)
                kept[scores.argsort(descending=True)[:keep]] = True
            payload = runtime.algorithm.configure_round(0, [0]).payload
            weights = runtime.initial_flat[kept_index(runtime, kept)]
            broadcast = TrainBroadcast(0, 1, weights, payload)
            (reply,) = serve_clients(runtime, MaskBroadcast(1, kept), broadcast, [0])
            assert isinstance(reply, TrainReply), reply
            figures[batching] = (reply.peak_memory_bytes, reply.sparse_memory_bytes)
        assert figures["auto"] == figures["loop"], (path.name, cfg.model_name)
