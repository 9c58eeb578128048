"""prune-error: how far federated NTK-SAP is from the centralised computation, against alpha.

For each Dirichlet alpha and each variant, the federated mask (clients sampled per iteration,
each computing its local NTK-SAP mask gradient, summed by the server) is compared with the
centralised computation on the pooled client inputs, with the same iterations, draws and
fresh-initialisation seeds:

- ``data_free`` (the paper's): each client's inputs are Gaussian draws from its seeds, so the
  pooled inputs are the union of those draws and the centralised computation uses them;
- ``data_dependent``: each client's inputs are batches of its own (label-skewed) partition;
  the centralised computation draws the same number of batches from the pooled training set.

Figures: IoU of the final masks, relative L2 distance of the first-iteration scores (both on
the dense mask), largest per-layer density difference.

For the data-free variant, federated = centralised holds by construction: both sum the
signed mask gradients of the very same draws, and the sum does not care which machine
computed which term. What that IoU of 1 does *not* say is how reproducible the mask is. The
noise floor says it: ``independent_draws_iou`` compares the federated mask with the one the
same protocol builds from independent draws (another run seed), and
``independent_layer_density_diff`` their largest per-layer density difference. For the
data-dependent variant ``noise_floor_iou`` is also the IoU of two centralised masks built from
different pooled batches. Key ``rows``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fpzo_ray.bench.common import data_root
from fpzo_ray.bench.timing import table
from fpzo_ray.config import RunConfig, config_from_dict
from fpzo_ray.data import load_dataset, make_partition
from fpzo_ray.data.registry import ArrayDataset
from fpzo_ray.protocol import pruning_draw_seeds, pruning_participants
from fpzo_ray.pruning import Mask, ntk_sap_mask_gradient, prune_iteratively
from fpzo_ray.pruning.methods import keep_scores, pruning_method
from fpzo_ray.sim.client import ClientRuntime
from fpzo_ray.sim.in_process import InProcessPool
from fpzo_ray.sim.pruning_phase import PruningPhase


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=[0.05, 0.1, 0.5, 1.0, 10.0, 1000.0]
    )
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--draws", type=int, default=4, help="draws per client and iteration")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--data-root",
        default=str(data_root()),
        help="folder with MNIST/raw; digits is used when it is absent",
    )


def _config(args: argparse.Namespace, alpha: float, method: str, seed: int = 0) -> RunConfig:
    mnist = (Path(args.data_root) / "MNIST" / "raw").is_dir()
    data = {"name": "mnist", "root": args.data_root} if mnist else {"name": "digits"}
    return config_from_dict(
        {
            "seed": seed,
            "data": {**data, "partition": "dirichlet", "alpha": alpha, "num_clients": 100},
            "pruning": {
                "method": method,
                "sparsity": args.sparsity,
                "iterations": 5,
                "clients_per_iteration": 10,
                "draws_per_client": args.draws,
                "batch_size": args.batch_size,
            },
        }
    )


class _Recorder:
    """Wraps a saliency round to keep the first iteration's scores."""

    def __init__(self) -> None:
        self.first: torch.Tensor | None = None

    def wrap(self, saliency_round):
        def recorded(t: int, mask: Mask) -> torch.Tensor:
            scores = saliency_round(t, mask)
            if t == 0:
                self.first = scores.double().clone()
            return scores

        return recorded


def _federated(cfg: RunConfig, runtime: ClientRuntime) -> tuple[Mask, torch.Tensor]:
    phase = PruningPhase(
        cfg,
        runtime.model,
        runtime.layout,
        runtime.initial_flat,
        runtime.dataset.input_shape,
        InProcessPool(runtime),
        0,
    )
    recorder = _Recorder()
    method = cfg.pruning.method
    saliency = recorder.wrap(phase._federated_round(method, pruning_method(method)))
    mask = prune_iteratively(
        Mask.dense(runtime.layout), 1 - cfg.pruning.sparsity, cfg.pruning.iterations, saliency
    )
    assert recorder.first is not None
    return mask, recorder.first


def _centralised(
    cfg: RunConfig, runtime: ClientRuntime, batch_offset: int = 0
) -> tuple[Mask, torch.Tensor]:
    """The same draws on the pooled inputs: Gaussian ones, or batches of the whole data set
    (``batch_offset`` picks other pooled batches for the same draws)."""
    p = cfg.pruning
    pooled = np.arange(runtime.dataset.num_train)
    recorder = _Recorder()

    def saliency(t: int, mask: Mask) -> torch.Tensor:
        seeds = [s for c in pruning_participants(cfg, t) for s in pruning_draw_seeds(cfg, t, c)]
        inputs = None
        if p.method == "ntk_sap_data":  # one batch of the pooled data per draw
            inputs = [
                runtime.dataset.train_batch(
                    np.sort(
                        np.random.default_rng(s).choice(pooled, size=p.batch_size, replace=False)
                    )
                )[0]
                for s in [seed + batch_offset for seed in seeds]
            ]
        signed = ntk_sap_mask_gradient(
            runtime.model,
            runtime.layout,
            mask,
            seeds,
            p.batch_size,
            runtime.dataset.input_shape,
            p.epsilon,
            inputs=inputs,
            draw_init=p.draw_init,
        )
        return keep_scores("ntk_sap", signed)

    mask = prune_iteratively(
        Mask.dense(runtime.layout), 1 - p.sparsity, p.iterations, recorder.wrap(saliency)
    )
    assert recorder.first is not None
    return mask, recorder.first


def _iou(a: Mask, b: Mask) -> float:
    x, y = a.prunable_kept, b.prunable_kept
    return float((x & y).sum()) / float((x | y).sum())


def _max_layer_diff(a: Mask, b: Mask) -> float:
    da, db = a.layer_densities(), b.layer_densities()
    return max(abs(da[k] - db[k]) for k in da)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    rows = []
    dataset: ArrayDataset | None = None

    def runtime_for(cfg: RunConfig) -> ClientRuntime:
        assert dataset is not None
        return ClientRuntime(cfg, dataset, make_partition(cfg.data, dataset.train_labels, cfg.seed))

    for alpha in args.alphas:
        for variant, method in (("data_free", "ntk_sap"), ("data_dependent", "ntk_sap_data")):
            cfg = _config(args, alpha, method)
            dataset = dataset or load_dataset(cfg.data)
            runtime = runtime_for(cfg)
            fed_mask, fed_scores = _federated(cfg, runtime)
            cen_mask, cen_scores = _centralised(cfg, runtime)
            other = _config(args, alpha, method, seed=1)
            independent, _ = _federated(other, runtime_for(other))
            floor = None
            if variant == "data_dependent":
                floor = _iou(cen_mask, _centralised(cfg, runtime, batch_offset=1)[0])
            rows.append(
                {
                    "variant": variant,
                    "alpha": alpha,
                    "mask_iou": _iou(fed_mask, cen_mask),
                    "independent_draws_iou": _iou(fed_mask, independent),
                    "noise_floor_iou": floor,
                    "score_rel_l2": float((fed_scores - cen_scores).norm() / cen_scores.norm()),
                    "max_layer_density_diff": _max_layer_diff(fed_mask, cen_mask),
                    "independent_layer_density_diff": _max_layer_diff(fed_mask, independent),
                }
            )
            print(
                f"  {variant:15s} alpha={alpha:<7g} IoU {rows[-1]['mask_iou']:.3f}, "
                f"independent draws {rows[-1]['independent_draws_iou']:.3f}",
                flush=True,
            )
    print(
        f"\nFederated vs centralised NTK-SAP ({dataset.name if dataset else '?'}, 100 clients, "
        f"10 per iteration, 5 iterations, {args.draws} draws of {args.batch_size} each, "
        f"sparsity {args.sparsity})"
    )
    print(
        table(
            rows,
            [
                "variant",
                "alpha",
                "mask_iou",
                "independent_draws_iou",
                "noise_floor_iou",
                "score_rel_l2",
                "max_layer_density_diff",
                "independent_layer_density_diff",
            ],
        )
    )
    free = [r for r in rows if r["variant"] == "data_free"]
    if free:
        print(
            f"\nData-free: federated = centralised (IoU {min(r['mask_iou'] for r in free):.3f})"
            " holds by construction, the same draws summed in another order. Masks from "
            f"independent draws overlap with IoU {free[0]['independent_draws_iou']:.3f} "
            f"(per-layer densities within {free[0]['independent_layer_density_diff']:.3f}): "
            "what the data-free protocol buys is independence from the clients' data (no "
            "drift as alpha falls, nothing about the data uploaded), not a better-determined "
            "mask."
        )
    return {"rows": rows}
