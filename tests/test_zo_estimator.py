import torch

from fpzo_ray.zo import estimate_from_differences, forward_difference, perturbation_seeds


def _quadratic(dim: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, dim, generator=gen) / dim ** 0.5
    a = q @ q.T + torch.eye(dim)
    b = torch.randn(dim, generator=gen)
    flat = torch.randn(dim, generator=gen)

    def loss() -> float:
        w = flat.double()
        return float(0.5 * w @ a.double() @ w + b.double() @ w)

    grad = a @ flat + b
    return flat, loss, grad


def test_estimate_approaches_true_gradient_on_the_mask_and_is_zero_off_it():
    dim = 60
    flat, loss, grad = _quadratic(dim)
    kept_index = torch.arange(0, dim, 2)  # half of the coordinates are pruned
    before = flat.clone()
    total = torch.zeros(kept_index.numel())
    for trial in range(40):
        seeds = perturbation_seeds(trial, 0, 0, 0, 100)
        result = forward_difference(loss, flat, kept_index, seeds, sigma=1e-3, with_estimate=True)
        total += result.estimate
    estimate = torch.zeros(dim)
    estimate[kept_index] = total / 40
    true_on_mask = torch.zeros(dim)
    true_on_mask[kept_index] = grad[kept_index]
    cosine = torch.nn.functional.cosine_similarity(estimate, true_on_mask, dim=0)
    assert cosine > 0.9
    off = torch.ones(dim, dtype=torch.bool)
    off[kept_index] = False
    assert torch.count_nonzero(estimate[off]) == 0
    assert torch.equal(flat, before)  # pruned coordinates never touched, kept ones restored


def test_more_perturbations_give_a_better_estimate():
    flat, loss, grad = _quadratic(40, seed=1)

    def cosine(k: int) -> float:
        values = []
        for trial in range(20):
            seeds = perturbation_seeds(100 + trial, 0, 0, 0, k)
            g = forward_difference(loss, flat, None, seeds, 1e-3, with_estimate=True).estimate
            values.append(float(torch.nn.functional.cosine_similarity(g, grad, dim=0)))
        return sum(values) / len(values)

    assert cosine(200) > cosine(5) + 0.3


def test_server_reconstruction_is_bit_identical_to_client_estimate():
    flat, loss, _ = _quadratic(33, seed=2)
    kept_index = torch.tensor([0, 3, 4, 9, 10, 20, 32])
    seeds = perturbation_seeds(5, 17, 123, 0, 25)
    client = forward_difference(loss, flat, kept_index, seeds, 1e-3, with_estimate=True)
    # What travels: 25 float32 scalars; the server knows the seeds.
    uploaded = client.loss_differences.clone()
    server = estimate_from_differences(uploaded, seeds, 1e-3, kept_index.numel())
    assert torch.equal(server, client.estimate)
    assert client.num_forward_passes == 26


def test_perturbation_seeds_are_distinct_per_client_round_and_direction():
    a = perturbation_seeds(0, 1, 2, 0, 10)
    assert len(set(a)) == 10
    assert set(a).isdisjoint(perturbation_seeds(0, 1, 3, 0, 10))
    assert set(a).isdisjoint(perturbation_seeds(0, 2, 2, 0, 10))
    assert a == perturbation_seeds(0, 1, 2, 0, 10)


def test_perturb_restore_leaves_weights_bit_identical():
    flat, loss, _ = _quadratic(50, seed=3)
    before = flat.clone()
    for trial in range(30):
        forward_difference(loss, flat, None, perturbation_seeds(trial, 0, 0, 0, 7), 0.1)
    assert torch.equal(flat, before)
