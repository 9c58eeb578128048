"""ZO differences with the perturbed models stacked into one forward pass
(``zo.batching: batched``).

A ZO step evaluates the same mini-batch under K + 1 weight vectors (central: 2K). Instead of
K + 1 forward passes of one model, this runs C of them at once as one wider model:

- the first convolution (or linear layer) sees the shared input once, with the C copies'
  filters stacked as C x more output channels;
- later convolutions are grouped convolutions (groups x C) over the stacked channels, so copy
  c only ever sees its own channels;
- normalisation is per copy by construction: GroupNorm over C x G groups, BatchNorm (batch
  statistics, no running buffers) over the stacked channels, each channel belonging to one
  copy, so both are exactly the per-copy statistics;
- linear layers are batched matrix products over (copy, sample, feature) tensors;
- activations, pooling and residual additions act element- or channel-wise.

The K directions are the same seeded ones as the loop's (``zo.perturbation``), applied to
copies of the flat parameter vector; chunks of ``chunk_size`` copies bound the memory (the
activations of C models live at once: the memory meter measures what this mode really
holds). The losses agree with the loop's to float32 rounding, not bit for bit (grouped and
batched kernels sum in another order); a run in this mode is a function of its config and
seed like any other, whatever the number of workers.

Supported modules: those of every shipped model (``Conv2d`` with zero padding, ``Linear``,
``GroupNorm``, ``BatchNorm2d`` without running statistics, ``Flatten``, ``MaxPool2d``,
``AdaptiveAvgPool2d``, ``AvgPool2d``, ``Hardswish``, ``ReLU``, ``Identity``, ``Sequential``,
a ``StagedModel``'s chain and the ResNet ``BasicBlock``), each with its class's own
``forward``; anything else (a module with its own ``forward``: a transformer, a user's
``nn.Module``) raises :class:`CannotStack` naming it. :func:`unsupported_module` finds such a
module before any pass, and ``zo.client_update`` then runs the model in ``loop`` mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fpzo_ray.models.flat import ParameterLayout
from fpzo_ray.models.resnet import BasicBlock
from fpzo_ray.models.staged import StagedModel
from fpzo_ray.task.losses import PerSampleLoss, cross_entropy
from fpzo_ray.zo.estimator import EstimatorSpec, ZOResult, accumulate

#: Grouped convolutions whose groups are at least this long (input channels x kernel size)
#: run on ATen's kernel, shorter ones on oneDNN (see ``_conv``).
ATEN_GROUP_LENGTH = 100

#: Modules that act on each channel (or element) alone: the same on stacked channels.
CHANNELWISE = (nn.Hardswish, nn.ReLU, nn.Identity, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool2d)

#: Activations, applied in place to the stacked outputs of the layer before them (which the
#: forward pass produced and nothing else holds): one activation-sized buffer less.
ACTIVATIONS: dict[type[nn.Module], Callable[..., torch.Tensor]] = {
    nn.Hardswish: F.hardswish,
    nn.ReLU: F.relu,
}


class CannotStack(NotImplementedError):
    """The stacked forward has no form for a module of the model (the message names it)."""


@dataclass(frozen=True)
class Stacked:
    """An activation of C stacked models: ``shared`` (one tensor all copies read: the input),
    ``channels`` (B, C * ch, ...: copy c holds channels c * ch ... (c + 1) * ch - 1) or
    ``features`` (C, B, F)."""

    value: torch.Tensor
    kind: str
    copies: int

    def as_channels(self) -> Stacked:
        """A shared activation repeated for every copy (before a per-copy operation)."""
        if self.kind != "shared":
            return self
        repeats = (1, self.copies) + (1,) * (self.value.dim() - 2)
        return Stacked(self.value.repeat(*repeats), "channels", self.copies)


Params = dict[str, torch.Tensor]  # parameter name -> (C, *shape)


def _max_pool(module: nn.MaxPool2d, value: torch.Tensor) -> torch.Tensor:
    """Max pooling; the 2 x 2, stride 2 case (every shipped model's) as two element-wise
    maxima over rows then columns, the same values 3-6x faster than ``max_pool2d`` on CPU
    tensors with many channels (which also computes indices)."""
    h, w = value.shape[-2:]
    square = module.kernel_size in (2, (2, 2)) and module.stride in (2, (2, 2))
    plain = module.padding in (0, (0, 0)) and module.dilation in (1, (1, 1))
    if not (square and plain and h % 2 == 0 and w % 2 == 0):
        return module(value)
    lead = value.shape[:-2]
    rows = value.contiguous().view(*lead, h // 2, 2, w)
    rows = torch.maximum(rows[..., 0, :], rows[..., 1, :]).view(*lead, h // 2, w // 2, 2)
    return torch.maximum(rows[..., 0], rows[..., 1])


def _conv(module: nn.Conv2d, x: Stacked, params: Params, prefix: str) -> Stacked:
    if module.padding_mode != "zeros":
        raise CannotStack(f"{prefix}: padding_mode {module.padding_mode!r}")
    if x.kind == "shared" and module.groups != 1:
        x = x.as_channels()
    c = x.copies
    weight = params[prefix + "weight"]
    weight = weight.reshape(c * weight.shape[1], *weight.shape[2:])
    bias = params.get(prefix + "bias")
    groups = module.groups if x.kind == "shared" else module.groups * c
    # Grouped convolutions over the stacked copies: ATen's own kernel (one matrix product per
    # group) beat oneDNN by ~1.2x on LeNet-5's 6 x 5 x 5 = 150-long groups here, oneDNN on
    # channels-last input beat it by ~1.15x on the digits CNN's 8 x 3 x 3 = 72. The choice is
    # a function of the layer's shape only, so every worker makes the same one.
    value = x.value
    kernel: contextlib.AbstractContextManager = contextlib.nullcontext()
    if groups > 1 and value.device.type == "cpu":
        if weight[0].numel() >= ATEN_GROUP_LENGTH:  # input channels x kernel of a group
            kernel = torch.backends.mkldnn.flags(
                enabled=False, deterministic=None, allow_tf32=None, fp32_precision=None
            )
        else:
            value = value.contiguous(memory_format=torch.channels_last)
    with kernel:
        out = F.conv2d(
            value,
            weight,
            None if bias is None else bias.reshape(-1),
            module.stride,
            module.padding,
            module.dilation,
            groups,
        )
    return Stacked(out, "channels", c)


def _linear(module: nn.Linear, x: Stacked, params: Params, prefix: str) -> Stacked:
    c = x.copies
    weight = params[prefix + "weight"]  # (C, out, in)
    bias = params.get(prefix + "bias")  # (C, out)
    if x.kind == "shared":  # (B, in): every copy reads the same input
        flat_bias = None if bias is None else bias.reshape(-1)
        out = F.linear(x.value, weight.reshape(-1, weight.shape[2]), flat_bias)
        return Stacked(out.view(out.shape[0], c, -1).transpose(0, 1), "features", c)
    if x.kind != "features":
        raise CannotStack(f"{prefix}: a linear layer on stacked channels")
    if bias is None:
        return Stacked(torch.bmm(x.value, weight.transpose(1, 2)), "features", c)
    return Stacked(torch.baddbmm(bias.unsqueeze(1), x.value, weight.transpose(1, 2)), "features", c)


def _group_norm(module: nn.GroupNorm, x: Stacked, params: Params, prefix: str) -> Stacked:
    if x.kind == "shared" and not module.affine:
        return Stacked(module(x.value), "shared", x.copies)
    x = x.as_channels()
    c = x.copies
    weight = params[prefix + "weight"].reshape(-1) if module.affine else None
    bias = params[prefix + "bias"].reshape(-1) if module.affine else None
    out = F.group_norm(x.value.contiguous(), module.num_groups * c, weight, bias, module.eps)
    return Stacked(out, "channels", c)


def _batch_norm(module: nn.BatchNorm2d, x: Stacked, params: Params, prefix: str) -> Stacked:
    if module.track_running_stats:
        raise CannotStack(f"{prefix}: BatchNorm with running statistics")
    if x.kind == "shared" and not module.affine:
        return Stacked(module(x.value), "shared", x.copies)
    x = x.as_channels()
    weight = params[prefix + "weight"].reshape(-1) if module.affine else None
    bias = params[prefix + "bias"].reshape(-1) if module.affine else None
    out = F.batch_norm(x.value, None, None, weight, bias, True, 0.0, module.eps)
    return Stacked(out, "channels", x.copies)


def _flatten(module: nn.Flatten, x: Stacked) -> Stacked:
    if module.start_dim != 1 or module.end_dim != -1:
        raise CannotStack("Flatten other than start_dim=1")
    if x.kind == "shared":
        return Stacked(x.value.flatten(1), "shared", x.copies)
    if x.kind == "features":
        return x
    batch = x.value.shape[0]
    return Stacked(x.value.reshape(batch, x.copies, -1).transpose(0, 1), "features", x.copies)


def _block(module: BasicBlock, x: Stacked, params: Params, prefix: str) -> Stacked:
    out = forward(module.conv1, x, params, prefix + "conv1.")
    out = forward(module.act1, forward(module.norm1, out, params, prefix + "norm1."), params, "")
    out = forward(
        module.norm2,
        forward(module.conv2, out, params, prefix + "conv2."),
        params,
        prefix + "norm2.",
    )
    shortcut = forward(module.shortcut, x, params, prefix + "shortcut.").as_channels()
    return Stacked(module.act2(out.value + shortcut.value), "channels", x.copies)


def forward(module: nn.Module, x: Stacked, params: Params, prefix: str = "") -> Stacked:
    """``module`` applied to C stacked models at once (``prefix``: its parameters' names)."""
    if isinstance(module, (nn.Sequential, nn.ModuleList)):
        for name, child in module.named_children():
            x = forward(child, x, params, f"{prefix}{name}.")
        return x
    if isinstance(module, nn.Conv2d):
        return _conv(module, x, params, prefix)
    if isinstance(module, nn.Linear):
        return _linear(module, x, params, prefix)
    if isinstance(module, nn.GroupNorm):
        return _group_norm(module, x, params, prefix)
    if isinstance(module, nn.BatchNorm2d):
        return _batch_norm(module, x, params, prefix)
    if isinstance(module, nn.Flatten):
        return _flatten(module, x)
    if isinstance(module, BasicBlock):
        return _block(module, x, params, prefix)
    if isinstance(module, nn.MaxPool2d) and x.kind != "features":
        return Stacked(_max_pool(module, x.value), x.kind, x.copies)
    if type(module) in ACTIVATIONS and x.kind != "shared":
        # In place: in the shipped models an activation follows a convolution, a norm, a
        # linear layer or a residual sum, whose fresh output nothing else reads.
        return Stacked(ACTIVATIONS[type(module)](x.value, inplace=True), x.kind, x.copies)
    if isinstance(module, CHANNELWISE):
        if x.kind == "features" and not isinstance(module, (nn.Hardswish, nn.ReLU, nn.Identity)):
            raise CannotStack(f"{prefix}: {type(module).__name__} on features")
        return Stacked(module(x.value), x.kind, x.copies)
    if isinstance(module, StagedModel):
        return forward(module.stages, x, params, f"{prefix}stages.")
    raise CannotStack(
        f"zo.batching batched: no stacked form for "
        f"{type(module).__name__} ({prefix.rstrip('.') or 'the model'})"
    )


def _same_forward(module: nn.Module, base: type[nn.Module], *methods: str) -> bool:
    """Whether ``module`` computes what ``base`` does: its class keeps ``base``'s methods."""
    return all(getattr(type(module), m) is getattr(base, m) for m in ("forward", *methods))


#: Leaf modules the stacked forward handles, each with the methods its class must keep.
_LEAVES: tuple[tuple[type[nn.Module], tuple[str, ...]], ...] = (
    (nn.Conv2d, ("_conv_forward",)),
    (nn.Linear, ()),
    (nn.GroupNorm, ()),
    (nn.BatchNorm2d, ()),
    (nn.Flatten, ()),
    (nn.MaxPool2d, ()),
    (nn.AdaptiveAvgPool2d, ()),
    (nn.AvgPool2d, ()),
    (nn.Hardswish, ()),
    (nn.ReLU, ()),
    (nn.Identity, ()),
)


def _leaf_problem(module: nn.Module) -> str | None:
    """Why the stacked form of a supported leaf does not apply to this instance, if it does not."""
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        return f"padding_mode {module.padding_mode!r}"
    if isinstance(module, nn.BatchNorm2d) and module.track_running_stats:
        return "running statistics"
    if isinstance(module, nn.MaxPool2d) and module.return_indices:
        return "return_indices"
    if isinstance(module, nn.Flatten) and (module.start_dim != 1 or module.end_dim != -1):
        return f"start_dim={module.start_dim}, end_dim={module.end_dim}"
    return None


def unsupported_module(model: nn.Module) -> str | None:
    """The first module of ``model`` that :func:`forward` cannot stack, as
    ``"<module.QualifiedType> at <path>"`` (``<path>`` of ``named_modules``, ``(the model)`` for
    the root), or ``None`` when the whole model can be stacked.

    A static walk in the order the stacked forward visits the modules; only types (and the
    settings that exclude one, such as BatchNorm's running statistics) are checked. A
    supported type's subclass counts only if it keeps the class's ``forward``. What depends on
    the activations' shapes (a linear layer fed by an unflattened convolution) is found when
    the pass runs, as a :class:`CannotStack` error.
    """
    return _unsupported(model, "")


def _describe(module: nn.Module, path: str, why: str | None = None) -> str:
    kind = type(module)
    where = path or "(the model)"
    return f"{kind.__module__}.{kind.__qualname__} at {where}" + (f" ({why})" if why else "")


def _unsupported(module: nn.Module, path: str) -> str | None:
    def child(name: str, sub: nn.Module) -> str | None:
        return _unsupported(sub, f"{path}.{name}" if path else name)

    if isinstance(module, nn.ModuleList) or (
        isinstance(module, nn.Sequential) and _same_forward(module, nn.Sequential)
    ):
        for name, sub in module.named_children():
            if (found := child(name, sub)) is not None:
                return found
        return None
    if isinstance(module, StagedModel) and _same_forward(module, StagedModel, "forward_from"):
        return child("stages", module.stages)
    if type(module) is BasicBlock:
        for name in ("conv1", "norm1", "act1", "conv2", "norm2", "shortcut", "act2"):
            if (found := child(name, getattr(module, name))) is not None:
                return found
        return None
    for leaf, methods in _LEAVES:
        if isinstance(module, leaf):
            if not _same_forward(module, leaf, *methods):
                return _describe(module, path, f"its own forward, not {leaf.__name__}'s")
            why = _leaf_problem(module)
            return None if why is None else _describe(module, path, why)
    # a container with a forward of its own (a torchvision ResNet) cannot be stacked whatever
    # it holds; the first submodule that could not be either is named too
    inside = next(
        (found for name, sub in module.named_children() if (found := child(name, sub))), None
    )
    return _describe(module, path, f"its own forward; inside it, {inside}" if inside else None)


def stacked_losses(
    model: nn.Module,
    layout: ParameterLayout,
    flats: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: PerSampleLoss = cross_entropy,
) -> torch.Tensor:
    """The batch's mean ``loss`` (per sample: ``task.losses``) under each of the C flat
    parameter vectors in the rows of ``flats`` (C, P): a (C,) float32 tensor."""
    copies = flats.shape[0]
    params = {
        s.name: flats[:, s.offset : s.offset + s.numel].view(copies, *s.shape) for s in layout.slots
    }
    for alias, name in layout.aliases:  # tied parameters: every holder reads the same values
        params[alias] = params[name]
    logits = forward(model, Stacked(x, "shared", copies), params)
    if logits.kind != "features":
        raise CannotStack("the model's output is not per copy")
    outputs = logits.value.reshape(copies * y.shape[0], *logits.value.shape[2:])
    per_sample = loss(outputs, y.repeat(copies, *(1,) * (y.ndim - 1)))
    return per_sample.view(copies, -1).mean(1)


def _perturbed_rows(
    base: torch.Tensor,
    kept_index: torch.Tensor | None,
    chunk: Sequence[tuple[int, float]],
    directions: dict[int, torch.Tensor],
    sigma: float,
) -> torch.Tensor:
    """(len(chunk), P): row i is ``base`` with direction k scaled by sign x sigma added on the
    trained coordinates (``kept_index``; None: all of them), for the i-th (k, sign) of
    ``chunk`` (k = -1: ``base`` itself).

    Each perturbed coordinate is base + (sign x sigma x z) with the step rounded first, the
    same two roundings whether the model is dense (written row by row) or masked (scattered).
    """
    stacked = torch.empty(len(chunk), base.numel(), dtype=base.dtype, device=base.device)
    if kept_index is None:
        for row, (k, sign) in enumerate(chunk):
            if k < 0:
                stacked[row].copy_(base)
            else:
                step = directions[k] * (sign * sigma)
                torch.add(base, step, out=stacked[row])
        return stacked
    stacked.copy_(base.expand(len(chunk), -1))
    steps = base.new_zeros(len(chunk), kept_index.numel())
    for row, (k, sign) in enumerate(chunk):
        if k >= 0:
            steps[row].add_(directions[k], alpha=sign * sigma)
    return stacked.index_add_(1, kept_index, steps)


def stacked_differences(
    model: nn.Module,
    layout: ParameterLayout,
    flat: torch.Tensor,
    kept_index: torch.Tensor | None,
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: Sequence[int],
    spec: EstimatorSpec,
    chunk_size: int = 0,
    with_estimate: bool = False,
    losses_fn: Callable[..., torch.Tensor] | None = None,
    loss: PerSampleLoss = cross_entropy,
) -> ZOResult:
    """The ZO step of ``estimator.loss_differences`` with its ``spec.num_passes(K)`` forward
    passes stacked, ``chunk_size`` models a pass (0: all of them in one).

    The model must pass :func:`unsupported_module` (``zo.client_update`` checks it once per
    workspace and runs any other model in loop mode)."""
    base = flat.detach()
    dim = layout.total if kept_index is None else kept_index.numel()
    scheme = spec.scheme
    signs = range(len(scheme.signs))
    # Every model of the step in order: the base (when the scheme has a base pass), then each
    # direction with each of the scheme's signs; each row of a chunk is one of them, as
    # (k, sign index), k = -1 for the base.
    rows: list[tuple[int, int]] = [(-1, 0)] if scheme.needs_base else []
    rows += [(k, i) for k in range(len(seeds)) for i in signs]
    size = chunk_size if chunk_size > 0 else len(rows)
    alive: dict[int, torch.Tensor] = {}  # directions drawn and not yet accumulated
    losses: dict[tuple[int, int], float] = {}
    differences = torch.empty(len(seeds), dtype=torch.float32)
    estimate = torch.zeros(dim, dtype=torch.float32) if with_estimate else None
    done = 0  # directions whose difference is known (and accumulated, in order)
    drawn = spec.directions(seeds, dim, base.device)  # first needed in k order
    with torch.no_grad():
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            for k, _ in chunk:
                if k >= 0 and k not in alive:
                    alive[k] = next(drawn).clone()
            shifts = [(k, scheme.signs[i] if k >= 0 else 0.0) for k, i in chunk]
            stacked = _perturbed_rows(base, kept_index, shifts, alive, spec.sigma)
            values = (losses_fn or stacked_losses)(model, layout, stacked, x, y, loss).tolist()
            losses.update(zip(chunk, values))
            # Each direction whose losses are all in: its difference, then (in k order, as
            # the server's rebuild does) its share of the estimate; then it is dropped.
            base_loss = losses.get((-1, 0))
            while done < len(seeds) and all((done, i) in losses for i in signs):
                row = [losses[done, i] for i in signs]
                differences[done] = scheme.difference(row, base_loss)
                if estimate is not None:
                    accumulate(estimate, float(differences[done]), spec.scale, alive[done].cpu())
                del alive[done]
                done += 1
    per_direction = [[losses[k, i] for i in signs] for k in range(len(seeds))]
    reported = scheme.base_loss(per_direction, losses.get((-1, 0)))
    if estimate is not None:
        estimate.div_(len(seeds))
    return ZOResult(reported, differences, estimate, spec.num_passes(len(seeds)))
