"""Layer-wise ZO with a cached prefix (``zo.perturbation_scope: layerwise``), a named variant.

Each direction perturbs the trained coordinates of *one* stage of the model (a block of a
``StagedModel``): block b is drawn with probability p_b = d_b / d (d_b its trained
coordinates) from the direction's own seed, and z is Gaussian (or Rademacher) on that block
only. The estimate scales each direction by 1 / p_b:

    g = (1/K) sum_k [dL_k * scale / p_{b_k}] z_k   (z_k zero outside block b_k)

which is unbiased, E[g] = grad L restricted to the trained coordinates, and has the same
leading variance term d ||grad L||^2 / K as perturbing everything at once.

Why: a perturbation of block b leaves stages 0..b-1 unchanged, so their output at the base
weights can be reused. The step walks the stages in order, keeping only the current stage
input (memory stays at one activation, unlike caching every stage), runs the directions of
stage b from there, then advances the input by one stage. A pass for block b costs only the
suffix b..n-1; with most trained coordinates in the last stages (ResNets) that is a fraction
of a full forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.models.staged import StageBlocks, StagedModel
from fpzo_ray.zo.estimator import EstimatorSpec, ZOResult, ZOUpdateSpec, accumulate

#: The start of every error about a model the layer-wise scope cannot run.
NEEDS_STAGES = (
    "zo.perturbation_scope: layerwise needs a model built as a "
    "fpzo_ray.models.staged.StagedModel (a chain of stages)"
)


def stage_blocks(
    layout: ParameterLayout, kept_index: torch.Tensor | None, num_stages: int
) -> StageBlocks:
    """Group the trained coordinates by stage (parameter names start with ``stages.<i>.``).

    Raises ValueError (starting with :data:`NEEDS_STAGES`) for a parameter outside the stages;
    :func:`stage_blocks_for` also checks the model itself."""
    stage_of_flat = torch.empty(layout.total, dtype=torch.int64)
    for slot in layout.slots:
        parts = slot.name.split(".")
        if parts[0] != "stages" or len(parts) < 3 or not parts[1].isdigit():
            raise ValueError(f"{NEEDS_STAGES}; its parameter {slot.name} is outside the stages")
        stage_of_flat[slot.offset : slot.offset + slot.numel] = int(parts[1])
    trained = torch.arange(layout.total) if kept_index is None else kept_index.cpu()
    stage_of_trained = stage_of_flat[trained]
    positions = tuple(torch.nonzero(stage_of_trained == s).squeeze(1) for s in range(num_stages))
    sizes = torch.tensor([p.numel() for p in positions], dtype=torch.float64)
    return StageBlocks(
        positions, tuple(trained[p] for p in positions), torch.cumsum(sizes / sizes.sum(), 0)
    )


def stage_blocks_for(
    model: nn.Module, layout: ParameterLayout, kept_index: torch.Tensor | None
) -> StageBlocks:
    """The blocks of ``model``, which must be a :class:`StagedModel` (else ValueError
    starting with :data:`NEEDS_STAGES` and naming the model's type)."""
    return stage_blocks(layout, kept_index, len(_staged(model).stages))


def _staged(model: nn.Module) -> StagedModel:
    if not isinstance(model, StagedModel):
        kind = type(model)
        raise ValueError(f"{NEEDS_STAGES}; {kind.__module__}.{kind.__qualname__} is not")
    return model


def blocks_for(
    spec: ZOUpdateSpec | None,
    model: nn.Module,
    layout: ParameterLayout,
    kept_index: torch.Tensor | None,
) -> StageBlocks | None:
    """The blocks a workspace needs: :func:`stage_blocks_for` under the layer-wise scope
    (``spec.perturbation_scope == "layerwise"``), else None (``spec`` None: no ZO work)."""
    if spec is None or spec.perturbation_scope != "layerwise":
        return None
    return stage_blocks_for(model, layout, kept_index)


def _block_direction(
    seed: int, blocks: StageBlocks, spec: EstimatorSpec, device: torch.device | str
) -> tuple[int, torch.Tensor]:
    """The stage and the direction on it (drawn on ``device``), both from the direction's
    seed."""
    stream = spec.stream(seed)
    u = torch.tensor([stream.uniform()], dtype=torch.float64)
    stage = min(int(torch.searchsorted(blocks.cumulative, u, right=True)), blocks.num_stages - 1)
    while blocks.positions[stage].numel() == 0:  # guards p_b = 0 blocks against rounding
        stage -= 1
    z = torch.empty(blocks.positions[stage].numel(), dtype=torch.float32, device=device)
    return stage, stream.fill(z)


def _directions(
    seeds: Sequence[int], blocks: StageBlocks, spec: EstimatorSpec, device: torch.device | str
) -> list[tuple[int, int, torch.Tensor]]:
    """(stage, k, z) for every direction, in processing order: by stage, then by k."""
    drawn = [(*_block_direction(s, blocks, spec, device), k) for k, s in enumerate(seeds)]
    return sorted(((stage, k, z) for stage, z, k in drawn), key=lambda t: (t[0], t[1]))


def layerwise_differences(
    model: nn.Module,
    loss_of_output: Callable[[torch.Tensor], float],
    x: torch.Tensor,
    flat: torch.Tensor,
    blocks: StageBlocks,
    seeds: Sequence[int],
    spec: EstimatorSpec,
    with_estimate: bool = False,
) -> ZOResult:
    """The layer-wise step on one mini-batch ``x``; ``flat`` is restored exactly. ``model``
    must be a :class:`StagedModel` (see :func:`stage_blocks_for`)."""
    model = _staged(model)
    scheme = spec.scheme
    directions = _directions(seeds, blocks, spec, flat.device)
    losses = [[0.0] * len(scheme.signs) for _ in seeds]  # losses[k][i]
    runs = [0] * blocks.num_stages
    with torch.no_grad():
        activation = x
        cursor = 0
        for stage in range(blocks.num_stages):
            mine = []
            while cursor < len(directions) and directions[cursor][0] == stage:
                mine.append(directions[cursor])
                cursor += 1
            if mine:
                index = blocks.flat_index[stage].to(flat.device)
                base = flat[index].clone()
                try:
                    for _, k, z in mine:
                        for i, sign in enumerate(scheme.signs):
                            flat.index_copy_(0, index, base + sign * spec.sigma * z)
                            losses[k][i] = loss_of_output(model.forward_from(stage, activation))
                            for later in range(stage, blocks.num_stages):
                                runs[later] += 1
                finally:
                    flat.index_copy_(0, index, base)
            activation = model.stages[stage](activation)
            runs[stage] += 1
        base_loss = loss_of_output(activation)
    values, reported = scheme.combine(losses, base_loss if scheme.needs_base else None)
    differences = torch.tensor(values, dtype=torch.float32)
    estimate = None
    if with_estimate:
        estimate = _combine(differences, directions, blocks, spec, len(seeds))
    equivalent = max(runs)  # the first stage runs once per full pass
    return ZOResult(reported, differences, estimate, equivalent, tuple(runs))


def _combine(
    differences: torch.Tensor,
    directions: list[tuple[int, int, torch.Tensor]],
    blocks: StageBlocks,
    spec: EstimatorSpec,
    count: int,
) -> torch.Tensor:
    dim = sum(p.numel() for p in blocks.positions)
    estimate = torch.zeros(dim, dtype=torch.float32)
    for stage, k, z in directions:
        part = torch.zeros(z.numel(), dtype=torch.float32)
        # on the CPU, as the server rebuilds it, whatever device the client drew z on
        accumulate(part, float(differences[k]), spec.scale / blocks.probability(stage), z.cpu())
        estimate.index_add_(0, blocks.positions[stage], part)
    return estimate.div_(count)


def layerwise_estimate_from_differences(
    differences: torch.Tensor, seeds: Sequence[int], spec: EstimatorSpec, blocks: StageBlocks
) -> torch.Tensor:
    """Server side: rebuild the layer-wise estimate from the differences and the seeds."""
    if differences.numel() != len(seeds):
        raise ValueError(f"{differences.numel()} differences for {len(seeds)} seeds")
    return _combine(differences, _directions(seeds, blocks, spec, "cpu"), blocks, spec, len(seeds))
