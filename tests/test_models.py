import pytest
import torch

from fpzo_ray.config import config_from_dict
from fpzo_ray.models import bind_flat_buffer, build_model, layout_of
from fpzo_ray.registry import MODELS as MODEL_REGISTRY

CASES = {
    "digits_cnn": ("digits", (1, 8, 8), 1_898),
    "lenet5": ("mnist", (1, 28, 28), 61_706),
    "resnet20": ("cifar10", (3, 32, 32), 270_906),
    "resnet18": ("cifar10", (3, 32, 32), 11_164_362),
}


def _build(name: str, norm: str = "group", activation: str = "hardswish", seed: int = 0):
    dataset, shape, _ = CASES[name]
    cfg = config_from_dict(
        {"data": {"name": dataset}, "model": {"name": name, "norm": norm, "activation": activation}}
    )
    return build_model(cfg, shape, 10, init_seed=seed), shape


def test_registry_covers_the_configured_models():
    from fpzo_ray.config import MODELS

    assert set(MODELS) - {"auto"} == set(MODEL_REGISTRY.names)


@pytest.mark.parametrize("name", list(CASES))
def test_parameter_counts_match_the_literature(name):
    model, _ = _build(name)
    assert sum(p.numel() for p in model.parameters()) == CASES[name][2]


@pytest.mark.parametrize("name", ["digits_cnn", "lenet5", "resnet20"])
@pytest.mark.parametrize("norm", ["group", "none", "batch"])
@pytest.mark.parametrize("activation", ["hardswish", "relu"])
def test_every_norm_and_activation_runs_and_the_stage_chain_is_the_model(name, norm, activation):
    model, shape = _build(name, norm, activation)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        assert out.shape == (4, 10) and torch.isfinite(out).all()
        # Resuming from any stage's input gives the same output (what layer-wise ZO relies on).
        hidden = x
        for i, stage in enumerate(model.stages):
            torch.testing.assert_close(model.forward_from(i, hidden), out)
            hidden = stage(hidden)
    assert not any(b.numel() for b in model.buffers())  # no running statistics to federate


def test_same_seed_same_weights_and_prunable_means_conv_and_linear_weights():
    a, _ = _build("resnet20", seed=3)
    b, _ = _build("resnet20", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    layout = layout_of(a)
    prunable = {s.name for s in layout.slots if s.prunable}
    convs_and_linears = {
        f"{n}.weight"
        for n, m in a.named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    }
    assert prunable == convs_and_linears


def test_flat_buffer_views_write_through():
    model, shape = _build("lenet5")
    flat, layout = bind_flat_buffer(model)
    first = layout.slots[0]
    with torch.no_grad():
        flat[first.offset] = 123.0
    assert dict(model.named_parameters())[first.name].flatten()[0] == 123.0
