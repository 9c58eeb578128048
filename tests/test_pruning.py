import pytest
import torch

from fpzo_ray.config import config_from_dict
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.protocol import pruning_draw_seeds
from fpzo_ray.pruning import (
    Mask,
    keep_top_k,
    kept_count,
    kept_fractions,
    ntk_sap_mask_gradient,
    prune_iteratively,
    random_mask,
)


def _digits_model():
    cfg = config_from_dict({})
    model = build_model(cfg, (1, 8, 8), 10, init_seed=0)
    flat, layout = bind_flat_buffer(model)
    return model, layout


TWO_DRAWS = config_from_dict({"pruning": {"draws_per_client": 2}})


def test_federated_sum_of_data_free_scores_equals_centralised():
    model, layout = _digits_model()
    mask = random_mask(layout, 0.6, torch.Generator().manual_seed(0))
    clients = [3, 8, 11, 40]
    per_client = [
        ntk_sap_mask_gradient(
            model, layout, mask, pruning_draw_seeds(TWO_DRAWS, 2, c), 8, (1, 8, 8), 0.01
        )
        for c in clients
    ]
    federated = torch.stack(per_client).sum(0).abs()
    union = [s for c in clients for s in pruning_draw_seeds(TWO_DRAWS, 2, c)]
    central = ntk_sap_mask_gradient(model, layout, mask, union, 8, (1, 8, 8), 0.01).abs()
    torch.testing.assert_close(federated, central, rtol=1e-5, atol=1e-7)
    assert torch.count_nonzero(central[~mask.prunable_kept]) == 0
    assert torch.count_nonzero(central[mask.prunable_kept]) > 0.9 * mask.num_kept_prunable
    # The resulting global top-k masks agree and have exactly the requested size.
    k = kept_count(layout.num_prunable, 0.3)
    a = keep_top_k(federated, mask.prunable_kept, k)
    b = keep_top_k(central, mask.prunable_kept, k)
    assert int(a.sum()) == k and torch.equal(a, b)


def test_saliency_depends_on_seeds_not_on_the_model_weights():
    model, layout = _digits_model()
    mask = Mask.dense(layout)
    seeds = pruning_draw_seeds(config_from_dict({"seed": 1}), 0, 0)
    first = ntk_sap_mask_gradient(model, layout, mask, seeds, 4, (1, 8, 8), 0.01)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    second = ntk_sap_mask_gradient(model, layout, mask, seeds, 4, (1, 8, 8), 0.01)
    assert torch.equal(first, second)  # data-free: fresh initialisation for every draw


def test_iterative_schedule_reaches_exact_density_and_never_revives():
    model, layout = _digits_model()
    history = []

    def saliency(t, mask):
        history.append(mask.prunable_kept.clone())
        g = torch.Generator().manual_seed(t)
        return torch.rand(layout.num_prunable, generator=g)

    final = prune_iteratively(Mask.dense(layout), 0.1, 5, saliency)
    assert final.num_kept_prunable == kept_count(layout.num_prunable, 0.1)
    assert abs(final.density - 0.1) < 1 / layout.num_prunable
    history.append(final.prunable_kept)
    for earlier, later in zip(history, history[1:]):
        assert not (later & ~earlier).any()
    assert [round(f, 6) for f in kept_fractions(0.1, 2)] == [round(0.1**0.5, 6), 0.1]


def test_top_k_breaks_ties_by_position():
    scores = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.5])
    eligible = torch.tensor([True, True, False, True, True])
    kept = keep_top_k(scores, eligible, 2)
    assert kept.tolist() == [False, True, False, True, False]


def test_mask_wire_bytes_takes_the_smaller_encoding():
    _, layout = _digits_model()
    p = layout.num_prunable
    assert Mask.dense(layout).wire_bytes() == 0
    sparse = random_mask(layout, 0.01, torch.Generator().manual_seed(0))
    assert sparse.wire_bytes() == 4 * sparse.num_kept_prunable < (p + 7) // 8
    half = random_mask(layout, 0.5, torch.Generator().manual_seed(0))
    assert half.wire_bytes() == (p + 7) // 8


def test_fan_in_rescaling_restores_each_layers_output_scale():
    model, layout = _digits_model()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    mask = random_mask(layout, 0.25, torch.Generator().manual_seed(0))
    scaled = mask.fan_in_rescaled(flat)
    density = mask.layer_densities()
    for slot in layout.slots:
        ratio = (
            scaled[slot.offset : slot.offset + slot.numel]
            / flat[slot.offset : slot.offset + slot.numel]
        )
        expected = density[slot.name] ** -0.5 if slot.prunable else 1.0
        torch.testing.assert_close(ratio, torch.full_like(ratio, expected))


def test_ntk_sap_mask_gradient_matches_finite_differences_of_its_objective():
    """The saliency is the derivative of E||f(x; th*m) - f(x; (th + eps*d)*m)||^2 in m_j."""
    from torch import nn

    from fpzo_ray.models.flat import layout_of
    from fpzo_ray.pruning.ntk_sap import fresh_parameters
    from fpzo_ray.seeding import generator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    layout = layout_of(model)
    mask = random_mask(layout, 0.7, torch.Generator().manual_seed(1))
    seed, eps = 123, 0.05
    got = ntk_sap_mask_gradient(model.float(), layout, mask, [seed], 5, (4,), eps).double()
    model.double()

    def objective(m: torch.Tensor) -> float:
        gen = generator(seed)  # the same draws as the saliency: weights, inputs, perturbation
        theta = {k: v.double() for k, v in fresh_parameters(model, layout, gen).items()}
        x = torch.randn((5, 4), generator=gen).double()
        delta = {
            s.name: torch.randn(s.shape, generator=gen).double() for s in layout.prunable_slots
        }
        clean, perturbed, start = {}, {}, 0
        for slot in layout.slots:
            if slot.prunable:
                part = m[start : start + slot.numel].view(slot.shape)
                start += slot.numel
                clean[slot.name] = theta[slot.name] * part
                perturbed[slot.name] = (theta[slot.name] + eps * delta[slot.name]) * part
            else:
                clean[slot.name] = perturbed[slot.name] = theta[slot.name]
        f = torch.func.functional_call
        return float((f(model, clean, (x,)) - f(model, perturbed, (x,))).pow(2).sum())

    m0 = mask.prunable_kept.double()
    h = 1e-6
    for j in torch.nonzero(mask.prunable_kept).flatten()[:6].tolist():
        up, down = m0.clone(), m0.clone()
        up[j] += h
        down[j] -= h
        numeric = (objective(up) - objective(down)) / (2 * h)
        assert abs(float(got[j]) - numeric) <= 1e-4 * max(1.0, abs(numeric)), j


def test_ntk_sap_draws_fresh_samples_of_the_initialisation_the_model_is_trained_from():
    """Default (``pruning.draw_init: model``): every draw is a new sample of the model's own
    initialiser (PyTorch's defaults: weights and biases uniform in +-1/sqrt(fan_in)); the
    option ``kaiming_normal`` draws He-normal weights (std sqrt(2/fan_in)) and zero biases."""
    import math

    from fpzo_ray.models.flat import layout_of
    from fpzo_ray.pruning.ntk_sap import fresh_parameters
    from fpzo_ray.seeding import generator

    cfg = config_from_dict({"data": {"name": "mnist"}})
    assert cfg.pruning.draw_init == "model"
    model = build_model(cfg, (1, 28, 28), 10, init_seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layout = layout_of(model)
    drawn = fresh_parameters(model, layout, generator(42))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    again = fresh_parameters(model, layout, generator(42))
    other = fresh_parameters(model, layout, generator(43))
    kaiming = fresh_parameters(model, layout, generator(42), "kaiming_normal")
    for slot in layout.prunable_slots:
        fan_in = math.prod(slot.shape[1:])
        bound = 1 / math.sqrt(fan_in)
        w = drawn[slot.name]
        assert torch.equal(w, again[slot.name]) and not torch.equal(w, other[slot.name])
        assert float(w.abs().max()) <= bound
        if w.numel() >= 1000:  # uniform(-b, b) has std b / sqrt(3)
            assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
            assert float(kaiming[slot.name].std()) == pytest.approx(math.sqrt(2 / fan_in), rel=0.1)
        # The same family as the trained model's own initial weights.
        assert float(before[slot.name].abs().max()) <= bound
        bias = slot.name.replace(".weight", ".bias")
        assert float(drawn[bias].abs().max()) <= bound and bool(drawn[bias].ne(0).any())
        assert not bool(kaiming[bias].ne(0).any())
