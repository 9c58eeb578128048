import re
import subprocess
import sys

import pytest

from fpzo_ray.config import ConfigError, config_from_dict, parse_overrides
from fpzo_ray.sweep.spec import find_sweep_file, load_sweep


def test_defaults_are_valid_and_frozen():
    cfg = config_from_dict({})
    assert cfg.data.name == "digits" and cfg.model_name == "digits_cnn"
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"pruning": {"sparsity": 1.0}}, "pruning.sparsity"),
        ({"pruning": {"sparsity": -0.1}}, "pruning.sparsity"),
        ({"zo": {"num_perturbations": 0}}, "zo.num_perturbations"),
        ({"data": {"alpha": 0}}, "data.alpha"),
        ({"data": {"name": "imagenet"}}, "data.name"),
        ({"zo": {"sigma": "small"}}, "zo.sigma"),
        ({"training": {"rounds": 2.5}}, "training.rounds"),
        ({"data": {"download": "yes"}}, "data.download"),
        ({"zo": {"num_perturbation": 3}}, "zo.num_perturbation"),
        ({"training": {"clients_per_round": 80}}, "training.clients_per_round"),
        ({"model": {"name": "lenet5"}}, "model.name"),
        ({"zo": {"batching": "stacked"}}, "zo.batching"),
        ({"zo": {"batching": "batched", "perturbation_scope": "layerwise"}}, "zo.batching"),
        ({"zo": {"chunk_size": -1}}, "zo.chunk_size"),
        ({"simulation": {"compile": "yes"}}, "simulation.compile"),
    ],
)
def test_bad_values_name_the_field(raw, field):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    message = str(err.value)
    assert field in message and "\n" not in message


def test_a_moved_field_says_where_it_went():
    """``zo.ema_decay`` configures the server of every algorithm: it is ``training.ema_decay``
    now, and the old name (a YAML, an override, a sweep axis) says so in one line."""
    from fpzo_ray.config import field_type

    for attempt in (
        lambda: config_from_dict({"zo": {"ema_decay": 0.9}}),
        lambda: field_type("zo.ema_decay"),
    ):
        with pytest.raises(ConfigError, match=r"^config error: zo.ema_decay: moved to training"):
            attempt()
    assert config_from_dict({"training": {"ema_decay": 0.9}}).training.ema_decay == 0.9


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["zo.sigma=1e-4", "data.download=true", "seed=3"]) == {
        "zo": {"sigma": 1e-4},
        "data": {"download": True},
        "seed": 3,
    }


def test_quick_sweep_is_a_valid_grid_with_dense_baseline():
    spec = load_sweep(find_sweep_file("sweeps/quick.yaml"))
    configs = spec.validated_configs()
    assert len(configs) >= 8
    assert {len(axis.values) >= 2 for axis in spec.axes} == {True}
    assert any(c.pruning_method == "dense" for c in configs)
    assert any(c.pruning_method == "ntk_sap" for c in configs)


@pytest.mark.parametrize(
    "entry, args",
    [
        ("fpzo_ray.sweep", ["--set", "zo.num_perturbations=0"]),
        ("fpzo_ray.run", ["--set", "pruning.sparsity=1.5"]),
    ],
)
@pytest.mark.slow  # a subprocess each
def test_cli_exits_2_before_any_work(entry, args, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", entry, *args, "--results-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: ")
    assert args[1].split("=")[0] in lines[0]
    assert not (tmp_path / "r").exists()  # nothing was started or written


def test_microbatching_needs_per_sample_norm_and_the_plain_loop():
    config_from_dict({"zo": {"microbatch_size": 8}})
    for raw in (
        {"zo": {"microbatch_size": 8}, "model": {"norm": "batch"}},
        {"zo": {"microbatch_size": 8, "perturbation_scope": "layerwise"}},
    ):
        with pytest.raises(ConfigError, match="zo.microbatch_size"):
            config_from_dict(raw)
    with pytest.raises(ConfigError, match="training.bp_microbatch_size"):
        config_from_dict({"training": {"bp_microbatch_size": 8}, "model": {"norm": "batch"}})


#: Values that YAML 1.1 (PyYAML's default) would read silently as something else, and the
#: fields that refuse them by name (YAML 1.2 core reads them as strings).
@pytest.mark.parametrize(
    "override, field",
    [
        ("training.rounds=1:30", "training.rounds"),  # 1.1: sexagesimal 90
        ("training.rounds=1_000", "training.rounds"),  # 1.1: a thousand
        ("data.download=yes", "data.download"),  # 1.1: true
        ("tracking.experiment=2026-12-06", None),  # 1.1: a date; here the string
    ],
)
def test_yaml_is_read_as_yaml_1_2_core(override, field):
    if field is None:
        cfg = config_from_dict(parse_overrides([override]))
        assert cfg.tracking.experiment == "2026-12-06"
        return
    with pytest.raises(ConfigError, match=f"^config error: {re.escape(field)}: "):
        config_from_dict(parse_overrides([override]))


def test_leading_zeros_are_decimal_and_0o_0x_prefixes_are_read():
    tree = parse_overrides(["training.rounds=010", "seed=0x1F", "data.num_clients=0o20"])
    cfg = config_from_dict(tree)
    assert (cfg.training.rounds, cfg.seed, cfg.data.num_clients) == (10, 31, 16)


@pytest.mark.parametrize(
    "override, field",
    [
        ("zo.sigma=1e300", "zo.sigma"),  # infinite in float32
        ("training.server_lr=1e308", "training.server_lr"),
        ("zo.sigma=1e-300", "zo.sigma"),  # 0 in float32
        ("simulation.worker_cpus=1e-300", "simulation.worker_cpus"),  # below Ray's step
        ("simulation.worker_cpus=0.00005", "simulation.worker_cpus"),
        ("simulation.worker_gpus=0.00005", "simulation.worker_gpus"),
        (r'tracking.experiment="a\nb"', "tracking.experiment"),  # a newline forges lines
        (r'tracking.experiment="a\0b"', "tracking.experiment"),  # NUL
        (r'tracking.experiment="a\e[2Jb"', "tracking.experiment"),  # a terminal escape
        (r'tracking.experiment="a\ud800b"', "tracking.experiment"),  # a lone surrogate
    ],
)
def test_numbers_past_float32_ray_fractions_and_control_characters_are_refused(override, field):
    with pytest.raises(ConfigError) as err:
        config_from_dict(parse_overrides([override]))
    message = str(err.value)
    assert message.startswith(f"config error: {field}: ") and "\n" not in message, message
