"""The Ray engine against the in-process reference: same numbers, whatever the worker count."""

import pytest
import torch

from fpzo_ray.config import config_from_dict
from fpzo_ray.data import federated_data, make_partition
from fpzo_ray.sim.callbacks import EachRound
from fpzo_ray.sim.in_process import run_in_process
from fpzo_ray.sim.ray.federation import run_federated

RAW = {
    "data": {"num_clients": 24, "partition": "dirichlet", "alpha": 0.3},
    "pruning": {"sparsity": 0.6, "iterations": 2, "clients_per_iteration": 5},
    "zo": {"num_perturbations": 6},
    "training": {"rounds": 4, "clients_per_round": 7, "eval_every": 2, "ema_decay": 0.9},
    "task": {"federated_eval_clients": 5},
    "simulation": {"worker_cpus": 0.25, "server_cpus": 0.1},
}


def _ray_run(num_workers: int):
    raw = {**RAW, "simulation": {**RAW["simulation"], "num_workers": num_workers}}
    reports = []
    records = run_federated(
        config_from_dict(raw), EachRound(lambda metrics, _state: reports.append(metrics))
    ).records
    return reports, records


@pytest.fixture(scope="module")
def reference():
    cfg = config_from_dict(RAW)
    return run_in_process(cfg, *federated_data(cfg))


def _strip(metrics):
    """The run's figures, without wall-clock timings (measurements of the machine)."""
    return {k: v for k, v in metrics.items() if k != "setup" and not k.startswith("time_")}


def test_batched_ray_run_is_the_same_with_one_or_two_workers(ray_session):
    """``zo.batching: batched`` sums in another order than the loop (float32 rounding), but a
    run in that mode is still a function of its config and seed, whatever the worker count."""
    raw = {**RAW, "zo": {**RAW["zo"], "batching": "batched"}}
    runs = []
    for workers in (1, 2):
        reports: list = []
        cfg = config_from_dict({**raw, "simulation": {**raw["simulation"], "num_workers": workers}})
        run_federated(cfg, EachRound(lambda metrics, _state, out=reports: out.append(metrics)))
        runs.append([_core(m) for m in reports])
    assert runs[0] == runs[1]
    assert runs[0][-1]["test_accuracy"] > 0


@pytest.mark.parametrize("num_workers", [1, 3])
def test_ray_run_equals_in_process_run(ray_session, reference, num_workers):
    reports, records = _ray_run(num_workers)
    # bit-identical metrics, every round
    assert [_core(m) for m in reports] == [_core(m) for m in reference]
    assert reports[-1]["cumulative_worker_failures"] == 0
    assert reports[0]["setup"]["pruning_method"] == "ntk_sap"
    statuses = [r["status"] for r in records]
    assert statuses.count("ok") == 4 * 7 and statuses.count("evaluated") == 2 * 5
    assert len(statuses) == 4 * 7 + 2 * 5
    assert "test_accuracy" in reports[1] and "test_accuracy" not in reports[0]
    assert "federated_accuracy" in reports[1] and "federated_accuracy" not in reports[0]


@pytest.mark.parametrize("batching", ["loop", "batched"])
def test_server_state_round_trips_to_the_same_run(digits, batching):
    """Checkpoint after 2 rounds, restore into a fresh server: rounds 3-4 are identical."""
    from fpzo_ray.sim.client import ClientRuntime
    from fpzo_ray.sim.in_process import InProcessPool
    from fpzo_ray.sim.server import FederatedServer

    cfg = config_from_dict({**RAW, "zo": {**RAW["zo"], "batching": batching}})
    parts = make_partition(cfg.data, digits.train_labels, cfg.seed)

    def server():
        return FederatedServer(cfg, digits, InProcessPool(ClientRuntime(cfg, digits, parts)))

    straight = server()
    straight.prune()
    expected = [_strip(straight.run_round(r)) for r in range(4)]
    first = server()
    first.prune()
    [first.run_round(r) for r in range(2)]
    state = first.state_dict()
    second = server()  # a new process would start like this
    second.load_state_dict(state)
    assert [_strip(second.run_round(r)) for r in range(2, 4)] == expected[2:]
    assert second.records() == straight.records()


@pytest.mark.parametrize("policy", ["retry", "drop"])
def test_a_worker_killed_mid_round_does_not_end_the_run(ray_session, reference, policy):
    import ray

    from fpzo_ray.sim.ray.federation import start_federation

    raw = {
        **RAW,
        "training": {**RAW["training"], "rounds": 6},
        "simulation": {**RAW["simulation"], "num_workers": 2, "on_worker_failure": policy},
    }
    cfg = config_from_dict(raw)
    federation = start_federation(cfg)
    try:
        ray.get(federation.server.prune.remote())
        metrics = [ray.get(federation.server.run_round.remote(0))]
        victim = federation.pool.workers[0]
        # Kill worker 0 once round 1 is submitted (SIGKILL-equivalent, no restart): its
        # round-1 work is lost wherever it was (a 50 ms timer once fired after the last round).
        round_1 = federation.server.run_round.remote(1)
        ray.kill(victim, no_restart=True)
        metrics.append(ray.get(round_1))
        metrics += [ray.get(federation.server.run_round.remote(r)) for r in range(2, 6)]
        records = ray.get(federation.server.records.remote())
    finally:
        federation.shutdown()
    assert metrics[-1]["cumulative_worker_failures"] >= 1
    if policy == "retry":
        # Every client's work is a function of its seeds: the run is the same as without loss.
        expected = run_in_process(cfg, *federated_data(cfg))
        assert [_core(m) for m in metrics] == [_core(m) for m in expected]
        assert metrics[-1]["cumulative_retried_clients"] >= 1
    else:
        lost = [r for r in records if r["status"] == "worker_lost"]
        assert lost and sum(m["failed_clients"] for m in metrics) == len(lost)
        assert all(m["aggregated_clients"] + m["failed_clients"] == 7 for m in metrics)


def _core(metrics):
    """The run's figures, without the engine's own bookkeeping of worker losses."""
    return {k: v for k, v in _strip(metrics).items() if "worker" not in k and "retried" not in k}


@pytest.mark.parametrize(
    "sections",
    [
        {"training": {"mode": "fedavg", "local_steps": 2, "client_lr": 0.05}},
        {"zo": {"perturbation_scope": "layerwise"}},
        {},
        {"zo": {"batching": "batched"}},
        {"zo": {"batching": "batched", "estimator": "central", "chunk_size": 4}},
        {"zo": {"batching": "vmap"}},
    ],
)
def test_estimates_built_on_workers_equal_the_servers_reconstruction(digits, sections):
    from fpzo_ray.sim.client import ClientRuntime
    from fpzo_ray.sim.in_process import InProcessPool
    from fpzo_ray.sim.server import FederatedServer

    runs = {}
    for place in ("workers", "server"):
        raw = {**RAW, "simulation": {**RAW["simulation"], "estimate_on": place}}
        for key, value in sections.items():
            raw[key] = {**RAW.get(key, {}), **value}
        cfg = config_from_dict(raw)
        parts = make_partition(cfg.data, digits.train_labels, cfg.seed)
        server = FederatedServer(cfg, digits, InProcessPool(ClientRuntime(cfg, digits, parts)))
        server.prune()
        runs[place] = (
            [_strip(server.run_round(r)) for r in range(4)],
            server.global_flat_weights(),
        )
    assert runs["workers"][0] == runs["server"][0]
    assert torch.equal(runs["workers"][1], runs["server"][1])


def test_auto_pool_size_follows_the_cpus():
    from fpzo_ray.sim.ray.federation import bundles, resolve_num_workers

    cfg = config_from_dict(
        {"simulation": {"num_workers": 0, "worker_cpus": 0.4, "server_cpus": 0.1}}
    )
    assert resolve_num_workers(cfg, cpus=2) == 4  # (2 - 0.1 driver - 0.1 server) / 0.4
    assert resolve_num_workers(cfg, cpus=2, concurrent_runs=2) == 2
    assert resolve_num_workers(cfg, cpus=64) == cfg.training.clients_per_round
    assert resolve_num_workers(cfg, cpus=0.1) == 1
    assert len(bundles(cfg, num_workers=3)) == 5  # driver, server, 3 workers


def test_idle_workers_do_not_grow(ray_session):
    import ray

    from fpzo_ray.sim.ray.federation import start_federation

    cfg = config_from_dict({**RAW, "training": {**RAW["training"], "rounds": 40}})
    federation = start_federation(cfg)
    try:
        ray.get(federation.server.prune.remote())
        reports = []
        for r in range(40):
            ray.get(federation.server.run_round.remote(r))
            if r in (9, 39):
                reports.append(ray.get([w.memory_report.remote() for w in federation.pool.workers]))
    finally:
        federation.shutdown()
    for early, late in zip(*reports):
        assert late["tensor_bytes"] == early["tensor_bytes"]  # nothing accumulates
        assert late["rss_bytes"] < early["rss_bytes"] * 1.1
