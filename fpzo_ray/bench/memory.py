"""memory: peak training memory of one local step, BP vs ZO vs ZO on a 90 %-sparse model.

Measured with ``accounting.memory.MemoryMeter`` (live tensor storages, CPU), for LeNet-5 on an
MNIST-shaped batch of 64 and ResNet-18 on a CIFAR-10-shaped batch of 32:

- ``bp_dense``: a plain PyTorch step (forward, backward, SGD without momentum: the smallest BP
  footprint, so the ratios below are conservative); ``bp_dense_microbatch8``: the same with
  the batch through forward and backward in chunks of 8, gradients accumulated
  (``training.bp_microbatch_size``): BP gets the micro-batching ZO gets;
- ``zo_dense``: one forward-difference step, K = 20, dense model; ``zo_dense_microbatch8``;
- ``zo_sparse90``: the same on a 90 %-sparse data-free NTK-SAP mask, measured with the
  simulator's dense parameter buffer, and ``zo_sparse90_stored``: the same peak with the
  parameters stored sparsely (kept values + the smaller of bitmap / index list), what a device
  would hold; ``zo_sparse90_layerwise``: the layer-wise variant; ``zo_sparse90_microbatch8``:
  each forward pass streamed through chunks of 8 samples (``zo.microbatch_size``), which a ZO
  step allows because it needs only the scalar loss.

Which comparison gives which factor (keys ``<model>_...``):

- ``bp_over_zo_dense``: BP vs ZO, both dense, same batch: what dropping backpropagation saves;
- ``bp_over_zo_sparse``: dense BP vs ZO on the 90 %-sparse model stored sparsely, same batch:
  pruning + ZO, the paper's comparison;
- ``bp_microbatch8_over_zo_sparse_microbatch8``: the same with both micro-batched (equal);
- ``bp_microbatch8_over_zo_dense_microbatch8``: dense BP vs dense ZO, both micro-batched;
- ``bp_over_zo_sparse_microbatch8``: full-batch BP vs micro-batched ZO: *unequal*, it credits
  ZO with a saving BP can have too; printed only to show how large that credit is.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F

from fpzo_ray.accounting.memory import (
    MemoryMeter,
    analytical_peak_bytes,
    sparse_peak_bytes,
    sparse_storage_bytes,
)
from fpzo_ray.bench.timing import table
from fpzo_ray.bp.client_update import microbatches
from fpzo_ray.config import config_from_dict
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.pruning import Mask, ntk_sap_mask_gradient, prune_iteratively
from fpzo_ray.pruning.methods import keep_scores
from fpzo_ray.zo import FORWARD, EstimatorSpec, fill_gaussian, loss_differences, perturbation_seeds
from fpzo_ray.zo.client_update import batch_loss
from fpzo_ray.zo.layerwise import layerwise_differences, stage_blocks_for

CASES = {"lenet5": ("mnist", (1, 28, 28), 64), "resnet18": ("cifar10", (3, 32, 32), 32)}
MB = 1e6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=int, default=20, help="perturbations per ZO step")


def _model(name: str):
    dataset, shape, _ = CASES[name]
    cfg = config_from_dict({"data": {"name": dataset}, "model": {"name": name}})
    return build_model(cfg, shape, 10, init_seed=0)


def _batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    _, shape, batch = CASES[name]
    gen = torch.Generator().manual_seed(0)
    return torch.randn((batch, *shape), generator=gen), torch.randint(
        0, 10, (batch,), generator=gen
    )


def measure_bp(name: str, microbatch: int = 0) -> MemoryMeter:
    model = _model(name)
    x, y = _batch(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    meter = MemoryMeter()
    for p in model.parameters():
        meter.track(p, "parameters")
    meter.track(x, "inputs")
    meter.track(y, "inputs")
    with meter:
        for xc, yc in microbatches(x, y, microbatch):  # accumulate_gradient, phase by phase
            loss = F.cross_entropy(model(xc), yc, reduction="sum") / y.shape[0]
            with meter.phase("gradients"):
                loss.backward()
        with meter.phase("optimizer_state"):
            optimizer.step()
    return meter


def ntk_sap_mask(model, layout, shape, density: float) -> Mask:
    def scores(t: int, mask: Mask) -> torch.Tensor:
        return keep_scores(
            "ntk_sap", ntk_sap_mask_gradient(model, layout, mask, [t, 100 + t], 8, shape, 0.01)
        )

    return prune_iteratively(Mask.dense(layout), density, 3, scores)


def measure_zo(
    name: str, k: int, density: float = 1.0, layerwise: bool = False, microbatch: int = 0
) -> tuple[MemoryMeter, Mask]:
    model = _model(name)
    flat, layout = bind_flat_buffer(model)
    x, y = _batch(name)
    mask = (
        Mask.dense(layout) if density >= 1 else ntk_sap_mask(model, layout, CASES[name][1], density)
    )
    kept_index = None if mask.is_dense else mask.kept_index()
    with torch.no_grad():
        flat.mul_(mask.kept_flat())
    spec = EstimatorSpec(FORWARD, fill_gaussian, 1e-3)
    seeds = perturbation_seeds(0, 0, 0, 0, k)
    meter = MemoryMeter()
    meter.track(flat, "parameters")
    meter.track(x, "inputs")
    meter.track(y, "inputs")
    if kept_index is not None:
        meter.track(kept_index, "masks")
    blocks = stage_blocks_for(model, layout, kept_index) if layerwise else None

    def loss_of(out: torch.Tensor) -> float:
        return float(F.cross_entropy(out, y))

    def loss() -> float:
        with meter.phase("activations"):
            return batch_loss(model, x, y, microbatch)

    with meter, meter.phase("zo_buffers"):
        if blocks is not None:
            for index in blocks.flat_index:
                meter.track(index, "masks")
            layerwise_differences(model, loss_of, x, flat, blocks, seeds, spec)
        else:
            loss_differences(loss, flat, kept_index, seeds, spec)
    return meter, mask


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    rows, result = [], {}
    for name in CASES:
        _, shape, batch = CASES[name]
        bp = measure_bp(name)
        bp_micro = measure_bp(name, microbatch=8)
        zo_dense, _ = measure_zo(name, args.k)
        zo_dense_micro, _ = measure_zo(name, args.k, microbatch=8)
        zo_sparse, mask = measure_zo(name, args.k, 0.1)
        zo_layerwise, _ = measure_zo(name, args.k, 0.1, layerwise=True)
        zo_micro, _ = measure_zo(name, args.k, 0.1, microbatch=8)
        params = mask.layout.total
        stored = sparse_storage_bytes(
            mask.num_kept_prunable, mask.layout.num_prunable, params - mask.layout.num_prunable
        )
        # A device storing the model sparsely holds values + bitmap/index list instead of the
        # simulator's dense buffer and its int64 index of the trained coordinates.
        sparse_stored = sparse_peak_bytes(zo_sparse.peak_breakdown, stored)
        micro_stored = sparse_peak_bytes(zo_micro.peak_breakdown, stored)
        estimate = {
            "bp_dense": analytical_peak_bytes(_model(name), shape, batch, "bp")["total"],
            "zo_dense": analytical_peak_bytes(_model(name), shape, batch, "zo")["total"],
            "zo_sparse90": analytical_peak_bytes(
                _model(name), shape, batch, "zo", num_trained=mask.num_trained
            )["total"],
        }
        for label, meter in (
            ("bp_dense", bp),
            ("bp_dense_microbatch8", bp_micro),
            ("zo_dense", zo_dense),
            ("zo_dense_microbatch8", zo_dense_micro),
            ("zo_sparse90", zo_sparse),
            ("zo_sparse90_layerwise", zo_layerwise),
            ("zo_sparse90_microbatch8", zo_micro),
        ):
            row = {
                "model": name,
                "step": label,
                "peak_MB": meter.peak_bytes / MB,
                "analytical_MB": estimate[label] / MB if label in estimate else None,
            }
            row.update({f"{k}_MB": v / MB for k, v in meter.peak_breakdown.items() if v})
            rows.append(row)
        rows.append({"model": name, "step": "zo_sparse90_stored", "peak_MB": sparse_stored / MB})
        rows.append(
            {"model": name, "step": "zo_sparse90_microbatch8_stored", "peak_MB": micro_stored / MB}
        )
        ratios = {
            "bp_over_zo_dense": bp.peak_bytes / zo_dense.peak_bytes,
            "bp_over_zo_sparse": bp.peak_bytes / sparse_stored,
            "bp_microbatch8_over_zo_sparse_microbatch8": bp_micro.peak_bytes / micro_stored,
            "bp_microbatch8_over_zo_dense_microbatch8": bp_micro.peak_bytes
            / zo_dense_micro.peak_bytes,
            "bp_over_zo_sparse_microbatch8": bp.peak_bytes / micro_stored,
        }
        result.update({f"{name}_{k}": v for k, v in ratios.items()})
        print(
            f"{name} (kept {mask.density:.3f}, d = {mask.num_trained}), BP peak over ZO peak:\n"
            f"  same batch, both dense:                    {ratios['bp_over_zo_dense']:.2f}x\n"
            f"  same batch, ZO 90 % sparse stored sparsely: {ratios['bp_over_zo_sparse']:.2f}x\n"
            f"  both micro-batched (8), ZO dense:           "
            f"{ratios['bp_microbatch8_over_zo_dense_microbatch8']:.2f}x\n"
            f"  both micro-batched (8), ZO 90 % sparse:     "
            f"{ratios['bp_microbatch8_over_zo_sparse_microbatch8']:.2f}x\n"
            f"  UNEQUAL: BP full batch, ZO sparse micro 8:  "
            f"{ratios['bp_over_zo_sparse_microbatch8']:.2f}x",
            flush=True,
        )
    columns = [
        "model",
        "step",
        "peak_MB",
        "analytical_MB",
        "parameters_MB",
        "masks_MB",
        "inputs_MB",
        "activations_MB",
        "gradients_MB",
        "optimizer_state_MB",
        "zo_buffers_MB",
    ]
    print(f"\nPeak training memory of one local step (K = {args.k}), breakdown at the peak")
    print(table(rows, columns))
    return {**result, "rows": rows}
