"""Pruning-at-initialisation saliencies in plain PyTorch: magnitude, SNIP, GraSP and SynFlow.

They follow the conventions of :mod:`fpzo_ray.pruning.ntk_sap`: the model is evaluated
functionally (``torch.func.functional_call`` with a parameters dict), so its own parameters are
never modified; the weights theta to score are a flat float32 vector in the model's
:class:`ParameterLayout` (the initialisation); the masked network uses ``theta * m`` on the
prunable weights (linear and convolution weights, plus what a module lists in its
``prunable_parameters``: ``models.flat``); every function returns a float32 vector over the
*prunable* coordinates in layout order that is exactly zero where ``mask`` has pruned.
Any ``nn.Module`` works: a CNN, a transformer, an MLP on tabular rows (``input_shape`` is the
per-sample shape, of any rank).

Two kinds of output:

* *contributions*, additive over data: a client computes one on its local batches, the server
  sums them over clients and maps the sum to a ranking with its method's ``keep``
  (``pruning.methods``)
  (``snip_contribution``, ``grasp_contribution``; also ``ntk_sap_mask_gradient``);
* final *scores* (``magnitude_scores``, ``synflow_scores``), already "higher = keep".

The server then always keeps the global (or, with :mod:`fpzo_ray.pruning.scopes`, per-layer)
top-k of the keep-scores among the still-kept coordinates.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from torch.func import functional_call

from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.pruning.masks import Mask
from fpzo_ray.task.losses import PerSampleLoss, cross_entropy

#: A labelled batch: inputs and integer class targets.
Batch = tuple[torch.Tensor, torch.Tensor]

#: Normalisation modules, which SynFlow's linearised network replaces by the identity.
NORM_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
#: Element-wise activation modules, which SynFlow's linearised network replaces by the
#: identity (on the positive values it carries ReLU already is one).
ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.LogSigmoid,
    nn.Tanh,
    nn.Tanhshrink,
    nn.Softplus,
    nn.Softsign,
    nn.Softshrink,
    nn.Hardshrink,
    nn.Threshold,
)

# ------------------------------------------------------------------------------------ helpers


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _kept(mask: Mask) -> torch.Tensor:
    return mask.prunable_kept.to(torch.float32)


def _slot_tensors(
    layout: ParameterLayout, weights: torch.Tensor, device: torch.device
) -> dict[str, torch.Tensor]:
    """theta, one detached tensor per parameter (copies: never views of the caller's vector)."""
    if weights.shape != (layout.total,):
        raise ValueError(
            f"weights must be a flat vector of length {layout.total}, "
            f"got shape {tuple(weights.shape)}"
        )
    return {
        s.name: weights[s.offset : s.offset + s.numel]
        .detach()
        .view(s.shape)
        .to(device=device, dtype=torch.float32, copy=True)
        for s in layout.slots
    }


def _mask_parts(
    layout: ParameterLayout, mask: Mask, device: torch.device, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """The mask as one float tensor per prunable weight (1 = kept)."""
    kept = _kept(mask).to(dtype)
    parts, start = {}, 0
    for slot in layout.prunable_slots:
        parts[slot.name] = kept[start : start + slot.numel].view(slot.shape).to(device)
        start += slot.numel
    return parts


def _with_buffers(model: nn.Module, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``params`` plus *copies* of the model's buffers, so a norm layer that tracks running
    statistics updates the copies and not the model (the project's own norms have none)."""
    return {**{n: b.clone() for n, b in model.named_buffers()}, **params}


def _flatten_prunable(layout: ParameterLayout, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([parts[s.name].flatten() for s in layout.prunable_slots]).cpu()


# ---------------------------------------------------------------------------------- magnitude


def magnitude_scores(layout: ParameterLayout, mask: Mask, weights: torch.Tensor) -> torch.Tensor:
    """|theta| at the kept prunable coordinates: the magnitude-at-initialisation baseline.

    Data-free and needs no forward pass; a final score (higher = keep).
    """
    if weights.shape != (layout.total,):
        raise ValueError(f"weights must be a flat vector of length {layout.total}")
    values = weights.detach().cpu().to(torch.float32)[layout.prunable_positions()]
    return values.abs() * _kept(mask)


# --------------------------------------------------------------------------------------- SNIP


def snip_contribution(
    model: nn.Module,
    layout: ParameterLayout,
    mask: Mask,
    weights: torch.Tensor,
    batches: Sequence[Batch],
    loss: PerSampleLoss = cross_entropy,
) -> torch.Tensor:
    """Signed mask gradient ``sum_batches dL/dm_j`` of the masked network (SNIP).

    SNIP (Lee et al., "SNIP: Single-shot network pruning based on connection sensitivity",
    ICLR 2019) scores weight j by the connection sensitivity ``|dL/dm_j| = |theta_j dL/dw_j|``
    at ``m = 1``. ``L`` is the task's ``loss`` (cross-entropy by default) *summed* over
    samples, so the gradient is additive over samples and batches: clients return this signed
    sum, the server adds the clients' vectors and only then takes the absolute value
    (:func:`keep_scores`), which equals one centralised computation on the union of the
    batches (with batch-statistics norms, additivity holds per batch, not per sample).

    Returns float32 over the prunable coordinates, zero where ``mask`` has pruned.
    """
    device = _device(model)
    theta = _slot_tensors(layout, weights, device)
    masks = {
        n: m.clone().requires_grad_(True) for n, m in _mask_parts(layout, mask, device).items()
    }
    total = {n: torch.zeros_like(m) for n, m in masks.items()}
    was_training = model.training
    model.train()
    try:
        for x, y in batches:
            params = {n: v * masks[n] if n in masks else v for n, v in theta.items()}
            logits = functional_call(model, _with_buffers(model, params), (x.to(device),))
            summed = loss(logits, y.to(device)).sum()
            grads = torch.autograd.grad(summed, list(masks.values()))
            for name, grad in zip(masks, grads):
                total[name].add_(grad)
    finally:
        model.train(was_training)
    return _flatten_prunable(layout, total) * _kept(mask)


# -------------------------------------------------------------------------------------- GraSP


def grasp_hessian_gradient(
    model: nn.Module,
    layout: ParameterLayout,
    mask: Mask,
    weights: torch.Tensor,
    batches: Sequence[Batch],
    temperature: float = 200.0,
    loss: PerSampleLoss = cross_entropy,
) -> torch.Tensor:
    """``H g`` over the prunable weights of the masked network, by double backpropagation.

    ``L(theta) = sum_batches loss(f(x; theta * m) / temperature, y)`` (summed over samples;
    the task's loss, cross-entropy by default),
    ``g = dL/dtheta`` and ``H = d^2L/dtheta^2``, both over the prunable weights only (biases
    and norm parameters fixed), as in the GraSP reference code. At kept coordinates this is
    the gradient and Hessian of the sub-network of kept weights. Two passes, as in the
    reference implementation: ``g`` is first accumulated over *all* batches, then
    ``H g = sum_batches d/dtheta (g_stopped . dL_b/dtheta)``. Never materialises ``H``.

    Returns float32 over the prunable coordinates (not yet masked).
    """
    device = _device(model)
    theta = _slot_tensors(layout, weights, device)
    masks = _mask_parts(layout, mask, device)
    leaves = {n: theta[n].clone().requires_grad_(True) for n in masks}

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = {n: leaves[n] * masks[n] if n in masks else v for n, v in theta.items()}
        logits = functional_call(model, _with_buffers(model, params), (x.to(device),))
        return loss(logits / temperature, y.to(device)).sum()

    was_training = model.training
    model.train()
    try:
        g = [torch.zeros_like(v) for v in leaves.values()]
        for x, y in batches:  # pass 1: the stopped gradient over all batches
            for acc, grad in zip(g, torch.autograd.grad(loss_of(x, y), list(leaves.values()))):
                acc.add_(grad)
        hg = [torch.zeros_like(v) for v in leaves.values()]
        for x, y in batches:  # pass 2: H_b g for every batch, summed
            grads = torch.autograd.grad(loss_of(x, y), list(leaves.values()), create_graph=True)
            z = cast(torch.Tensor, sum((a * b).sum() for a, b in zip(g, grads)))
            for acc, part in zip(hg, torch.autograd.grad(z, list(leaves.values()))):
                acc.add_(part)
    finally:
        model.train(was_training)
    return _flatten_prunable(layout, dict(zip(leaves, hg)))


def grasp_contribution(
    model: nn.Module,
    layout: ParameterLayout,
    mask: Mask,
    weights: torch.Tensor,
    batches: Sequence[Batch],
    temperature: float = 200.0,
    loss: PerSampleLoss = cross_entropy,
) -> torch.Tensor:
    """GraSP's ``S = -theta * (H g)`` at the kept prunable coordinates.

    GraSP (Wang, Zhang & Grosse, "Picking winning tickets before training by preserving
    gradient flow", ICLR 2020) preserves the gradient norm ``g^T g`` through pruning: to first
    order, removing weight j (``delta_j = -theta_j``) changes it by ``2 S_j``. A large ``S_j``
    means removing j reduces gradient flow least, so GraSP *removes* the weights with the
    highest ``S`` and :func:`keep_scores` ranks by ``-S``. Logits are divided
    by ``temperature`` (200 in the paper's code) so the Hessian is not dominated by saturated
    softmaxes.

    Additivity: *within a call* the result is ``sum_b -theta * H_b g`` with one ``g`` summed
    over all the call's batches (the reference implementation's two passes, see
    :func:`grasp_hessian_gradient`), i.e. exactly GraSP on the union of the call's batches.
    *Across calls* ``H g`` is not additive: in the federated version every client computes
    ``-theta * H_c g_c`` with its own local gradient ``g_c`` and the server sums these. That
    drops the cross terms ``H_c g_c'`` (c != c') of the centralised
    ``-theta * (sum_c H_c)(sum_c g_c)``, so it is an approximation of the centralised score.

    Returns float32 over the prunable coordinates, zero where ``mask`` has pruned.
    """
    hg = grasp_hessian_gradient(model, layout, mask, weights, batches, temperature, loss)
    theta = weights.detach().cpu().to(torch.float32)[layout.prunable_positions()]
    return -theta * hg * _kept(mask)


# ------------------------------------------------------------------------------------ SynFlow


def linearised_copy(model: nn.Module) -> nn.Module:
    """A float64 deep copy in eval mode with every normalisation module (:data:`NORM_MODULES`)
    and every element-wise activation module (:data:`ACTIVATION_MODULES`) replaced by the
    identity, SynFlow's standard linearisation.

    What remains (convolutions, linear layers, pooling, residual sums, flattening) maps a
    positive input with positive weights to positive outputs, as SynFlow's path-norm needs:
    ReLU is the identity there, Hardswish, GELU or tanh are not, and a batch-statistics norm
    (or a LayerNorm of the all-ones input) would map the constant input of ones to zero.
    Dropout is the identity in eval mode. Only *modules* are replaced: functions a module's
    own ``forward`` calls (``F.gelu``, ``F.layer_norm``, the softmax and matrix products of an
    attention) stay. With positive inputs and weights a softmax and products of positive
    terms stay positive, so a transformer's scores are the flow through its attention as it
    computes it; a functional normalisation of a constant input, though, gives zero flow
    behind it. Write such a model with ``nn.LayerNorm`` / ``nn.GELU`` modules to linearise it
    fully. A replaced module's parameters (a PReLU slope, norm affines) drop out.
    """
    linear = copy.deepcopy(model)
    replaced = NORM_MODULES + ACTIVATION_MODULES
    for parent in list(linear.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, replaced):
                setattr(parent, name, nn.Identity())
    if isinstance(linear, replaced):
        linear = nn.Identity()
    return linear.double().eval()


def synflow_scores(
    model: nn.Module,
    layout: ParameterLayout,
    mask: Mask,
    weights: torch.Tensor,
    input_shape: Sequence[int],
) -> torch.Tensor:
    """One SynFlow scoring pass: ``|theta * dR/dtheta|`` at the kept prunable coordinates.

    SynFlow (Tanaka, Kunin, Yamins & Ganguli, "Pruning neural networks without any data by
    iteratively conserving synaptic flow", NeurIPS 2020) is data-free:
    ``R = 1^T f(1; |theta| * m)`` on the linearised network (:func:`linearised_copy`), whose
    output sums the products of ``|theta|`` along every input-output path, so a weight's score
    is the total flow through it. Computed in float64 (the path products over- or underflow in
    float32 for deep networks). Biases are set to zero: a bias adds paths that start at that
    layer, and with the all-ones input and no normalisation they would otherwise dominate
    ``R``. Other non-prunable parameters (norm affines are removed with their modules) enter
    as ``|theta|``. Iterative SynFlow (the exponential schedule, re-scoring after each step) is
    the caller's job: this is one pass, a final score (higher = keep).

    The model itself is untouched (a deep copy is evaluated functionally).
    Returns float32 over the prunable coordinates, zero where ``mask`` has pruned.
    """
    device = _device(model)
    linear = linearised_copy(model)
    theta = {n: v.double().abs() for n, v in _slot_tensors(layout, weights, device).items()}
    masks = _mask_parts(layout, mask, device, torch.float64)
    leaves = {n: theta[n].requires_grad_(True) for n in masks}
    present = dict(linear.named_parameters())
    params = {}
    for name, value in theta.items():
        if name not in present:
            continue  # the parameter of a module that linearisation removed
        if name in masks:
            params[name] = leaves[name] * masks[name]
        elif name.split(".")[-1] == "bias":
            params[name] = torch.zeros_like(value)
        else:
            params[name] = value
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    flow = functional_call(linear, params, (ones,)).sum()
    grads = torch.autograd.grad(flow, list(leaves.values()))
    scores = {n: (leaves[n].detach() * grad).abs() for n, grad in zip(leaves, grads)}
    return _flatten_prunable(layout, scores).to(torch.float32) * _kept(mask)
