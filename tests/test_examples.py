"""The examples (``examples/<name>``): a researcher's model, data and algorithm in files of
their own, named in YAML. Each trains here over a few rounds (accuracy clearly above chance)
or, too slow for that on a CPU, is checked as before any work; and one example per seam runs
as the README says, ``ray job submit --working-dir examples/<name> -- python -m
fpzo_ray.sweep sweep.yaml``, on a Ray head of its own (:data:`RAY_JOBS`)."""

from __future__ import annotations

import secrets
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from studies import ROOT, command_env, ray_cli, start_head, stop_head

from fpzo_ray.config import config_from_dict, merge
from fpzo_ray.data import federated_data, load_dataset
from fpzo_ray.preflight import preflight
from fpzo_ray.sim.client import ClientRuntime
from fpzo_ray.sim.in_process import InProcessPool
from fpzo_ray.sim.server import FederatedServer
from fpzo_ray.sweep.spec import load_sweep

EXAMPLES = ROOT / "examples"
#: Run as Ray jobs here, one per seam the job's working directory must carry to the workers:
#: a model and a data loader of the example's own (tabular_wine), an algorithm of its own
#: (fedkseed). vit_digits (its own model), text_transformer (its own data module, a package
#: model) and resnet18_bn (a torchvision model, minutes a round on CPU) are trained or checked
#: in process below; each job runs one trial of its sweep (``--set`` keeps one value of its
#: axis): what travels is the same for every trial, and a trial's processes cost half a
#: minute to start here.
RAY_JOBS = {"tabular_wine": "pruning.sparsity=0.5", "fedkseed": "method=fedkseed"}


@pytest.fixture
def example(monkeypatch):
    """The sweep file of an example, with its folder importable (as ``ray job submit
    --working-dir`` makes it for the job's driver and workers)."""

    def open_example(name: str) -> dict:
        monkeypatch.syspath_prepend(str(EXAMPLES / name))
        return yaml.safe_load((EXAMPLES / name / "sweep.yaml").read_text())

    return open_example


@pytest.mark.parametrize("name", sorted(p.parent.name for p in EXAMPLES.glob("*/sweep.yaml")))
def test_every_example_sweep_file_loads_and_validates(example, name):
    """Every trial configuration of every example, validated as the sweep does before any
    work (its own modules imported from the example's folder)."""
    example(name)
    assert load_sweep(EXAMPLES / name / "sweep.yaml").validated_configs()


def test_the_fedprox_example_compares_mu_values_fairly(example):
    """One search of the client rate per mu, on validation, then fresh seeds: the same
    tuning effort for FedAvg (mu = 0) and each FedProx."""
    example("fedprox")
    spec = load_sweep(EXAMPLES / "fedprox" / "sweep.yaml")
    assert spec.study is not None and spec.study.seeds >= 3
    assert spec.search is not None and spec.search.metric == "val_accuracy"
    mus = sorted(spec.run_config(c, {})["training"]["args"]["mu"] for c in spec.cells())
    assert mus[0] == 0.0 and len(mus) == 4


def _server(raw: dict, rounds: int) -> FederatedServer:
    """A pruned in-process federation of ``raw`` with ``rounds`` rounds to run."""
    cfg = config_from_dict(merge(raw, {"training": {"rounds": rounds}}))
    dataset, partition = federated_data(cfg)
    runtime = ClientRuntime(cfg, dataset, partition)
    server = FederatedServer(cfg, dataset, InProcessPool(runtime))
    server.prune()
    return server


def _train(server: FederatedServer) -> list[dict]:
    return [server.run_round(r) for r in range(server.cfg.training.rounds)]


def test_vit_pruned_by_federated_ntk_sap_trains_bp_free(example):
    spec = example("vit_digits")
    variants = spec["grid"]["method"]
    server = _server(merge(spec["base"], variants["ntk_sap_zo"]), rounds=40)
    density = server.pruning_summary["layer_density"]
    # the attention's projections are Linear layers: pruned like every other weight, and so is
    # the positional embedding the model lists in ``prunable_parameters``
    for weight in ("query", "key", "value", "out"):
        assert density[f"blocks.0.attention.{weight}.weight"] < 1.0
    assert density["positions"] < 1.0
    assert server.pruning_summary["kept_fraction"] == pytest.approx(0.5, abs=0.01)
    assert (
        server.pruning_summary["sparse_forward_flops_per_sample"]
        < server.pruning_summary["dense_forward_flops_per_sample"]
    )
    assert _train(server)[-1]["test_accuracy"] > 0.35  # 10 classes: chance is 0.1

    for name in ("dense_zo", "bp_fedavg"):
        dense = _server(merge(spec["base"], variants[name]), rounds=20)
        assert dense.pruning_summary["kept_fraction"] == 1.0
        assert _train(dense)[-1]["test_accuracy"] > 0.3, name


def test_tabular_mlp_on_its_own_loader_trains(example):
    spec = example("tabular_wine")
    server = _server(merge(spec["base"], {"pruning": {"sparsity": 0.5}}), rounds=40)
    assert server.input_shape == (13,) and server.num_classes == 3
    metrics = _train(server)
    assert metrics[-1]["test_accuracy"] > 0.8  # 3 cultivars: chance is 0.4 at most
    assert metrics[-1]["val_accuracy"] > 0.6


def test_fedkseed_rebuilds_the_model_from_the_seed_pool_and_downloads_no_weights(example):
    spec = example("fedkseed")
    methods = spec["grid"]["method"]
    pool = methods["fedkseed"]["training"]["args"]["pool_size"]
    seeded = _server(merge(spec["base"], methods["fedkseed"]), rounds=30)
    metrics = _train(seeded)
    assert metrics[-1]["test_accuracy"] > 0.35  # 10 classes: chance is 0.1

    # a client rebuilds the global model from w_0, the pool and the P scalars it downloads
    algorithm = seeded.algorithm
    rebuilt = algorithm.rebuild(seeded.initial_flat, algorithm.coefficients.float())
    torch.testing.assert_close(rebuilt, seeded.optimizer.weights.detach(), atol=1e-5, rtol=0)

    plain = _server(merge(spec["base"], methods["zo_fedsgd"]), rounds=2)
    baseline = _train(plain)
    clients = spec["base"]["training"]["clients_per_round"]
    d = plain.num_trained
    assert metrics[0]["round_upload_bytes"] == baseline[0]["round_upload_bytes"]  # K scalars
    assert metrics[0]["round_download_bytes"] == clients * (4 * pool + 8)
    assert baseline[0]["round_download_bytes"] == clients * (4 * d + 8)


def test_text_transformer_example_learns_the_reviews_sentiment(example, tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)  # the example writes its corpus beside the sweep
    spec = example("text_transformer")
    server = _server(merge(spec["base"], spec["grid"]["method"]["bp_fedavg"]), rounds=20)
    assert server.pruning_summary["kept_fraction"] == 1.0
    assert _train(server)[-1]["test_accuracy"] > 0.7  # two classes: 0.53 the larger


def test_resnet18_example_is_checked_before_any_work(example):
    """torchvision's ResNet-18 by import path on the CIFAR-shaped digits: built, run on two
    inputs and its mask checked as preflight does (training it takes minutes a round)."""
    spec = example("resnet18_bn")
    for variant in spec["grid"]["method"].values():
        preflight([config_from_dict(merge(spec["base"], variant))])
    dataset = load_dataset(config_from_dict(spec["base"]).data)
    assert dataset.input_shape == (3, 32, 32)


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head of the module's own, beside the session's Ray, as a cluster would be."""
    env = {**command_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    temp_dir = Path(tempfile.mkdtemp(prefix="rx", dir="/tmp"))  # Ray's socket paths are short
    head, dashboard = start_head(temp_dir, env)
    yield env, dashboard
    stop_head(head, temp_dir)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("name", RAY_JOBS)
def test_each_example_runs_as_a_ray_job_from_its_own_folder(ray_head, tmp_path, name):
    """The model, data and algorithm named by import path are found by the job's driver
    and by every Ray worker its trials start (the working directory travels with the job)."""
    env, dashboard = ray_head
    results = tmp_path / "results"
    ray_cli(
        "job",
        "submit",
        "--address",
        dashboard,
        "--working-dir",
        str(EXAMPLES / name),
        "--",
        sys.executable,
        "-m",
        "fpzo_ray.sweep",
        "sweep.yaml",
        "--set",
        "training.rounds=3",
        "--set",
        "training.eval_every=1",
        "--set",
        "pruning.iterations=1",
        "--set",
        RAY_JOBS[name],
        "--results-dir",
        str(results),
        env=env,
        timeout=600,
    )
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fpzo_ray")
    runs = client.search_runs([experiment.experiment_id], "tags.phase = 'grid'")
    assert len(runs) == 1
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "test_accuracy")
        assert sorted(m.step for m in history) == [1, 2, 3]
        assert history[-1].value > 0
