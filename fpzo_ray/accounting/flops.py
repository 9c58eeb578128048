"""FLOPs: the forward work of any ``nn.Module`` per sample, and the vector work of ZO.

Why this way: a researcher's model (a Vision Transformer, an MLP on tabular rows, a 1-D
convolution, ...) is counted by the same rule as the built-in models, with no per-layer
formula to write. ``layer_flops`` runs one forward pass of a zero batch under
``torch.utils.flop_counter.FlopCounterMode`` and reads its per-module breakdown.

What is counted, per sample (a multiply-add is 2 FLOPs, the flop_counter convention):

* every *prunable* layer (a module of ``fpzo_ray.models.flat.PRUNABLE_MODULES``, whose
  ``weight`` the pruning masks): its dense multiply-adds, which under a mask scale with the
  layer's kept fraction (a sparse kernel skips the pruned weights), and its bias additions
  (one per output element when it has a bias; flop_counter does not count them), always paid;
* every other matrix product or convolution flop_counter sees outside a prunable layer (an
  attention's ``q @ k^T`` and ``softmax @ v``, ``F.scaled_dot_product_attention``, a matmul
  against a raw ``nn.Parameter``): *unprunable* dense work, always paid in full, attributed to
  its stage when the model is a ``StagedModel`` (modules ``stages.<i>....``).

A layer called twice (weight sharing) counts twice; work that does not scale with the batch
is amortised over the two samples of the traced batch. A product with a prunable weight made
without calling its module (``F.linear(x, m.weight)`` in a parent's ``forward``), or with a
parameter a module lists in ``prunable_parameters``, is unprunable work: it does not shrink
under a mask. Not counted, as in flop_counter: element-wise work (normalisation,
activations, softmax, pooling, residual additions) and lookups. A backward pass counts as
twice its forward pass (gradients w.r.t. inputs and weights).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode, sdpa_flop_count

from fpzo_ray.models.flat import PRUNABLE_MODULES

_BATCH = 2  # samples in the traced zero batch
_STAGE = re.compile(r"stages\.(\d+)(?:[.\s]|$)")


# Scaled-dot-product attention on CPU runs a kernel flop_counter has no formula for; count it
# as flop_counter counts the CUDA kernels (q @ k^T and attn @ v).
def _sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)  # FlopCounterMode passes the shapes


_CPU_SDPA = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_CUSTOM_FORMULAS = {} if _CPU_SDPA is None else {_CPU_SDPA: _sdpa_flops}


class _EagerCountingMode(_FlopCounterMode):
    """flop_counter's dispatch mode, without the lazy ``torch._dynamo.disable`` torch wraps
    every dispatch mode in: its first call imports Dynamo, ~1.7 s of CPU and ~100 MB in every
    Ray actor that counts a model, for a guard that matters only under ``torch.compile`` (the
    count never runs compiled)."""

    __torch_dispatch__ = inspect.unwrap(_FlopCounterMode.__dict__["__torch_dispatch__"])

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False


class _EagerFlopCounter(FlopCounterMode):
    """``FlopCounterMode`` entering :class:`_EagerCountingMode` (as its own ``__enter__``
    enters ``_FlopCounterMode``)."""

    def __enter__(self) -> _EagerFlopCounter:
        self.flop_counts.clear()
        self.mod_tracker.__enter__()
        self.mode = _EagerCountingMode(self)
        self.mode.__enter__()
        return self


@dataclass(frozen=True)
class LayerFlops:
    """The dense forward cost of one prunable layer, or of the other work of one stage."""

    # a prunable layer's weight parameter name, e.g. "stages.0.0.weight"; for the unprunable
    # work, "stages.<i> (other)" for a stage of a StagedModel, else "(other)"
    name: str
    multiply_adds: int  # per sample, dense
    bias_adds: int  # per sample (0 for the unprunable work)
    prunable: bool = True  # False: never scaled by a density
    # the parameter name a mask knows the weight by, when it differs from ``name`` (a weight
    # tied to an earlier module's: ``named_parameters`` lists it once, by its first name)
    mask_name: str | None = None

    @property
    def stage(self) -> int | None:
        """The stage of a StagedModel that holds this work (None for other models)."""
        match = _STAGE.match(self.name)
        return int(match.group(1)) if match else None


def _input_like(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())
    return torch.zeros((_BATCH, *(int(v) for v in input_shape)), device=device, dtype=dtype)


def layer_flops(model: nn.Module, input_shape: Sequence[int]) -> list[LayerFlops]:
    """Per-sample dense forward work of ``model`` on inputs of ``input_shape``.

    One entry per prunable layer (in module order), then one ``prunable=False`` entry per stage
    (and one outside any stage) that has other work; the built-in CNNs have none.
    """
    aliases: dict[nn.Module, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        aliases.setdefault(module, []).append(name)
    prunable = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_MODULES)
    ]
    stages = {
        int(m.group(1)): name
        for name, _ in model.named_modules()
        if (m := re.fullmatch(r"stages\.(\d+)", name))
    }

    bias_adds: dict[str, int] = {name: 0 for name, _ in prunable}
    hooks = []

    def hook_for(name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if getattr(module, "bias", None) is not None and isinstance(output, torch.Tensor):
                bias_adds[name] += output.numel() // _BATCH

        return hook

    for name, module in prunable:
        hooks.append(module.register_forward_hook(hook_for(name)))
    counter = _EagerFlopCounter(display=False, custom_mapping=_CUSTOM_FORMULAS)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(_input_like(model, input_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()

    # flop_counter keys a module by its root's class name and its path, e.g. "LeNet5.stages.0.0",
    # and counts a module's work in every ancestor too
    counts = {key: sum(ops.values()) for key, ops in counter.get_flop_counts().items()}
    root = type(model).__name__

    def total(module_names: Sequence[str]) -> int:
        # a shared module is keyed by one of its paths
        keys = {f"{root}.{n}" if n else root for n in module_names}
        return sum(counts.get(key, 0) for key in keys)

    # a prunable layer's own work: its total less that of the prunable layers inside it
    own: dict[str, int] = {}
    deepest_first = sorted(prunable, key=lambda item: -(item[0].count(".") + 1) if item[0] else 0)
    for name, module in deepest_first:
        inner = sum(
            work for other, work in own.items() if name == "" or other.startswith(f"{name}.")
        )
        own[name] = total(aliases[module]) - inner

    first_names = {id(param): name for name, param in model.named_parameters()}
    found = []
    for name, module in prunable:
        weight = f"{name}.weight" if name else "weight"
        mask_name = first_names.get(id(getattr(module, "weight", None)), weight)
        found.append(
            LayerFlops(
                weight,
                _per_sample_macs(own[name]),
                bias_adds[name],
                mask_name=None if mask_name == weight else mask_name,
            )
        )
    # the other work: each stage's total less its prunable layers' own work; outside the
    # stages, the whole forward's total less the stages' totals and the remaining layers
    other: dict[int | None, int] = {None: counts.get("Global", 0)}
    for index, stage_name in sorted(stages.items()):
        other[index] = total(aliases[model.get_submodule(stage_name)])
        other[None] -= other[index]
    for layer, (name, _) in zip(found, prunable, strict=True):
        stage = layer.stage if layer.stage in other else None
        other[stage] -= own[name]
    for stage, work in other.items():
        if work > 0:
            label = "(other)" if stage is None else f"stages.{stage} (other)"
            found.append(LayerFlops(label, _per_sample_macs(work), 0, prunable=False))
    return found


def _per_sample_macs(flops: int) -> int:
    return int(round(flops / (2 * _BATCH)))


def _layer_forward(layer: LayerFlops, layer_density: Mapping[str, float] | None) -> float:
    density = 1.0
    if layer.prunable and layer_density is not None:
        density = layer_density.get(layer.mask_name or layer.name, 1.0)
    return 2 * layer.multiply_adds * density + layer.bias_adds


def forward_flops(
    layers: Sequence[LayerFlops], layer_density: Mapping[str, float] | None = None
) -> int:
    """FLOPs of one forward pass of one sample; dense when ``layer_density`` is None."""
    return int(round(sum(_layer_forward(layer, layer_density) for layer in layers)))


def stage_forward_flops(
    layers: Sequence[LayerFlops], num_stages: int, layer_density: Mapping[str, float] | None = None
) -> list[int]:
    """Per-sample forward FLOPs of each stage of a StagedModel."""
    per_stage = [0.0] * num_stages
    for layer in layers:
        if layer.stage is not None:
            per_stage[layer.stage] += _layer_forward(layer, layer_density)
    return [int(round(f)) for f in per_stage]


def zo_vector_flops(num_directions: int, dim: int, shifts: int, with_estimate: bool) -> int:
    """Work over the trained coordinates of one ZO step, besides the forward passes.

    Per direction: drawing it (counted 1 FLOP a coordinate), forming w + s z once per
    perturbed evaluation of the difference scheme (``shifts``: 1 forward, 2 central; 2 each)
    and, when the client keeps its estimate (FedAvg), accumulating it (2).
    """
    per_direction = 1 + 2 * shifts + (2 if with_estimate else 0)
    return num_directions * per_direction * dim


def update_flops(dim: int) -> int:
    """A client SGD step over the trained coordinates (w -= lr * g)."""
    return 2 * dim


def bp_step_flops(batch_size: int, forward_flops_per_sample: int, dim: int) -> int:
    """Forward + backward (2x forward) on a batch, plus the SGD update."""
    return 3 * batch_size * forward_flops_per_sample + update_flops(dim)
