"""Any ``nn.Module`` in every ZO mode, pruning and saliency: a tiny Vision Transformer (raw
class token and positional embedding, q/k/v/out ``nn.Linear`` attention, LayerNorm, GELU) and
an MLP on 13 tabular features; difference schemes as objects, a researcher's own included."""

from __future__ import annotations

import logging
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fpzo_ray.models.flat import bind_flat_buffer, layout_of
from fpzo_ray.models.staged import StagedModel
from fpzo_ray.pruning.masks import Mask, random_mask
from fpzo_ray.pruning.ntk_sap import ntk_sap_mask_gradient
from fpzo_ray.pruning.saliencies import (
    grasp_contribution,
    linearised_copy,
    magnitude_scores,
    snip_contribution,
    synflow_scores,
)
from fpzo_ray.zo import (
    CENTRAL,
    FORWARD,
    DifferenceScheme,
    EstimatorSpec,
    direction,
    estimate_from_differences,
    fill_gaussian,
    fill_rademacher,
    loss_differences,
    perturbation_seeds,
)
from fpzo_ray.zo.client_update import ZOWorkspace, zo_client_update
from fpzo_ray.zo.estimator import ZOUpdateSpec
from fpzo_ray.zo.execution.stacked import unsupported_module
from fpzo_ray.zo.layerwise import (
    blocks_for,
    layerwise_differences,
    layerwise_estimate_from_differences,
    stage_blocks_for,
)

#: A researcher's scheme, known to no ZO code path by name: the second-order one-sided
#: difference (-3 L(w) + 4 L(w + s z) - L(w + 2 s z)) / 2s, exact on quadratics.
ONE_SIDED = DifferenceScheme(
    "one_sided", signs=(1.0, 2.0), weights=(4.0, -1.0), base_weight=-3.0, span=2.0
)


class Backward(DifferenceScheme):
    """A subclass: backward differences L(w) - L(w - s z), written by overriding."""

    def __init__(self) -> None:
        super().__init__("backward", signs=(-1.0,), weights=(-1.0,), base_weight=1.0)

    def difference(self, losses, base):
        return base - losses[0]


BACKWARD = Backward()
SCHEMES = [FORWARD, CENTRAL, ONE_SIDED, BACKWARD]


class TinyViT(nn.Module):
    """4 x 4 patches of a (1, 8, 8) image, one pre-norm transformer block, a class token."""

    prunable_parameters = ("pos_embedding",)

    def __init__(self, num_classes: int = 3, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(16, dim)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(0.02 * torch.randn(1, 5, dim))
        self.register_buffer("attention_scale", torch.tensor((dim // heads) ** -0.5))
        self.norm1 = nn.LayerNorm(dim)
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        patches = x.reshape(b, 1, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(b, 4, 16)
        cls = self.cls_token.expand(b, -1, -1)
        tokens = torch.cat([cls, self.embed(patches)], 1) + self.pos_embedding
        tokens = tokens + self._attend(self.norm1(tokens))
        tokens = tokens + self.mlp(self.norm2(tokens))
        return self.head(self.norm(tokens[:, 0]))

    def _attend(self, h: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        weights = torch.softmax(q @ k.transpose(-2, -1) * self.attention_scale, -1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, n, d))


def _mlp_layers() -> list[nn.Module]:
    return [
        nn.Sequential(nn.Linear(13, 24), nn.ReLU()),
        nn.Sequential(nn.Linear(24, 12), nn.Hardswish()),
        nn.Linear(12, 3),
    ]


def _build(name: str, seed: int = 0):
    """(model, flat, layout, x, y, per-sample input shape)."""
    torch.manual_seed(seed)
    model: nn.Module
    shape: tuple[int, ...]
    if name == "vit":
        model, shape = TinyViT(), (1, 8, 8)
    elif name == "mlp":  # a plain nn.Sequential on 13 tabular features
        model, shape = nn.Sequential(*_flatten(_mlp_layers())), (13,)
    else:  # a StagedModel of the MLP's layers, for the layer-wise scope
        model, shape = StagedModel(_mlp_layers()), (13,)
    flat, layout = bind_flat_buffer(model)
    gen = torch.Generator().manual_seed(seed + 1)
    x, y = torch.randn(6, *shape, generator=gen), torch.randint(0, 3, (6,), generator=gen)
    return model, flat, layout, x, y, shape


def _flatten(layers: list[nn.Module]) -> list[nn.Module]:
    out: list[nn.Module] = []
    for layer in layers:
        out.extend(layer.children() if isinstance(layer, nn.Sequential) else [layer])
    return out


def _client(ws, x, y, seeds, estimator, batching, chunk=0):
    spec = ZOUpdateSpec(
        estimator, num_perturbations=len(seeds), batching=batching, chunk_size=chunk
    )
    result = zo_client_update(ws, [(x, y)], [seeds], spec, local_steps=False, with_estimate=True)
    return result.step_results[0]


# -- difference schemes and direction kinds as objects -------------------------------------


def test_scheme_arithmetic():
    assert (FORWARD.scale(0.1), CENTRAL.scale(0.1)) == (1 / 0.1, 1 / (2 * 0.1))
    assert (FORWARD.num_passes(5), CENTRAL.num_passes(5), ONE_SIDED.num_passes(5)) == (6, 10, 11)
    assert FORWARD.combine([[3.0], [5.0]], 2.0) == ([1.0, 3.0], 2.0)
    assert CENTRAL.combine([[3.0, 1.0], [5.0, 7.0]], None) == ([2.0, -2.0], 4.0)
    assert BACKWARD.combine([[1.5]], 2.0) == ([0.5], 2.0)
    with pytest.raises(ValueError, match="one weight per sign"):
        DifferenceScheme("bad", signs=(1.0, -1.0), weights=(1.0,))
    with pytest.raises(ValueError, match="non-zero"):
        DifferenceScheme("bad", signs=(0.0,), weights=(1.0,))
    with pytest.raises(TypeError, match="DifferenceScheme"):
        EstimatorSpec("central")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fill function"):
        EstimatorSpec(CENTRAL, "gaussian")  # type: ignore[arg-type]
    assert EstimatorSpec() == EstimatorSpec(FORWARD, fill_gaussian, 1e-3)
    for spec in (EstimatorSpec(ONE_SIDED, fill_rademacher), EstimatorSpec(BACKWARD)):
        assert pickle.loads(pickle.dumps(spec)) == spec


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
def test_every_scheme_estimates_the_directional_derivative_of_a_quadratic(scheme):
    """Central, one-sided second order and backward differences are exact on a quadratic up
    to rounding; forward ones are off by s/2 z^T A z."""
    dim, sigma = 20, 1e-2
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(dim, dim, generator=gen, dtype=torch.float64) / dim**0.5
    a = q @ q.T
    b = torch.randn(dim, generator=gen, dtype=torch.float64)
    flat = torch.randn(dim, generator=gen)

    def loss() -> float:
        w = flat.double()
        return float(0.5 * w @ a @ w + b @ w)

    seeds = perturbation_seeds(0, 0, 0, 0, 6)
    spec = EstimatorSpec(scheme, fill_gaussian, sigma)
    before = flat.clone()
    result = loss_differences(loss, flat, None, seeds, spec, with_estimate=True)
    assert torch.equal(flat, before)
    assert result.num_forward_passes == scheme.num_passes(6)
    gradient = a @ flat.double() + b
    for k, seed in enumerate(seeds):
        z = direction(seed, dim).double()
        exact = float(z @ gradient)
        if scheme is FORWARD:
            exact += sigma / 2 * float(z @ a @ z)
        elif scheme is BACKWARD:
            exact -= sigma / 2 * float(z @ a @ z)
        assert float(result.loss_differences[k]) * spec.scale == pytest.approx(exact, rel=1e-4)
    rebuilt = estimate_from_differences(result.loss_differences, seeds, spec, dim)
    assert torch.equal(rebuilt, result.estimate)


# -- every batching mode on any module ------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
@pytest.mark.parametrize("name", ["vit", "mlp"])
def test_loop_vmap_and_batched_agree_on_any_module(name, scheme, caplog):
    model, flat, layout, x, y, _ = _build(name)
    kept = torch.arange(0, layout.total, 2)  # a sparse model
    ws = ZOWorkspace(model, layout, flat, kept)
    seeds = perturbation_seeds(3, 1, 2, 0, 5)
    estimator = EstimatorSpec(scheme, fill_rademacher if name == "mlp" else fill_gaussian, 1e-3)
    before = flat.clone()
    loop = _client(ws, x, y, seeds, estimator, "loop")
    assert loop.num_forward_passes == scheme.num_passes(len(seeds))
    # the client's estimate is the server's rebuild from the uploaded differences, bit for bit
    rebuilt = estimate_from_differences(loop.loss_differences, seeds, estimator, kept.numel())
    assert torch.equal(rebuilt, loop.estimate)
    vmapped = _client(ws, x, y, seeds, estimator, "vmap", chunk=2)
    torch.testing.assert_close(vmapped.loss_differences, loop.loss_differences, rtol=0, atol=5e-6)
    assert vmapped.base_loss == pytest.approx(loop.base_loss, abs=1e-5)
    with caplog.at_level(logging.WARNING, logger="fpzo_ray.zo.client_update"):
        batched = _client(ws, x, y, seeds, estimator, "batched", chunk=3)
        again = _client(ws, x, y, seeds, estimator, "batched")
    warnings = [r.getMessage() for r in caplog.records if "cannot stack" in r.getMessage()]
    if name == "vit":  # a module of its own forward: run in loop mode, logged once
        assert torch.equal(batched.loss_differences, loop.loss_differences)
        assert torch.equal(batched.estimate, loop.estimate)
        assert len(warnings) == 1
        assert warnings[0].startswith("zo.batching batched cannot stack ")
        assert "TinyViT at (the model)" in warnings[0]
        assert warnings[0].endswith("; running loop")
    else:  # stacked for real: float32 rounding apart
        assert warnings == []
        torch.testing.assert_close(
            batched.loss_differences, loop.loss_differences, rtol=0, atol=5e-6
        )
        rebuilt = estimate_from_differences(
            batched.loss_differences, seeds, estimator, kept.numel()
        )
        assert torch.equal(rebuilt, batched.estimate)
    assert torch.equal(again.loss_differences, batched.loss_differences)
    assert torch.equal(flat, before)


def test_the_layerwise_scope_runs_any_scheme_and_refuses_other_modules():
    model, flat, layout, x, y, _ = _build("staged_mlp")
    kept = torch.arange(1, layout.total, 2)
    spec = ZOUpdateSpec(
        EstimatorSpec(ONE_SIDED), num_perturbations=6, perturbation_scope="layerwise"
    )
    blocks = blocks_for(spec, model, layout, kept)
    assert blocks is not None and blocks.num_stages == 3
    seeds = perturbation_seeds(1, 0, 0, 0, 6)
    loss_of = lambda out: float(F.cross_entropy(out, y))  # noqa: E731
    result = layerwise_differences(model, loss_of, x, flat, blocks, seeds, spec.estimator, True)
    assert torch.equal(
        result.estimate,
        layerwise_estimate_from_differences(result.loss_differences, seeds, spec.estimator, blocks),
    )
    assert result.stage_runs[-1] == ONE_SIDED.num_passes(6)
    assert blocks_for(ZOUpdateSpec(EstimatorSpec()), model, layout, kept) is None

    vit, _, vit_layout, *_ = _build("vit")
    message = (
        r"^zo\.perturbation_scope: layerwise needs a model built as a "
        r"fpzo_ray\.models\.staged\.StagedModel \(a chain of stages\); .*TinyViT is not"
    )
    with pytest.raises(ValueError, match=message):
        stage_blocks_for(vit, vit_layout, None)
    with pytest.raises(ValueError, match=message):
        blocks_for(spec, vit, vit_layout, None)


def test_unsupported_module_names_the_first_module_it_cannot_stack():
    assert unsupported_module(_build("mlp")[0]) is None
    assert unsupported_module(_build("staged_mlp")[0]) is None
    found = unsupported_module(_build("vit")[0])
    assert found is not None and "TinyViT at (the model)" in found
    # a container of its own: the module inside it that could not be stacked either is named
    import torchvision

    found = unsupported_module(torchvision.models.resnet18())
    assert found is not None and found.startswith("torchvision.models.resnet.ResNet at (the")
    assert "inside it, torch.nn.modules.batchnorm.BatchNorm2d at bn1 (running statistics)" in found
    staged = StagedModel([nn.Sequential(nn.Linear(4, 4), nn.Tanh()), nn.Linear(4, 2)])
    assert unsupported_module(staged) == "torch.nn.modules.activation.Tanh at stages.0.1"

    class Scaled(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    found = unsupported_module(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), Scaled(4, 2)))
    assert found is not None and "Scaled at 2" in found and "own forward" in found
    found = unsupported_module(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    assert found is not None and "BatchNorm2d at 1 (running statistics)" in found


def test_a_module_found_unstackable_in_the_pass_falls_back_to_the_loop(caplog):
    """A linear layer on a convolution's unflattened output passes the static walk; the
    stacked pass finds it, and the workspace runs the loop from then on."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(3, 3), nn.Flatten(), nn.Linear(18, 3))
    flat, layout = bind_flat_buffer(model)
    assert unsupported_module(model) is None
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 1, 5, 5, generator=gen), torch.randint(0, 3, (4,), generator=gen)
    ws = ZOWorkspace(model, layout, flat, None)
    seeds = perturbation_seeds(0, 0, 0, 0, 3)
    loop = _client(ws, x, y, seeds, EstimatorSpec(), "loop")
    with caplog.at_level(logging.WARNING, logger="fpzo_ray.zo.client_update"):
        batched = _client(ws, x, y, seeds, EstimatorSpec(), "batched")
        _client(ws, x, y, seeds, EstimatorSpec(), "batched")
    assert torch.equal(batched.loss_differences, loop.loss_differences)
    # (torch's compiler may log from a background thread: the Philox fill tiering up)
    messages = [r.getMessage() for r in caplog.records if r.name == "fpzo_ray.zo.client_update"]
    assert len(messages) == 1 and "a linear layer on stacked channels" in messages[0]


# -- prunable weights of any module ---------------------------------------------------------


def test_the_layout_marks_every_linear_weight_and_the_listed_parameters():
    model = TinyViT()
    layout = layout_of(model)
    prunable = {s.name for s in layout.prunable_slots}
    linears = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert {"q.weight", "k.weight", "v.weight", "out.weight"} <= linears
    assert prunable == linears | {"pos_embedding"}
    assert "cls_token" not in prunable and "norm1.weight" not in prunable
    assert all(not s.prunable for s in layout.slots if s.name.endswith("bias"))
    assert "attention_scale" not in {s.name for s in layout.slots}  # a buffer, not a slot

    class Listed(nn.Module):
        prunable_parameters = ("scale", "missing")

        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

    with pytest.raises(ValueError, match="'missing'"):
        layout_of(nn.Sequential(nn.Linear(3, 3), Listed()))
    convs = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Conv3d(1, 1, 1), nn.Conv2d(1, 1, 1))
    assert {s.name for s in layout_of(convs).prunable_slots} == {"0.weight", "1.weight", "2.weight"}


def test_a_tied_parameter_stays_tied_and_is_one_slot():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    model[2].weight = model[0].weight
    flat, layout = bind_flat_buffer(model)
    assert [s.name for s in layout.slots].count("0.weight") == 1
    assert "2.weight" not in {s.name for s in layout.slots}
    assert layout.aliases == (("2.weight", "0.weight"),)
    assert layout.slots[0].prunable
    assert model[2].weight is model[0].weight
    with torch.no_grad():
        flat[:36] = 0.5
    assert torch.equal(model[2].weight, torch.full((6, 6), 0.5))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 6, generator=gen), torch.randint(0, 3, (5,), generator=gen)
    ws = ZOWorkspace(model, layout, flat, None)
    seeds = perturbation_seeds(0, 0, 0, 0, 4)
    loop = _client(ws, x, y, seeds, EstimatorSpec(CENTRAL), "loop")
    for batching in ("vmap", "batched"):
        other = _client(ws, x, y, seeds, EstimatorSpec(CENTRAL), batching)
        torch.testing.assert_close(other.loss_differences, loop.loss_differences, rtol=0, atol=2e-6)


# -- saliencies on any module ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["vit", "mlp"])
def test_every_saliency_scores_any_module(name):
    model, flat, layout, x, y, shape = _build(name)
    weights = flat.detach().clone()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    n = layout.num_prunable
    for mask in (Mask.dense(layout), random_mask(layout, 0.5, torch.Generator().manual_seed(0))):
        scores = {
            "ntk_sap": ntk_sap_mask_gradient(model, layout, mask, [1, 2], 4, shape, 0.01),
            "ntk_sap_kaiming": ntk_sap_mask_gradient(
                model, layout, mask, [3], 4, shape, 0.01, draw_init="kaiming_normal"
            ),
            "snip": snip_contribution(model, layout, mask, weights, [(x, y)]),
            "grasp": grasp_contribution(model, layout, mask, weights, [(x, y)]),
            "synflow": synflow_scores(model, layout, mask, weights, shape),
            "magnitude": magnitude_scores(layout, mask, weights),
        }
        for method, score in scores.items():
            assert score.shape == (n,), method
            assert score.dtype == torch.float32, method
            assert torch.isfinite(score).all(), method
            assert score.abs().sum() > 0, method
            assert torch.count_nonzero(score[~mask.prunable_kept]) == 0, method
    for param_name, param in model.named_parameters():
        assert torch.equal(param.detach(), before[param_name]), param_name


def test_synflow_linearises_a_transformer():
    linear = linearised_copy(TinyViT())
    kinds = {type(m) for m in linear.modules()}
    assert not kinds & {nn.LayerNorm, nn.GELU}
    assert all(p.dtype == torch.float64 for p in linear.parameters())
    assert not linear.training
