"""sigma: how much the finite-difference step matters, against the estimator's own noise.

A ZO client uploads ``d_k = (L(w + sigma z_k) - L(w)) / sigma`` (forward) or the central
version, estimates of the directional derivatives ``g . z_k``. For LeNet-5 on one MNIST-shaped
batch of 32 (real MNIST when ``--data-root`` holds it), at the initial weights and after 100
BP SGD steps, this measures for each sigma the relative error of the K = 20 uploaded scalars
against the exact ``g . z_k`` (autograd), and compares it with the relative error that
sampling only K directions leaves in the gradient estimate even with exact scalars
(``sampling_rel_error``, about sqrt(d / K)). The step is float32, as in the simulator:
too small a sigma drowns the difference in round-off, too large a one adds curvature bias.
Key ``rows``; ``worst_scalar_rel_error_sigma_1e-3`` summarises the default.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F

from fpzo_ray.bench.common import data_root, workload_data
from fpzo_ray.bench.timing import table
from fpzo_ray.bp.client_update import flat_gradient
from fpzo_ray.config import config_from_dict
from fpzo_ray.data import load_dataset
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.registry import DIFFERENCE_SCHEMES
from fpzo_ray.zo import EstimatorSpec, fill_gaussian, loss_differences, perturbation_seeds
from fpzo_ray.zo.perturbation import direction

SIGMAS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(data_root()))
    parser.add_argument("--k", type=int, default=20)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    data = workload_data(args.data_root)
    cfg = config_from_dict({"data": data, "model": {"name": "lenet5"}})
    dataset = load_dataset(cfg.data)
    model = build_model(cfg, dataset.input_shape, 10, init_seed=0)
    flat, layout = bind_flat_buffer(model)
    x, y = dataset.train_batch(torch.arange(32).numpy())
    seeds = perturbation_seeds(0, 0, 0, 0, args.k)
    rows = []
    for point in ("initial", "after 100 BP steps"):
        if point != "initial":
            for step in range(100):
                xb, yb = dataset.train_batch(
                    torch.arange(32 * step + 32, 32 * step + 64)
                    .remainder(dataset.num_train)
                    .numpy()
                )
                model.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                with torch.no_grad():
                    flat.sub_(0.05 * flat_gradient(model, layout))
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        g = flat_gradient(model, layout).detach().clone()
        model.zero_grad(set_to_none=True)
        zs = torch.stack([direction(s, layout.total) for s in seeds])
        exact = zs @ g
        sampled = (exact[:, None] * zs).mean(0)
        sampling = float((sampled - g).norm() / g.norm())
        for estimator in ("forward", "central"):
            for sigma in SIGMAS:
                spec = EstimatorSpec(DIFFERENCE_SCHEMES.load(estimator), fill_gaussian, sigma)
                result = loss_differences(
                    lambda: float(F.cross_entropy(model(x), y)), flat, None, seeds, spec
                )
                scalars = result.loss_differences.double() * spec.scale
                rows.append(
                    {
                        "point": point,
                        "estimator": estimator,
                        "sigma": sigma,
                        "scalar_rel_error": float((scalars - exact).norm() / exact.norm()),
                        "sampling_rel_error": sampling,
                    }
                )
    print(
        f"\nLeNet-5, {data['name']}, batch 32, K = {args.k}, d = {layout.total}: relative error "
        "of the uploaded scalars against the exact directional derivatives"
    )
    print(table(rows, ["point", "estimator", "sigma", "scalar_rel_error", "sampling_rel_error"]))
    default = [
        r["scalar_rel_error"] for r in rows if r["sigma"] == 1e-3 and r["estimator"] == "forward"
    ]
    return {"rows": rows, "worst_scalar_rel_error_sigma_1e-3": max(default)}
