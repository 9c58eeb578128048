import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fpzo_ray.models.flat import bind_flat_buffer
from fpzo_ray.models.staged import StagedModel
from fpzo_ray.zo import (
    CENTRAL,
    FORWARD,
    EstimatorSpec,
    direction,
    estimate_from_differences,
    fill_gaussian,
    fill_rademacher,
    forward_difference,
    loss_differences,
    perturbation_seeds,
)
from fpzo_ray.zo.client_update import (
    ZOUpdateSpec,
    ZOWorkspace,
    rebuild_estimate,
    replay_local_steps,
    zo_client_update,
)
from fpzo_ray.zo.execution.batched import vmap_differences
from fpzo_ray.zo.layerwise import (
    layerwise_differences,
    layerwise_estimate_from_differences,
    stage_blocks,
)
from fpzo_ray.zo.perturbation import PHILOX, TORCH_CPU

SPECS = [
    EstimatorSpec(e, d, 1e-3, generator)
    for e in (FORWARD, CENTRAL)
    for d in (fill_gaussian, fill_rademacher)
    for generator in (PHILOX, TORCH_CPU)
]


def _spec_id(spec: EstimatorSpec) -> str:
    return f"{spec.scheme.name}-{spec.direction.__name__}-{spec.generator}"


def _quadratic(dim: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, dim, generator=gen) / dim**0.5
    a = q @ q.T + torch.eye(dim)
    b = torch.randn(dim, generator=gen)
    flat = torch.randn(dim, generator=gen)

    def loss() -> float:
        w = flat.double()
        return float(0.5 * w @ a.double() @ w + b.double() @ w)

    grad = a @ flat + b
    return flat, loss, grad


def _mean_estimate(loss, flat, kept_index, spec, k, trials, seed0=0):
    total = None
    for trial in range(trials):
        r = loss_differences(
            loss,
            flat,
            kept_index,
            perturbation_seeds(seed0 + trial, 0, 0, 0, k),
            spec,
            with_estimate=True,
        )
        total = r.estimate if total is None else total + r.estimate
    return total / trials


@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_estimators_are_unbiased_on_the_mask_and_zero_off_it(spec):
    dim = 60
    flat, loss, grad = _quadratic(dim)
    kept_index = torch.arange(0, dim, 2)  # half of the coordinates are pruned
    before = flat.clone()
    mean = _mean_estimate(loss, flat, kept_index, spec, 100, 40)
    estimate = torch.zeros(dim)
    estimate[kept_index] = mean
    truth = torch.zeros(dim)
    truth[kept_index] = grad[kept_index]
    assert F.cosine_similarity(estimate, truth, dim=0) > 0.9
    assert torch.count_nonzero(estimate[1::2]) == 0
    assert torch.equal(flat, before)  # pruned coordinates never touched, kept ones restored


def _error(loss, flat, grad, kept_index, spec, k, trials=30):
    """Mean squared error of single estimates against the true gradient on the kept set."""
    errs = []
    for trial in range(trials):
        r = loss_differences(
            loss,
            flat,
            kept_index,
            perturbation_seeds(500 + trial, 0, 0, 0, k),
            spec,
            with_estimate=True,
        )
        errs.append(float((r.estimate - grad[kept_index]).pow(2).sum()))
    return sum(errs) / trials


def test_variance_falls_with_k_and_with_fewer_trained_coordinates():
    flat, loss, grad = _quadratic(80, seed=1)
    spec = EstimatorSpec(FORWARD, fill_gaussian, 1e-3)
    everything = torch.arange(80)
    assert _error(loss, flat, grad, everything, spec, 200) < 0.2 * _error(
        loss, flat, grad, everything, spec, 10
    )
    # Relative error ~ d / K: the same K on a tenth of the coordinates is far more accurate.
    few = torch.arange(0, 80, 10)
    rel_few = _error(loss, flat, grad, few, spec, 10) / float(grad[few].pow(2).sum())
    rel_all = _error(loss, flat, grad, everything, spec, 10) / float(grad.pow(2).sum())
    assert rel_few < 0.3 * rel_all


@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_server_reconstruction_is_bit_identical_to_client_estimate(spec):
    flat, loss, _ = _quadratic(33, seed=2)
    kept_index = torch.tensor([0, 3, 4, 9, 10, 20, 32])
    seeds = perturbation_seeds(5, 17, 123, 0, 25)
    client = loss_differences(loss, flat, kept_index, seeds, spec, with_estimate=True)
    uploaded = client.loss_differences.clone()  # what travels: 25 float32 scalars
    server = estimate_from_differences(uploaded, seeds, spec, kept_index.numel())
    assert torch.equal(server, client.estimate)
    assert client.num_forward_passes == (26 if spec.scheme is FORWARD else 50)


def test_directions_have_golden_values_on_every_machine():
    seed = perturbation_seeds(0, 0, 0, 0, 1)[0]
    assert seed == 10927254983031365730  # the SplitMix64 fold of (0, PERTURBATION, 0, 0, 0, 0)
    # philox (the default since zo.generator): exact bits, pinned as float32 values.
    assert direction(seed, 4).tolist() == GOLDEN_PHILOX_GAUSSIAN
    assert direction(seed, 4, fill=fill_rademacher).tolist() == [1.0, 1.0, -1.0, -1.0]
    # torch_cpu: torch's CPU Mersenne Twister, the numbers of every run made before.
    gaussian = direction(seed, 4, generator_name=TORCH_CPU)
    rademacher = direction(seed, 4, fill=fill_rademacher, generator_name=TORCH_CPU)
    torch.testing.assert_close(gaussian, GOLDEN_GAUSSIAN, rtol=0, atol=1e-6)
    assert rademacher.tolist() == torch.sign(GOLDEN_GAUSSIAN).tolist()
    for generator_name in (PHILOX, TORCH_CPU):
        signs = direction(seed, 1000, fill=fill_rademacher, generator_name=generator_name)
        assert set(signs.unique().tolist()) == {-1.0, 1.0}


GOLDEN_GAUSSIAN = torch.tensor(
    [-1.495646595954895, -0.5258314609527588, -0.21372805535793304, 0.5552637577056885]
)
GOLDEN_PHILOX_GAUSSIAN = [
    -2.136255979537964,
    -1.2997246980667114,
    0.5722525119781494,
    -0.4587570130825043,
]


def test_perturbation_seeds_are_distinct_per_client_round_and_direction():
    a = perturbation_seeds(0, 1, 2, 0, 10)
    assert len(set(a)) == 10
    assert set(a).isdisjoint(perturbation_seeds(0, 1, 3, 0, 10))
    assert set(a).isdisjoint(perturbation_seeds(0, 2, 2, 0, 10))
    assert set(a).isdisjoint(perturbation_seeds(0, 1, 2, 1, 10))


@pytest.mark.parametrize("estimator", [FORWARD, CENTRAL], ids=["forward", "central"])
def test_perturb_restore_leaves_weights_bit_identical(estimator):
    flat, loss, _ = _quadratic(50, seed=3)
    before = flat.clone()
    for trial in range(30):
        loss_differences(
            loss,
            flat,
            None,
            perturbation_seeds(trial, 0, 0, 0, 7),
            EstimatorSpec(estimator, fill_gaussian, 0.1),
        )
    assert torch.equal(flat, before)
    assert forward_difference(loss, flat, None, [1, 2], 0.1).num_forward_passes == 3


# -- on a real (staged) network ------------------------------------------------------------


def _staged_net(seed: int = 0):
    torch.manual_seed(seed)
    model = StagedModel(
        [
            nn.Sequential(nn.Linear(6, 8), nn.Tanh()),
            nn.Sequential(nn.Linear(8, 8), nn.Tanh()),
            nn.Linear(8, 3),
        ]
    )
    flat, layout = bind_flat_buffer(model)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(seed))
    return model, flat, layout, x, y


def _true_gradient(model, layout, flat, x, y, kept_index):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    from fpzo_ray.bp.client_update import flat_gradient

    return flat_gradient(model, layout)[kept_index]


@pytest.mark.parametrize("estimator", [FORWARD, CENTRAL], ids=["forward", "central"])
def test_layerwise_variant_is_unbiased_and_reconstructs_bit_for_bit(estimator):
    model, flat, layout, x, y = _staged_net()
    kept_index = torch.arange(0, layout.total, 3)
    blocks = stage_blocks(layout, kept_index, 3)
    spec = EstimatorSpec(estimator, fill_gaussian, 1e-3)
    truth = _true_gradient(model, layout, flat, x, y, kept_index)
    before = flat.clone()
    total = torch.zeros(kept_index.numel())
    loss_of = lambda out: float(F.cross_entropy(out, y))  # noqa: E731
    for trial in range(300):
        seeds = perturbation_seeds(trial, 0, 0, 0, 20)
        r = layerwise_differences(model, loss_of, x, flat, blocks, seeds, spec, True)
        assert torch.equal(
            r.estimate, layerwise_estimate_from_differences(r.loss_differences, seeds, spec, blocks)
        )
        total += r.estimate
    assert torch.equal(flat, before)
    assert F.cosine_similarity(total / 300, truth, dim=0) > 0.9
    # Stage 0 runs once for the base pass plus once per direction on it; the last stage
    # runs for every pass.
    assert r.stage_runs[-1] == (21 if estimator is FORWARD else 41)
    assert r.stage_runs[0] < r.stage_runs[1] < r.stage_runs[2]


def test_vmap_batching_matches_the_loop():
    model, flat, layout, x, y = _staged_net(1)
    kept_index = torch.arange(0, layout.total, 2)
    seeds = perturbation_seeds(3, 0, 0, 0, 10)
    spec = EstimatorSpec(CENTRAL, fill_gaussian, 1e-2)
    loop = loss_differences(
        lambda: float(F.cross_entropy(model(x), y)), flat, kept_index, seeds, spec, True
    )
    batched = vmap_differences(
        model, layout, flat, kept_index, x, y, seeds, spec, chunk_size=4, with_estimate=True
    )
    torch.testing.assert_close(
        batched.loss_differences, loop.loss_differences, rtol=1e-3, atol=1e-6
    )
    torch.testing.assert_close(batched.estimate, loop.estimate, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("scope", ["full", "layerwise"])
def test_fedavg_replay_equals_the_clients_own_weights_bit_for_bit(scope):
    model, flat, layout, x, y = _staged_net(2)
    kept_index = torch.arange(1, layout.total, 2)
    blocks = stage_blocks(layout, kept_index, 3) if scope == "layerwise" else None
    ws = ZOWorkspace(model, layout, flat, kept_index, blocks=blocks)
    spec = ZOUpdateSpec(
        EstimatorSpec(FORWARD, fill_rademacher, 1e-3),
        num_perturbations=8,
        perturbation_scope=scope,
        client_lr=0.05,
        client_momentum=0.9,
        clip_inf_norm=0.5,
    )
    seeds = [perturbation_seeds(9, 2, 7, s, 8) for s in range(4)]
    batches = [(x[4 * s : 4 * s + 8], y[4 * s : 4 * s + 8]) for s in range(4)]
    start = ws.trained_weights()
    before = flat.clone()
    client = zo_client_update(ws, batches, seeds, spec, local_steps=True)
    assert torch.equal(flat, before)  # the workspace is left as it was
    replayed = replay_local_steps(start, client.step_differences, seeds, spec, blocks)
    assert torch.equal(replayed, client.final_weights)
    assert not torch.equal(replayed, start)
    # FedSGD: one evaluation at the start weights, the estimate rebuilt by the server.
    sgd = zo_client_update(ws, batches[:1], seeds[:1], spec, local_steps=False)
    assert sgd.final_weights is None
    assert (
        rebuild_estimate(sgd.step_differences[0], seeds[0], spec, start.numel(), blocks).shape
        == start.shape
    )
