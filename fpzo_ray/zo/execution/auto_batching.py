"""What ``zo.batching: auto`` (the default) runs for a model: the fastest exact mode.

Every mode computes the same K + 1 losses (to float32 rounding); they differ in speed and in the
simulator's own memory, never in what is recorded (a client's peak memory is that of the
device's one-model-at-a-time step, measured apart: ``sim.device_memory``). So the default is
simply the faster mode, chosen per model by a fixed rule (never by timing at run time, which
would make a run depend on the machine's load):

- ``batched`` when the model can be stacked (``zo.stacked``) and its dense forward pass costs at
  most :data:`BATCHED_MAX_FLOPS_PER_SAMPLE`: small models whose single pass leaves a core idle,
  where K + 1 stacked copies make fewer, wider kernel calls;
- ``loop`` otherwise: convolutions with many channels already fill the core, and stacked
  grouped convolutions over them are slower than dense ones.

Measured here (one thread, dense step, K = 20; ``python -m fpzo_ray.bench zo-step`` prints
the same comparison): batched over loop was 3.8x (batch 32) and 4.2x (batch 256) on the digits
CNN (0.05 MFLOP a sample), 2.4x and 3.3x on LeNet-5 (0.84 MFLOP), 0.43x (batch 8) and 0.47x
(batch 32) on ResNet-20 (81.6 MFLOP). The threshold sits between, at the geometric middle;
no shipped model falls near it. On a GPU the trade-off has not been measured: the same rule
applies.
"""

from __future__ import annotations

from torch import nn

from fpzo_ray.zo.execution.stacked import unsupported_module

#: Models whose dense forward pass costs at most this many FLOPs a sample run ``batched``.
BATCHED_MAX_FLOPS_PER_SAMPLE = 8e6


def auto_batching(model: nn.Module, dense_forward_flops_per_sample: float) -> str:
    """The mode ``zo.batching: auto`` runs ``model``'s full-scope steps in (see the module
    docstring); ``loop`` for any model the stacked form does not support."""
    if dense_forward_flops_per_sample > BATCHED_MAX_FLOPS_PER_SAMPLE:
        return "loop"
    return "loop" if unsupported_module(model) is not None else "batched"
