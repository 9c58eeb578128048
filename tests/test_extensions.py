"""Bring your own: every extension point takes a component named by import path in the
configuration (``tests/extension_targets.py``), and a wrong one stops before any work with
one line naming the field and the target (exit code 2 on the command line)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from studies import ROOT, command_env

from fpzo_ray.config import ConfigError, config_from_dict
from fpzo_ray.data import federated_data
from fpzo_ray.registry import (
    ALGORITHMS,
    DATASETS,
    DIFFERENCE_SCHEMES,
    DIRECTION_KINDS,
    MODELS,
    PARTITIONERS,
    PRUNING_METHODS,
    SERVER_OPTIMIZERS,
)
from fpzo_ray.sim.in_process import run_in_process

T = "extension_targets"
OWN = {
    "data": {
        "target": f"{T}:blobs",
        "args": {"samples": 300},
        "partition": f"{T}:two_label_halves",
        "num_clients": 6,
    },
    "model": {"target": f"{T}:mlp", "args": {"hidden": 12}},
    "pruning": {
        "method": f"{T}:squared_magnitude",
        "args": {"power": 1.5},
        "sparsity": 0.5,
        "iterations": 2,
        "clients_per_iteration": 3,
    },
    "zo": {
        "estimator": f"{T}:ONE_SIDED",
        "direction": f"{T}:fill_uniform",
        "sigma": 0.01,
        "generator": "torch_cpu",
    },
    "training": {
        "algorithm": f"{T}:MedianFedSGD",
        "server_optimizer": f"{T}:adagrad",
        "server_lr": 0.05,
        "rounds": 12,
        "clients_per_round": 3,
    },
}


def test_every_registered_entry_imports():
    for registry in (
        MODELS,
        DATASETS,
        PARTITIONERS,
        PRUNING_METHODS,
        DIFFERENCE_SCHEMES,
        DIRECTION_KINDS,
        SERVER_OPTIMIZERS,
        *ALGORITHMS.values(),
    ):
        for name in registry:
            assert registry.load(name) is not None, (registry.what, name)


def test_a_run_made_of_ones_own_components_trains():
    from extension_targets import MedianFedSGD

    cfg = config_from_dict(OWN)
    dataset, partition = federated_data(cfg)
    assert dataset.input_shape == (6,) and len(partition) == 6
    before = MedianFedSGD.aggregated_rounds
    metrics = run_in_process(cfg, dataset, partition)
    assert MedianFedSGD.aggregated_rounds - before == 12  # the algorithm's own aggregate ran
    # three separable blobs: chance is about 1/3
    assert metrics[-1]["test_accuracy"] > 0.6
    # ONE_SIDED: two perturbed passes a direction plus the base pass
    k = cfg.zo.num_perturbations
    assert metrics[0]["round_client_forward_flops"] > 0
    assert metrics[0]["round_upload_bytes"] == 3 * (4 * k + 8 + 4)


BAD = [
    ("model.target", "no_such_module:build", "no module named 'no_such_module'"),
    ("model.target", f"{T}:missing", "has no attribute 'missing'"),
    ("model.target", f"{T}:needs_a_name", "cannot be called this way"),
    ("model.target", f"{T}:NOT_A_FUNCTION", "not a function or class"),
    ("model.target", "not a path", "is not an import path"),
    ("data.target", f"{T}:mlp", "cannot be called this way"),
    ("data.partition", f"{T}:nope", "has no attribute 'nope'"),
    ("pruning.method", f"{T}:nope", "has no attribute 'nope'"),
    ("zo.estimator", f"{T}:fill_uniform", "not a fpzo_ray.zo.difference.DifferenceScheme"),
    ("zo.direction", f"{T}:NOT_A_FUNCTION", "not a function or class"),
    ("zo.direction", f"{T}:fill_uniform", "set zo.generator: torch_cpu"),  # under philox
    ("training.server_optimizer", f"{T}:nope", "has no attribute 'nope'"),
    ("training.algorithm", f"{T}:NotAnAlgorithm", "not a subclass of"),
    ("training.algorithm", f"{T}:nope", "has no attribute 'nope'"),
    (
        "training.callbacks",
        f"{T}:mlp",
        "not a subclass of fpzo_ray.sim.callbacks.RunCallback",
    ),
    ("training.callbacks", f"{T}:NeedsAnArgument", "cannot be called this way"),
    ("training.callbacks", "not a path", "must be an import path"),
    ("training.callbacks", f"{T}:nope", "has no attribute 'nope'"),
]


@pytest.mark.parametrize("field, target, why", BAD, ids=[f"{f}={t}" for f, t, _ in BAD])
def test_a_bad_target_is_one_line_naming_the_field_and_the_target(field, target, why):
    section, key = field.split(".")
    raw = {section: {key: target}}
    if field == "data.target":
        raw["model"] = {"target": f"{T}:mlp"}
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"config error: {field}:"), message
    assert target in message and why in message, message


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"model": {"args": {"hidden": 3}}}, "model.args"),
        ({"model": {"kwargs": {"hidden": 3}}}, "model.kwargs"),
        ({"model": {"target": f"{T}:mlp", "args": {"hidden": 3}, "kwargs": {}}}, "model.kwargs"),
        ({"pruning": {"args": {"power": 2}}}, "pruning.args"),
        ({"model": {"target": f"{T}:mlp", "name": "lenet5"}}, "model.target"),
        ({"data": {"target": f"{T}:blobs"}}, "model.name"),
        ({"training": {"args": {"nope": 1}}}, "training.args.nope"),
        (
            {"training": {"algorithm": "zo_momentum", "args": {"estimate_momentum": 2}}},
            "training.args.estimate_momentum",
        ),
        (
            {"training": {"algorithm": "zo", "mode": "fedavg", "args": {"upload": "x"}}},
            "training.args.upload",
        ),
    ],
)
def test_misplaced_arguments_are_refused(raw, field):
    with pytest.raises(ConfigError, match=f"^config error: {field}: "):
        config_from_dict(raw)


def _command(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**command_env(), "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("module", ["fpzo_ray.run", "fpzo_ray.sweep"])
def test_the_commands_exit_2_on_a_bad_target_before_any_work(module, tmp_path):
    done = _command(
        module,
        "--set",
        f"model.target={T}:needs_a_name",
        "--results-dir",
        str(tmp_path / "results"),
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("config error: model.target:") and f"{T}:needs_a_name" in lines[0]
    assert not (tmp_path / "results").exists()  # nothing started


def test_a_model_that_fails_to_build_stops_in_preflight(tmp_path):
    done = _command(
        "fpzo_ray.run",
        "--set",
        f"model.target={T}:raises_on_build",
        "--results-dir",
        str(tmp_path / "results"),
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("config error: model.target:")
    assert "my model cannot be built" in lines[0]


def test_a_components_own_arguments_are_swept_and_searched_like_fields():
    from fpzo_ray.sweep.spec import parse_sweep

    base = {"training": {"algorithm": "zo_momentum", "rounds": 2}}
    spec = parse_sweep(
        {
            "base": base,
            "grid": {"training.args.estimate_momentum": [0.5, 0.9]},
            "search": {"space": {"training.server_lr": {"loguniform": [0.001, 0.1]}}},
        }
    )
    momenta = {cfg.training.args["estimate_momentum"] for cfg in spec.validated_configs()}
    assert momenta == {0.5, 0.9}
    searched = parse_sweep(
        {
            "base": base,
            "search": {"space": {"training.args.estimate_momentum": {"uniform": [0, 0.99]}}},
        }
    )
    assert searched.search is not None
    with pytest.raises(ConfigError, match="training.args.estimate_momentum"):
        parse_sweep({"base": base, "grid": {"training.args.estimate_momentum": [0.5, 2.0]}})


def test_the_engine_does_not_branch_on_the_algorithm_its_mode_or_a_zo_variant():
    """What differs between algorithms and ZO variants is theirs (``algorithms/``, ``zo/``):
    the engine reads none of the fields that choose them."""
    import re

    choosing = re.compile(
        r"cfg\.training\.(algorithm|mode)\b|\.perturbation_scope\s*[=!]=|\.batching\s*[=!]=|"
        r"\.estimator\s*[=!]=|\.direction\s*[=!]=|pruning\.method\s*[=!]="
    )
    engine = sorted((ROOT / "fpzo_ray" / "sim").glob("*.py")) + [ROOT / "fpzo_ray/protocol.py"]
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in engine
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if choosing.search(line)
    ]
    assert not found, found


def test_the_fields_a_target_replaces_are_not_logged_as_parameters():
    from fpzo_ray.config import flatten, params_of

    own = flatten(params_of(config_from_dict(OWN)))
    assert {"data.name", "model.name", "model.norm", "model.activation"}.isdisjoint(own)
    assert own["model.target"] == f"{T}:mlp" and own["model.args.hidden"] == 12
    default = flatten(params_of(config_from_dict({})))
    assert default["data.name"] == "digits" and default["model.norm"] == "group"


def test_a_report_reads_configurations_whose_modules_it_cannot_import():
    """``python -m fpzo_ray.report`` reads records of runs: the researcher's modules need not
    be importable where the report is made, and none of their code runs."""
    from fpzo_ray.config import records_only
    from fpzo_ray.report.labels import method_label

    raw = {
        "data": {"target": "not_here:load"},
        "model": {"target": "not_here:build"},
        "training": {"algorithm": "not_here:MyFedSGD"},
    }
    with pytest.raises(ConfigError, match="no module named 'not_here'"):
        config_from_dict(raw)
    with records_only():
        cfg = config_from_dict(raw)
        assert method_label(cfg) == "dense MyFedSGD"
    with pytest.raises(ConfigError):  # outside, they are checked again
        config_from_dict(raw)


def test_a_plain_function_saliency_is_the_servers_and_bills_no_client():
    """It reads no data: 38 MFLOPs and 122 KB of upload were billed to clients for a
    magnitude method that computed nothing on them."""
    from fpzo_ray.sim.client import ClientRuntime
    from fpzo_ray.sim.in_process import InProcessPool
    from fpzo_ray.sim.server import FederatedServer

    cfg = config_from_dict(OWN)
    dataset, partition = federated_data(cfg)
    server = FederatedServer(cfg, dataset, InProcessPool(ClientRuntime(cfg, dataset, partition)))
    summary = server.prune()
    assert summary["kept_fraction"] == pytest.approx(0.5, abs=0.02)
    assert summary["pruning_client_flops"] == 0 and summary["pruning_upload_bytes"] == 0
    assert summary["pruning_download_bytes"] == 0


def test_the_fedprox_example_pulls_the_local_steps_toward_the_broadcast_weights(monkeypatch):
    """examples/fedprox: ``local_gradient`` is BP FedAvg's one hook for a variant: mu = 0 is
    FedAvg exactly, and a proximal term shortens every client's update."""
    from fpzo_ray.sim.client import ClientRuntime
    from fpzo_ray.sim.in_process import InProcessPool
    from fpzo_ray.sim.server import FederatedServer

    def first_round_updates(algorithm: str, mu: float | None = None) -> list[torch.Tensor]:
        training = {
            "algorithm": algorithm,
            "mode": "fedavg",
            "local_steps": 10,
            "client_lr": 0.1,
            "rounds": 1,
            "clients_per_round": 3,
        }
        if mu is not None:
            training["args"] = {"mu": mu}
        raw = {
            "data": {"num_clients": 6, "partition": "dirichlet", "alpha": 0.1},
            "pruning": {"method": "dense", "clients_per_iteration": 3},
            "training": training,
        }
        cfg = config_from_dict(raw)
        dataset, partition = federated_data(cfg)
        server = FederatedServer(
            cfg, dataset, InProcessPool(ClientRuntime(cfg, dataset, partition))
        )
        server.prune()
        replies = server.pool.run(*_round_zero(server)).replies
        return [r.upload.dense_update for r in replies]

    fedavg = first_round_updates("bp")
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "fedprox"))
    same = first_round_updates("fedprox:FedProx", mu=0.0)
    assert all(torch.equal(a, b) for a, b in zip(fedavg, same))
    pulled = first_round_updates("fedprox:FedProx", mu=1.0)
    assert all(p.norm() < 0.9 * a.norm() for p, a in zip(pulled, fedavg))


def _round_zero(server):
    from fpzo_ray.sim.messages import MaskBroadcast, TrainBroadcast

    start = server.optimizer.weights.detach().clone()
    clients = [0, 1, 2]
    return (
        MaskBroadcast(server.mask_version, server.mask.prunable_kept),
        TrainBroadcast(0, server.mask_version, start),
        clients,
    )
