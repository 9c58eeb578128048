import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fpzo_ray.accounting import forward_flops, layer_flops, stage_forward_flops
from fpzo_ray.config import config_from_dict
from fpzo_ray.models import StagedModel, build_model
from fpzo_ray.registry import MODELS


@pytest.mark.parametrize(
    "dataset, shape, name",
    [
        ("digits", (1, 8, 8), "auto"),
        ("mnist", (1, 28, 28), "auto"),
        ("cifar10", (3, 32, 32), "resnet20"),
        ("cifar10", (3, 32, 32), "resnet18"),
    ],
)
def test_dense_flops_match_torch_flop_counter(dataset, shape, name):
    model = build_model(
        config_from_dict({"data": {"name": dataset}, "model": {"name": name}}),
        shape,
        10,
        init_seed=0,
    )
    layers = layer_flops(model, shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(4, *shape))
    ours = 4 * sum(2 * layer.multiply_adds for layer in layers)
    assert ours == counter.get_total_flops()  # both count 2 FLOPs per multiply-add
    assert forward_flops(layers) == sum(
        2 * layer.multiply_adds + layer.bias_adds for layer in layers
    )


def test_lenet5_flops_by_hand():
    model = build_model(config_from_dict({"data": {"name": "mnist"}}), (1, 28, 28), 10, init_seed=0)
    macs = {layer.name: layer.multiply_adds for layer in layer_flops(model, (1, 28, 28))}
    assert macs["stages.0.0.weight"] == 6 * 28 * 28 * 25
    assert macs["stages.1.0.weight"] == 16 * 10 * 10 * 6 * 25
    assert macs["stages.2.1.weight"] == 400 * 120


def test_sparse_flops_scale_with_layer_density():
    model = build_model(config_from_dict({}), (1, 8, 8), 10, init_seed=0)
    layers = layer_flops(model, (1, 8, 8))
    half = forward_flops(layers, {layer.name: 0.5 for layer in layers})
    bias = sum(layer.bias_adds for layer in layers)
    assert half - bias == (forward_flops(layers) - bias) // 2


# -- the flop_counter-based count for any nn.Module ------------------------------------------

BUILT_IN_SHAPES = {
    "digits_cnn": (1, 8, 8),
    "lenet5": (1, 28, 28),
    "resnet20": (3, 32, 32),
    "resnet18": (3, 32, 32),
}


def analytic_flops(model: nn.Module, shape) -> dict[str, tuple[int, int]]:
    """weight name -> (multiply-adds, bias adds) per sample, from module shapes by hand."""
    found: dict[str, tuple[int, int]] = {}

    def hook_for(name):
        def hook(module, inputs, output):
            out_elems = output[0].numel()
            if isinstance(module, nn.Linear):
                per_output = module.in_features
            else:
                assert isinstance(module, nn.modules.conv._ConvNd)
                per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            bias = out_elems if module.bias is not None else 0
            macs, adds = found.get(f"{name}.weight", (0, 0))
            found[f"{name}.weight"] = (macs + out_elems * per_output, adds + bias)

        return hook

    hooks = [
        module.register_forward_hook(hook_for(name))
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return found


@pytest.mark.parametrize("name", sorted(BUILT_IN_SHAPES))
def test_built_in_models_flops_match_analytic_counts(name):
    shape = BUILT_IN_SHAPES[name]
    model = MODELS.load(name)(
        input_shape=shape, num_classes=10, norm="group", norm_groups=2, activation="hardswish"
    )
    layers = layer_flops(model, shape)
    assert model.training  # restored
    assert all(layer.prunable for layer in layers)  # no unprunable work in the built-ins
    ours = {layer.name: (layer.multiply_adds, layer.bias_adds) for layer in layers}
    assert ours == analytic_flops(model, shape)
    assert sum(stage_forward_flops(layers, len(model.stages))) == forward_flops(layers)


class TinyAttention(nn.Module):
    """Patches of an 8x8 image -> tokens, one multi-head self-attention, a linear head."""

    def __init__(self, dim: int = 16, heads: int = 2, patch: int = 2, sdpa: bool = False):
        super().__init__()
        self.heads, self.patch, self.sdpa = heads, patch, sdpa
        self.embed = nn.Linear(patch * patch, dim)
        self.norm = nn.LayerNorm(dim)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, p = x.shape[0], self.patch
        tokens = x.unfold(2, p, p).unfold(3, p, p).reshape(b, -1, p * p)  # (b, T, p*p)
        h = self.norm(self.embed(tokens))
        t = h.shape[1]
        q, k, v = (
            m(h).reshape(b, t, self.heads, -1).transpose(1, 2) for m in (self.q, self.k, self.v)
        )
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            out = scores.softmax(-1) @ v
        out = out.transpose(1, 2).reshape(b, t, -1)
        return self.head(self.act(out).mean(1))


@pytest.mark.parametrize("sdpa", [False, True])
def test_attention_matmuls_are_unprunable_work(sdpa):
    dim, shape = 16, (1, 8, 8)
    tokens = (8 // 2) * (8 // 2)
    model = TinyAttention(dim=dim, sdpa=sdpa)
    layers = layer_flops(model, shape)
    prunable = [layer for layer in layers if layer.prunable]
    other = [layer for layer in layers if not layer.prunable]

    expected = {
        "embed.weight": (tokens * dim * 4, tokens * dim),
        "q.weight": (tokens * dim * dim, tokens * dim),
        "k.weight": (tokens * dim * dim, tokens * dim),
        "v.weight": (tokens * dim * dim, tokens * dim),
        "head.weight": (10 * dim, 10),
    }
    assert {la.name: (la.multiply_adds, la.bias_adds) for la in prunable} == expected
    assert expected == analytic_flops(model, shape)
    # q @ k^T and softmax @ v: T*T*d_head multiply-adds each, summed over heads
    assert [(la.name, 2 * la.multiply_adds, la.bias_adds, la.stage) for la in other] == [
        ("(other)", 2 * tokens * tokens * dim * 2, 0, None)
    ]

    dense_macs = sum(la.multiply_adds for la in prunable)
    biases = sum(la.bias_adds for la in prunable)
    other_flops = 2 * tokens * tokens * dim * 2
    assert forward_flops(layers) == 2 * dense_macs + biases + other_flops
    half = {la.name: 0.5 for la in layers}  # even a density for the "(other)" name is ignored
    assert forward_flops(layers, half) == 0.5 * 2 * dense_macs + biases + other_flops

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(3, *shape))
    if not sdpa:  # flop_counter has no formula for the CPU attention kernel; we add one
        assert 3 * (2 * dense_macs + other_flops) == counter.get_total_flops()


def test_staged_attention_work_goes_to_its_stage():
    class Attend(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, -1)
            return (q @ k.transpose(-1, -2)).softmax(-1) @ v

    tokens, dim = 6, 8
    model = StagedModel(
        [nn.Linear(4, dim), Attend(dim), nn.Sequential(nn.Flatten(), nn.Linear(tokens * dim, 3))]
    )
    layers = layer_flops(model, (tokens, 4))
    assert [(la.name, la.prunable, la.stage) for la in layers] == [
        ("stages.0.weight", True, 0),
        ("stages.1.qkv.weight", True, 1),
        ("stages.2.1.weight", True, 2),
        ("stages.1 (other)", False, 1),
    ]
    attention = 2 * tokens * tokens * dim * 2
    assert layers[-1].multiply_adds * 2 == attention
    per_stage = stage_forward_flops(layers, 3, {la.name: 0.25 for la in layers})
    assert per_stage == [
        2 * tokens * dim * 4 // 4 + tokens * dim,
        2 * tokens * 3 * dim * dim // 4 + attention,
        2 * 3 * tokens * dim // 4 + 3,
    ]


def test_tabular_mlp_and_weight_sharing():
    model = nn.Sequential(nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
    model.append(model[2])  # the same layer called twice counts twice
    model.append(nn.Linear(32, 2))
    layers = layer_flops(model, (13,))
    assert [(la.name, la.multiply_adds, la.bias_adds, la.prunable) for la in layers] == [
        ("0.weight", 13 * 32, 32, True),
        ("2.weight", 2 * 32 * 32, 2 * 32, True),
        ("5.weight", 32 * 2, 2, True),
    ]
    shared = 2 * (2 * 32 * 32)  # dense FLOPs of both calls
    assert forward_flops(layers, {"2.weight": 0.5}) == (
        2 * 13 * 32 + 32 + shared // 2 + 2 * 32 + 2 * 32 * 2 + 2
    )


def test_tied_weight_scales_with_its_masked_parameter():
    model = nn.Sequential(nn.Linear(8, 8, bias=False), nn.Tanh(), nn.Linear(8, 8, bias=False))
    model[2].weight = model[0].weight  # named_parameters (and a mask) know it as "0.weight"
    layers = layer_flops(model, (8,))
    assert [la.name for la in layers] == ["0.weight", "2.weight"]
    assert forward_flops(layers, {"0.weight": 0.5}) == 2 * 64


def test_unprunable_work_outside_prunable_layers():
    class RawParameter(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Parameter(torch.randn(5, 7))
            self.out = nn.Conv1d(3, 4, 3)

        def forward(self, x):  # x: (b, 3, 5)
            return self.out(x @ self.proj)

    layers = layer_flops(RawParameter(), (3, 5))
    assert [(la.name, la.multiply_adds, la.bias_adds, la.prunable) for la in layers] == [
        ("out.weight", 4 * 5 * 3 * 3, 4 * 5, True),
        ("(other)", 3 * 5 * 7, 0, False),
    ]


def test_counting_and_metering_leave_dynamo_unimported():
    """Every worker counts its model and meters a step: neither may import ``torch._dynamo``
    (torch's lazy guard around dispatch modes would, ~1.7 s and ~100 MB per actor)."""
    import subprocess
    import sys

    script = """
import sys, torch
from fpzo_ray.accounting import layer_flops
from fpzo_ray.accounting.memory import MemoryMeter
from fpzo_ray.models.lenet import LeNet5
model = LeNet5()
layer_flops(model, (1, 28, 28))
with MemoryMeter():
    model(torch.zeros(2, 1, 28, 28)).sum()
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
