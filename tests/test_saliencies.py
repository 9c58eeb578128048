"""Pruning-at-initialisation saliencies against autograd and hand-computed references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fpzo_ray.config import config_from_dict
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.models.flat import ParameterLayout, ParameterSlot, layout_of
from fpzo_ray.pruning.masks import Mask, kept_count, random_mask
from fpzo_ray.pruning.methods import keep_scores
from fpzo_ray.pruning.saliencies import (
    grasp_contribution,
    grasp_hessian_gradient,
    magnitude_scores,
    snip_contribution,
    synflow_scores,
)
from fpzo_ray.pruning.scopes import layerwise_top_k, random_layerwise_mask


class TinyMLP(nn.Module):
    def __init__(self, activation: nn.Module | None = None, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6, bias=bias)
        self.act = activation if activation is not None else nn.Hardswish()
        self.fc2 = nn.Linear(6, 3, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _mlp(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model = TinyMLP(**kwargs)
    flat, layout = bind_flat_buffer(model)
    return model, flat, layout


def _batch(seed: int, n: int = 5, features: int = 4, classes: int = 3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), before[name]), name
        assert param.grad is None, name


# ---------------------------------------------------------------------------------- magnitude


def test_magnitude_on_a_hand_made_vector():
    layout = ParameterLayout(
        (
            ParameterSlot("a.weight", 0, 4, (2, 2), True),
            ParameterSlot("a.bias", 4, 2, (2,), False),
            ParameterSlot("b.weight", 6, 3, (1, 3), True),
        )
    )
    weights = torch.tensor([1.0, -2.0, 3.0, -4.0, 100.0, -100.0, 0.5, -0.25, 7.0])
    mask = Mask(layout, torch.tensor([True, True, False, True, True, False, True]))
    scores = magnitude_scores(layout, mask, weights)
    expected = torch.tensor([1.0, 2.0, 0.0, 4.0, 0.5, 0.0, 7.0])
    assert scores.dtype == torch.float32
    assert torch.equal(scores, expected)


# --------------------------------------------------------------------------------------- SNIP


def test_snip_equals_autograd_connection_sensitivity_on_dense_mlp():
    model, flat, layout = _mlp()
    before = _snapshot(model)
    x, y = _batch(1)
    signed = snip_contribution(model, layout, Mask.dense(layout), flat.clone(), [(x, y)])

    loss = F.cross_entropy(model(x), y, reduction="sum")
    grads = torch.autograd.grad(loss, [model.fc1.weight, model.fc2.weight])
    expected = (
        torch.cat(
            [(model.fc1.weight * grads[0]).flatten(), (model.fc2.weight * grads[1]).flatten()]
        )
        .detach()
        .abs()
    )
    assert signed.shape == (layout.num_prunable,) and signed.dtype == torch.float32
    torch.testing.assert_close(keep_scores("snip", signed), expected, rtol=1e-5, atol=1e-7)
    _assert_unchanged(model, before)


def test_snip_is_additive_over_batches_and_zero_where_pruned():
    model, flat, layout = _mlp(seed=3)
    mask = random_mask(layout, 0.5, torch.Generator().manual_seed(0))
    a, b = _batch(10), _batch(11, n=7)
    both = snip_contribution(model, layout, mask, flat, [a, b])
    split = snip_contribution(model, layout, mask, flat, [a]) + snip_contribution(
        model, layout, mask, flat, [b]
    )
    torch.testing.assert_close(both, split, rtol=1e-5, atol=1e-7)
    # No batch-statistics norm here, so one concatenated batch is the same sum over samples.
    union = (torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))
    torch.testing.assert_close(
        snip_contribution(model, layout, mask, flat, [union]), both, rtol=1e-5, atol=1e-6
    )
    assert torch.count_nonzero(both[~mask.prunable_kept]) == 0
    # (a hidden unit whose outgoing weights are all pruned gives its inputs zero gradient)
    assert torch.count_nonzero(both[mask.prunable_kept]) > 0.5 * mask.num_kept_prunable


def test_snip_uses_the_given_weights_not_the_models():
    model, flat, layout = _mlp()
    x, y = _batch(2)
    other = flat.clone() * 2.0
    first = snip_contribution(model, layout, Mask.dense(layout), other, [(x, y)])
    with torch.no_grad():
        flat.mul_(2.0)  # now the model's own weights equal ``other``
    second = snip_contribution(model, layout, Mask.dense(layout), flat.clone(), [(x, y)])
    torch.testing.assert_close(first, second)


# -------------------------------------------------------------------------------------- GraSP


def _explicit_hessian_gradient(model, layout, mask, weights, batches, temperature):
    """``H g`` with ``H`` materialised by torch.autograd.functional.hessian (float64)."""
    prunable = layout.prunable_slots
    theta0 = torch.cat([weights[s.offset : s.offset + s.numel] for s in prunable]).double()
    fixed = {
        s.name: weights[s.offset : s.offset + s.numel].view(s.shape).double()
        for s in layout.slots
        if not s.prunable
    }
    kept = mask.prunable_kept.double()
    reference = TinyMLP(activation=nn.Tanh()).double()

    def loss(vec: torch.Tensor) -> torch.Tensor:
        params, start = dict(fixed), 0
        for s in prunable:
            params[s.name] = (vec[start : start + s.numel] * kept[start : start + s.numel]).view(
                s.shape
            )
            start += s.numel
        return sum(
            F.cross_entropy(
                functional_call(reference, params, (x.double(),)) / temperature, y, reduction="sum"
            )
            for x, y in batches
        )

    hessian = torch.autograd.functional.hessian(loss, theta0)
    g = torch.autograd.functional.jacobian(loss, theta0)
    return hessian @ g, theta0


@pytest.mark.parametrize("temperature", [200.0, 1.0])
def test_grasp_hessian_gradient_matches_explicit_hessian(temperature):
    model, flat, layout = _mlp(seed=5, activation=nn.Tanh())
    before = _snapshot(model)
    mask = random_mask(layout, 0.7, torch.Generator().manual_seed(1))
    batches = [_batch(20), _batch(21, n=3)]
    expected_hg, theta = _explicit_hessian_gradient(model, layout, mask, flat, batches, temperature)
    hg = grasp_hessian_gradient(model, layout, mask, flat, batches, temperature)
    scale = float(expected_hg.abs().max())
    assert scale > 0
    torch.testing.assert_close(hg.double(), expected_hg, rtol=1e-5, atol=1e-5 * scale)

    scores = grasp_contribution(model, layout, mask, flat, batches, temperature)
    expected = -theta * expected_hg * mask.prunable_kept.double()
    torch.testing.assert_close(
        scores.double(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max())
    )
    assert scores.dtype == torch.float32
    assert torch.count_nonzero(scores[~mask.prunable_kept]) == 0
    assert torch.equal(keep_scores("grasp", scores), -scores)
    _assert_unchanged(model, before)


# ------------------------------------------------------------------------------------ SynFlow


@pytest.mark.parametrize("bias", [False, True])
def test_synflow_matches_the_path_norm_formula(bias):
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Linear(3, 4, bias=bias),
        nn.LayerNorm(4),
        nn.Hardswish(),
        nn.Linear(4, 2, bias=bias),
        nn.ReLU(),
    )
    flat, layout = bind_flat_buffer(model)
    before, weights_before = _snapshot(model), flat.clone()
    w1, w2 = model[0].weight.detach().abs(), model[3].weight.detach().abs()
    n1 = w1.numel()

    scores = synflow_scores(model, layout, Mask.dense(layout), flat, (3,))
    # R = 1^T |W2| |W1| 1; score(W1[i,j]) = |W1[i,j]| * sum_k |W2[k,i]| (times input 1);
    # score(W2[k,i]) = |W2[k,i]| * sum_j |W1[i,j]|. Biases are zeroed, norms/activations gone.
    expected1 = w1 * w2.sum(0)[:, None]
    expected2 = w2 * w1.sum(1)[None, :]
    expected = torch.cat([expected1.flatten(), expected2.flatten()])
    assert scores.dtype == torch.float32 and scores.shape == (layout.num_prunable,)
    torch.testing.assert_close(scores, expected, rtol=1e-6, atol=1e-7)
    assert torch.isclose(expected1.sum(), (w2 @ w1 @ torch.ones(3)).sum())  # sum = R per layer

    # A pruned W1: the flow uses |W1| * m, pruned coordinates score exactly 0.
    kept = torch.ones(layout.num_prunable, dtype=torch.bool)
    kept[torch.tensor([0, 5, 6, n1 + 1])] = False
    mask = Mask(layout, kept)
    masked = synflow_scores(model, layout, mask, flat, (3,))
    m1 = kept[:n1].view_as(w1).double()
    m2 = kept[n1:].view_as(w2).double()
    w1m, w2m = w1.double() * m1, w2.double() * m2
    expected = torch.cat(
        [(w1m * w2m.sum(0)[:, None]).flatten(), (w2m * w1m.sum(1)[None, :]).flatten()]
    ).float()
    torch.testing.assert_close(masked, expected, rtol=1e-6, atol=1e-7)
    assert torch.count_nonzero(masked[~kept]) == 0

    _assert_unchanged(model, before)
    assert torch.equal(flat, weights_before)
    assert isinstance(model[2], nn.Hardswish) and isinstance(model[1], nn.LayerNorm)


def test_all_saliencies_run_on_a_staged_cnn_and_leave_it_untouched():
    model = build_model(config_from_dict({}), (1, 8, 8), 10, init_seed=0)
    flat, layout = bind_flat_buffer(model)
    before = _snapshot(model)
    mask = random_mask(layout, 0.5, torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(3)
    batches = [(torch.randn(6, 1, 8, 8, generator=gen), torch.randint(0, 10, (6,), generator=gen))]
    outputs = {
        "magnitude": magnitude_scores(layout, mask, flat),
        "snip": snip_contribution(model, layout, mask, flat, batches),
        "grasp": grasp_contribution(model, layout, mask, flat, batches),
        "synflow": synflow_scores(model, layout, mask, flat, (1, 8, 8)),
    }
    for name, out in outputs.items():
        assert out.shape == (layout.num_prunable,) and out.dtype == torch.float32, name
        assert torch.isfinite(out).all(), name
        assert torch.count_nonzero(out[~mask.prunable_kept]) == 0, name
        assert torch.count_nonzero(out[mask.prunable_kept]) > 0.5 * mask.num_kept_prunable, name
        assert (keep_scores(name, out) >= 0).all() or name == "grasp"
    _assert_unchanged(model, before)


def test_keep_scores_directions():
    total = torch.tensor([-3.0, 1.0, 2.0])
    assert torch.equal(keep_scores("snip", total), total.abs())
    assert torch.equal(keep_scores("ntk_sap", total), total.abs())
    assert torch.equal(keep_scores("grasp", total), -total)
    assert torch.equal(keep_scores("magnitude", total), total)
    assert torch.equal(keep_scores("synflow", total), total)
    with pytest.raises(ValueError):
        keep_scores("nope", total)


# ------------------------------------------------------------------------------------- scopes


def _layer_counts(layout: ParameterLayout, kept: torch.Tensor) -> list[int]:
    counts, start = [], 0
    for slot in layout.prunable_slots:
        counts.append(int(kept[start : start + slot.numel].sum()))
        start += slot.numel
    return counts


def test_random_layerwise_mask_keeps_per_layer_counts():
    model = build_model(config_from_dict({}), (1, 8, 8), 10, init_seed=0)
    layout = layout_of(model)
    reference = Mask(
        layout, torch.rand(layout.num_prunable, generator=torch.Generator().manual_seed(0)) < 0.2
    )
    a = random_layerwise_mask(layout, reference, torch.Generator().manual_seed(1))
    b = random_layerwise_mask(layout, reference, torch.Generator().manual_seed(2))
    again = random_layerwise_mask(layout, reference, torch.Generator().manual_seed(1))
    assert _layer_counts(layout, a.prunable_kept) == _layer_counts(layout, reference.prunable_kept)
    assert _layer_counts(layout, b.prunable_kept) == _layer_counts(layout, reference.prunable_kept)
    assert not torch.equal(a.prunable_kept, b.prunable_kept)
    assert torch.equal(a.prunable_kept, again.prunable_kept)


def test_layerwise_top_k_exact_counts_and_only_eligible():
    model = build_model(config_from_dict({}), (1, 8, 8), 10, init_seed=0)
    layout = layout_of(model)
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(layout.num_prunable, generator=gen)
    eligible = torch.rand(layout.num_prunable, generator=gen) < 0.6
    scores[~eligible] += 100.0  # ineligible coordinates score highest and must still lose
    kept = layerwise_top_k(scores, eligible, layout, 0.3)
    sizes = [s.numel for s in layout.prunable_slots]
    assert _layer_counts(layout, kept) == [kept_count(n, 0.3) for n in sizes]
    assert not (kept & ~eligible).any()
    start = 0
    for n in sizes:  # within each layer: every kept eligible score >= every dropped one
        part = slice(start, start + n)
        dropped = eligible[part] & ~kept[part]
        assert scores[part][kept[part]].min() >= scores[part][dropped].max()
        start += n

    densities = {s.name: d for s, d in zip(layout.prunable_slots, (0.5, 0.1, 0.05))}
    kept = layerwise_top_k(scores, eligible, layout, densities)
    assert _layer_counts(layout, kept) == [
        kept_count(s.numel, densities[s.name]) for s in layout.prunable_slots
    ]
    assert not (kept & ~eligible).any()
    with pytest.raises(ValueError):
        layerwise_top_k(scores, eligible, layout, 0.9)  # more than a layer's eligible weights


def test_layerwise_top_k_breaks_ties_by_position():
    layout = ParameterLayout(
        (ParameterSlot("a.weight", 0, 4, (4,), True), ParameterSlot("b.weight", 4, 4, (4,), True))
    )
    scores = torch.ones(8)
    eligible = torch.tensor([True, False, True, True, True, True, False, True])
    kept = layerwise_top_k(scores, eligible, layout, 0.5)
    assert kept.tolist() == [True, False, True, False, True, True, False, False]
