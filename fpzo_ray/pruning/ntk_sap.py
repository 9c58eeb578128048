"""The NTK-SAP saliency of a client, data-free (Wang et al., ICLR 2023;
docs/METHOD.md, phase 1).

    s_j = | d/dm_j  E_{x, theta, delta} || f(x; theta*m) - f(x; (theta + eps*delta)*m) ||^2 |

For small eps the expectation is eps^2 times the trace of the masked network's NTK, so s_j
measures how much weight j contributes to the NTK's size. Data-free: x ~ N(0, I) with the
input's shape and a fresh random initialisation theta for every draw ("new input, new
weight"), both drawn from the draw's seed. Normalisation layers use the batch's statistics.

Which initialisation the fresh weights come from matters: the saliency of a weight depends on
the scale of the layers around it. By default (``pruning.draw_init: model``) every draw is a
new sample of the model's own initialiser, the one the pruned model is then trained from
(PyTorch's defaults for every shipped model: uniform in +-1/sqrt(fan_in) for weights and
biases), as in NTK-SAP's reference code, which scores and trains under the same
initialisation. ``kaiming_normal`` (He normal weights, zero biases) is kept as an option.

A client returns the *signed* mask gradient summed over its draws; the server sums these over
clients and only then takes the absolute value, so the federated score equals the score of
one centralised computation over the union of the draws.

Any ``nn.Module`` works (a CNN, a transformer, an MLP on tabular rows): the model is
evaluated functionally, its output may have any shape, and ``input_shape`` is the per-sample
shape of any rank (``(13,)`` for 13 tabular features). A parameter that no module's
``reset_parameters`` redraws (a ViT's class token or positional embedding, created in its
``__init__``) keeps the model's own value in every draw of the ``model`` scheme; give its
module a ``reset_parameters`` to redraw it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.pruning.masks import Mask
from fpzo_ray.seeding import generator

_NORM_MODULES: tuple[type[nn.Module], ...] = (
    nn.GroupNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def _with_buffers(model: nn.Module, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``params`` plus copies of the model's buffers (none of the model's state changes)."""
    return {**{n: b.clone() for n, b in model.named_buffers()}, **params}


def fresh_parameters(
    model: nn.Module, layout: ParameterLayout, gen: torch.Generator, scheme: str = "model"
) -> dict[str, torch.Tensor]:
    """A new initialisation of ``model``'s parameters (CPU tensors), drawn from ``gen``.

    ``model``: a fresh sample of the model's own initialiser: every module's
    ``reset_parameters`` (the model's own included, when it has one) run on a scratch copy,
    seeded from ``gen`` (the model is untouched); parameters of modules without one keep the
    model's values.
    ``kaiming_normal``: He-normal prunable weights (standard normal for a prunable parameter
    of fewer than two dimensions, which has no fan-in), zero biases, unit normalisation
    scales.
    """
    if scheme == "model":
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        scratch = copy.deepcopy(model).cpu().float()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with torch.no_grad():
                for module in scratch.modules():
                    reset = getattr(module, "reset_parameters", None)
                    if callable(reset):  # the model's own too, when it defines one
                        reset()
        named = dict(scratch.named_parameters())
        return {slot.name: named[slot.name].detach().clone() for slot in layout.slots}
    if scheme != "kaiming_normal":
        raise ValueError(f"pruning.draw_init: unknown {scheme!r}")
    norm_scales = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, _NORM_MODULES)
    }
    params = {}
    for slot in layout.slots:
        if slot.prunable:
            weight = torch.empty(slot.shape)
            if weight.dim() < 2:
                weight.normal_(generator=gen)
            else:
                nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu", generator=gen)
            params[slot.name] = weight
        elif slot.name in norm_scales:
            params[slot.name] = torch.ones(slot.shape)
        else:
            params[slot.name] = torch.zeros(slot.shape)
    return params


def ntk_sap_mask_gradient(
    model: nn.Module,
    layout: ParameterLayout,
    mask: Mask,
    draw_seeds: Sequence[int],
    batch_size: int,
    input_shape: Sequence[int],
    epsilon: float,
    inputs: Sequence[torch.Tensor] | None = None,
    draw_init: str = "model",
) -> torch.Tensor:
    """Signed gradient of the NTK-SAP objective w.r.t. the mask, summed over the draws.

    Data-free (``inputs`` None): draw ``r`` uses Gaussian inputs from its seed. Data-dependent
    (the variant whose federated error drifts under non-IID data): draw ``r`` uses the local
    batch ``inputs[r]`` instead; the weights are fresh from the seed either way, drawn from
    the ``draw_init`` scheme (see :func:`fresh_parameters`).
    Returns a float32 vector over the prunable coordinates, zero where ``mask`` has pruned.
    The model's own weights are not touched: every draw evaluates it functionally, with
    copies of its buffers (a norm that tracks running statistics updates the copies).
    """
    if inputs is not None and len(inputs) != len(draw_seeds):
        raise ValueError(f"{len(inputs)} input batches for {len(draw_seeds)} draws")
    device = next(model.parameters()).device
    prunable = layout.prunable_slots
    kept = mask.prunable_kept.to(torch.float32)
    mask_parts, start = {}, 0
    for slot in prunable:
        part = kept[start : start + slot.numel].view(slot.shape).to(device)
        mask_parts[slot.name] = part.clone().requires_grad_(True)
        start += slot.numel
    total = [torch.zeros(slot.shape, device=device) for slot in prunable]
    was_training = model.training
    model.train()
    try:
        for r, seed in enumerate(draw_seeds):
            gen = generator(seed)
            theta = fresh_parameters(model, layout, gen, draw_init)
            x = (
                torch.randn((batch_size, *input_shape), generator=gen)
                if inputs is None
                else inputs[r]
            )
            delta = {s.name: torch.randn(s.shape, generator=gen) for s in prunable}
            theta = {k: v.to(device) for k, v in theta.items()}
            x = x.to(device)
            clean, perturbed = {}, {}
            for name, value in theta.items():
                if name in mask_parts:
                    clean[name] = value * mask_parts[name]
                    perturbed[name] = (value + epsilon * delta[name].to(device)) * mask_parts[name]
                else:
                    clean[name] = perturbed[name] = value
            out_clean = functional_call(model, _with_buffers(model, clean), (x,))
            out_perturbed = functional_call(model, _with_buffers(model, perturbed), (x,))
            objective = (out_clean - out_perturbed).pow(2).sum()
            grads = torch.autograd.grad(objective, [mask_parts[s.name] for s in prunable])
            for acc, grad in zip(total, grads):
                acc.add_(grad)
    finally:
        model.train(was_training)
    signed = torch.cat([t.flatten() for t in total]).cpu()
    return signed * kept
