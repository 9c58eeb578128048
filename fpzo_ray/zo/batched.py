"""ZO differences with the K perturbed models batched by ``torch.func.vmap``
(``zo.batching: vmap``).

The directions are evaluated in chunks: a chunk of C perturbed flat parameter vectors is
stacked and one vmapped functional forward computes their C losses. On a GPU this fills the
device with one launch instead of C; on this project's CPU it was measured slower than the
plain loop (``python -m fpzo_ray.bench zo-step``), which is why ``loop`` is the default.
Same seeds, same directions, same estimator as :func:`fpzo_ray.zo.estimator.loss_differences`
(the losses agree to float rounding, not bit for bit: batched kernels sum in another order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.zo.estimator import EstimatorSpec, ZOResult, accumulate
from fpzo_ray.zo.perturbation import direction


def vmap_differences(
    model: nn.Module,
    layout: ParameterLayout,
    flat: torch.Tensor,
    kept_index: torch.Tensor | None,
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: Sequence[int],
    spec: EstimatorSpec,
    chunk_size: int = 8,
    with_estimate: bool = False,
) -> ZOResult:
    base = flat.detach().clone()
    trained = torch.arange(layout.total, device=flat.device) if kept_index is None else kept_index
    dim = trained.numel()

    def loss_at(vector: torch.Tensor) -> torch.Tensor:
        params = {s.name: vector[s.offset : s.offset + s.numel].view(s.shape) for s in layout.slots}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    batched_loss = vmap(loss_at)
    signs = (1.0, -1.0) if spec.estimator == "central" else (1.0,)
    plus: list[float] = []
    minus: list[float] = []
    directions: list[torch.Tensor] = []
    with torch.no_grad():
        base_loss = float(loss_at(base))
        for start in range(0, len(seeds), chunk_size):
            chunk = seeds[start : start + chunk_size]
            z = torch.stack([direction(s, dim, kind=spec.direction) for s in chunk])
            directions.extend(z)
            z = z.to(flat.device)
            for sign, store in zip(signs, (plus, minus)):
                stacked = base.expand(len(chunk), -1).clone()
                stacked.index_add_(1, trained, z, alpha=sign * spec.sigma)
                store.extend(batched_loss(stacked).tolist())
    if spec.estimator == "central":
        differences = torch.tensor([p - m for p, m in zip(plus, minus)], dtype=torch.float32)
        base_loss = (sum(plus) + sum(minus)) / (2 * len(seeds))
    else:
        differences = torch.tensor([p - base_loss for p in plus], dtype=torch.float32)
    estimate = None
    if with_estimate:
        estimate = torch.zeros(dim, dtype=torch.float32)
        for k, z_k in enumerate(directions):
            accumulate(estimate, float(differences[k]), spec.scale, z_k)
        estimate.div_(len(seeds))
    return ZOResult(base_loss, differences, estimate, spec.num_passes(len(seeds)))
