"""Compiled forward passes for a client's ZO steps (``simulation.compile``).

``torch.compile`` (inductor, CPU or CUDA) of the model's forward (``zo.batching: loop``) and of
the stacked forward (``batched``). The compiled model reads the same parameters as the eager
one, so the in-place perturbations of the flat buffer need no recompilation; a worker compiles
once per model shape and chunk size, and the compiled kernels are cached on disk
(``TORCHINDUCTOR_CACHE_DIR``, default ``~/.cache/fpzo_ray/inductor``) for the next workers
and runs. Inductor's weight ``freezing`` stays off: it would bake the weights into the graph.
The losses match the eager ones to float32 rounding (fused kernels sum in another order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fpzo_ray.cache import keep_inductor_headers_in_cache
from fpzo_ray.zo.execution.stacked import stacked_losses


@dataclass(frozen=True)
class CompiledForwards:
    """The compiled callables a workspace runs instead of the eager ones."""

    model: Callable[[torch.Tensor], torch.Tensor]
    stacked_losses: Callable[..., torch.Tensor]


def compile_forwards(model: nn.Module) -> CompiledForwards:
    """``model``'s forward and the stacked forward, compiled lazily (at their first call)."""
    import torch._inductor.config as inductor

    keep_inductor_headers_in_cache()

    inductor.freezing = False
    inductor.fx_graph_cache = True
    return CompiledForwards(
        torch.compile(model, dynamic=False), torch.compile(stacked_losses, dynamic=False)
    )
