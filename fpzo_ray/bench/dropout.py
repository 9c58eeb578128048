"""dropout: what dropout does to a ZO difference, under each ``zo.dropout`` setting.

A model with dropout (an MLP with ``Dropout(p)`` after its hidden layer) on batches of 32
(MNIST when ``--data-root`` holds it, else the bundled digits), at its initial weights. For
each setting, the K = 20 central differences a client uploads (sigma 1e-3), divided by
2 sigma, are compared with the exact directional derivatives ``g . z_k`` of the objective the
setting estimates (autograd): ``off``, the network without dropout (eval mode); ``same_mask``,
the network under the very masks its passes drew; ``independent``, the dropout objective,
whose gradient is the mean over 256 masks. ``cos_expected`` is the cosine between the K-direction
gradient estimate and that mean gradient (what training under dropout follows), ``cos_eval``
the same with the eval-mode gradient (what the server's evaluation follows). Mean and spread
over ``--batches`` batches. Key ``rows``; ``scalar_rel_error_<setting>`` summarises.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fpzo_ray.bench.common import data_root, workload_data
from fpzo_ray.bench.timing import table
from fpzo_ray.bp.client_update import flat_gradient
from fpzo_ray.config import config_from_dict
from fpzo_ray.data import load_dataset
from fpzo_ray.models import bind_flat_buffer
from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.registry import DIFFERENCE_SCHEMES
from fpzo_ray.zo import EstimatorSpec, fill_gaussian, loss_differences, perturbation_seeds
from fpzo_ray.zo.dropout import dropout_off, seeded_randomness
from fpzo_ray.zo.perturbation import direction

SETTINGS = ("off", "same_mask", "independent")
SIGMA = 1e-3
MASKS_FOR_THE_MEAN = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(data_root()))
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--p", type=float, default=0.5, help="the dropout probability")
    parser.add_argument("--batches", type=int, default=5)


def _gradient(
    model: nn.Module, layout: ParameterLayout, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return flat_gradient(model, layout).detach().double()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    data = workload_data(args.data_root)
    dataset = load_dataset(config_from_dict({"data": data}).data)
    torch.manual_seed(0)
    features = int(torch.tensor(dataset.input_shape).prod())
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, 64),
        nn.Tanh(),
        nn.Dropout(args.p),
        nn.Linear(64, dataset.num_classes),
    )
    flat, layout = bind_flat_buffer(model)
    spec = EstimatorSpec(DIFFERENCE_SCHEMES.load("central"), fill_gaussian, SIGMA)
    seeds = perturbation_seeds(0, 0, 0, 0, args.k)
    zs = torch.stack([direction(s, layout.total) for s in seeds]).double()
    found: dict[str, dict[str, list[float]]] = {
        s: {"scalar_rel_error": [], "cos_expected": [], "cos_eval": []} for s in SETTINGS
    }
    for b in range(args.batches):
        x, y = dataset.train_batch(torch.arange(32 * b, 32 * b + 32).numpy())
        model.train()
        expected = torch.stack(
            [_gradient(model, layout, x, y) for _ in range(MASKS_FOR_THE_MEAN)]
        ).mean(0)
        with dropout_off(model):
            g_eval = _gradient(model, layout, x, y)
        model.zero_grad(set_to_none=True)
        for setting in SETTINGS:
            exact = zs @ (g_eval if setting == "off" else expected)
            if setting == "same_mask":  # each direction's own masks
                exact = torch.stack(
                    [z @ _seeded_gradient(model, layout, x, y, seed) for z, seed in zip(zs, seeds)]
                )

            def loss(x: torch.Tensor = x, y: torch.Tensor = y) -> float:
                return float(F.cross_entropy(model(x), y))

            with dropout_off(model) if setting == "off" else contextlib.nullcontext():
                result = loss_differences(
                    loss,
                    flat,
                    None,
                    seeds,
                    spec,
                    same_randomness=setting == "same_mask",
                )
            scalars = result.loss_differences.double() * spec.scale
            estimate = (scalars[:, None] * zs).mean(0)
            found[setting]["scalar_rel_error"].append(
                float((scalars - exact).norm() / exact.norm())
            )
            found[setting]["cos_expected"].append(_cosine(estimate, expected))
            found[setting]["cos_eval"].append(_cosine(estimate, g_eval))
    rows = []
    for setting, figures in found.items():
        row: dict[str, Any] = {"setting": setting}
        for key, values in figures.items():
            row[key] = statistics.mean(values)
            row[f"{key}_spread"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    print(
        f"\nMLP with Dropout({args.p}), {data['name']}, batch 32, K = {args.k}, central, "
        f"sigma {SIGMA:g}, d = {layout.total}, {args.batches} batches: mean (spread)"
    )
    print(
        table(
            [
                {
                    "setting": r["setting"],
                    **{
                        k: f"{r[k]:.3f} ({r[k + '_spread']:.3f})"
                        for k in ("scalar_rel_error", "cos_expected", "cos_eval")
                    },
                }
                for r in rows
            ],
            ["setting", "scalar_rel_error", "cos_expected", "cos_eval"],
        )
    )
    return {
        "rows": rows,
        **{f"scalar_rel_error_{r['setting']}": r["scalar_rel_error"] for r in rows},
    }


def _seeded_gradient(
    model: nn.Module, layout: ParameterLayout, x: torch.Tensor, y: torch.Tensor, seed: int
) -> torch.Tensor:
    """The gradient under the masks a pass seeded with ``seed`` draws."""
    with seeded_randomness(seed, torch.device("cpu")):
        return _gradient(model, layout, x, y)
