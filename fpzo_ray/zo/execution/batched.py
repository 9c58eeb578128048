"""ZO differences with the K perturbed models batched by ``torch.func.vmap``
(``zo.batching: vmap``).

The directions are evaluated in chunks: a chunk of C perturbed flat parameter vectors is
stacked and one vmapped functional forward computes their C losses. On a GPU this fills the
device with one launch instead of C; on this project's CPU it was measured slower than the
plain loop (``python -m fpzo_ray.bench zo-step``), which is why ``loop`` is the default.
Same seeds, same directions, same estimator as :func:`fpzo_ray.zo.estimator.loss_differences`
(the losses agree to float rounding, not bit for bit: batched kernels sum in another order).

Any module runs here: ``torch.func.functional_call`` substitutes the parameters (tied ones
stay tied), buffers are read from the module unbatched. A module that writes state in its
forward (BatchNorm with running statistics in training mode) or draws randomness (dropout)
cannot be vmapped; such a model runs in ``loop`` mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.task.losses import PerSampleLoss, cross_entropy
from fpzo_ray.zo.estimator import EstimatorSpec, ZOResult, accumulate


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
    loss: PerSampleLoss = cross_entropy,
) -> ZOResult:
    base = flat.detach().clone()
    trained = torch.arange(layout.total, device=flat.device) if kept_index is None else kept_index
    dim = trained.numel()

    def loss_at(vector: torch.Tensor) -> torch.Tensor:
        params = {s.name: vector[s.offset : s.offset + s.numel].view(s.shape) for s in layout.slots}
        return loss(functional_call(model, params, (x,)), y).mean()

    batched_loss = vmap(loss_at)
    scheme = spec.scheme
    per_sign: list[list[float]] = [[] for _ in scheme.signs]  # per sign, the K losses
    directions: list[torch.Tensor] = []
    with torch.no_grad():
        base_loss = float(loss_at(base)) if scheme.needs_base else None
        for start in range(0, len(seeds), chunk_size):
            chunk = seeds[start : start + chunk_size]
            z = torch.empty(len(chunk), dim, dtype=torch.float32, device=flat.device)
            for row, drawn in zip(z, spec.directions(chunk, dim, flat.device)):
                row.copy_(drawn)
            directions.extend(z.cpu())
            for sign, store in zip(scheme.signs, per_sign):
                stacked = base.expand(len(chunk), -1).clone()
                stacked.index_add_(1, trained, z, alpha=sign * spec.sigma)
                store.extend(batched_loss(stacked).tolist())
    losses = [list(row) for row in zip(*per_sign)]  # losses[k][i]
    values, reported = scheme.combine(losses, base_loss)
    differences = torch.tensor(values, dtype=torch.float32)
    estimate = None
    if with_estimate:
        estimate = torch.zeros(dim, dtype=torch.float32)
        for k, z_k in enumerate(directions):
            accumulate(estimate, float(differences[k]), spec.scale, z_k)
        estimate.div_(len(seeds))
    return ZOResult(reported, differences, estimate, spec.num_passes(len(seeds)))
