"""population: a 10,000-client population on one machine, and who can take part.

Part 1, scale: LeNet-5 on MNIST (``--data-root`` holding MNIST/raw), 100 clients a round,
ZO FedSGD (K = 20), batches of 4 samples so that a client's work is the same whatever the
population (10,000 clients hold 6 MNIST images each). The round time is measured side by side
for populations of 1,000 and 10,000 (idle clients must cost nothing), and the memory footprint
of the whole Ray session (proportional set size of every Ray process and this driver) with
10,000 clients. Keys: ``footprint_gib``, ``round_time_10k_over_1k``.

Part 2, participation: the shipped device mix (``sim/devices.yaml``: microcontroller boards,
Pi Zero 2 W, Pi 4, Jetson Nano, phones), 1,000 clients, LeNet-5, BP FedAvg versus the paper's
method (federated NTK-SAP at 90 % sparsity + ZO FedSGD): who runs out of memory, who takes
part, and the simulated time per round. Key ``participation``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from typing import Any

from fpzo_ray.bench.common import data_root, ray_footprint_bytes, workload_data
from fpzo_ray.bench.timing import table
from fpzo_ray.config import RunConfig, config_from_dict

GIB = 2**30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(data_root()))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--participation-rounds", type=int, default=10)


def scale_config(args: argparse.Namespace, clients: int) -> RunConfig:
    return config_from_dict(
        {
            "data": {
                **workload_data(args.data_root),
                "num_clients": clients,
                "min_partition_size": 1,
            },
            "pruning": {"method": "dense"},
            "training": {
                "rounds": args.rounds + 2,
                "clients_per_round": 100,
                "batch_size": 4,
                "eval_every": 10_000,
            },
            "zo": {"num_perturbations": 20},
            "simulation": {"num_workers": 2, "worker_cpus": 0.9, "server_cpus": 0.1},
        }
    )


def round_times(cfg: RunConfig, warmup: int = 2) -> tuple[list[float], int]:
    """Wall seconds of each measured round, and the Ray footprint while the run is live."""
    import ray

    from fpzo_ray.sim.ray.federation import start_federation

    federation = start_federation(cfg)
    try:
        ray.get(federation.server.prune.remote())
        times = []
        for r in range(cfg.training.rounds - 1):
            started = time.perf_counter()
            ray.get(federation.server.run_round.remote(r))
            if r >= warmup:
                times.append(time.perf_counter() - started)
        footprint = ray_footprint_bytes()
    finally:
        federation.shutdown()
    return times, footprint


def participation(args: argparse.Namespace, algorithm: str) -> dict[str, Any]:
    from fpzo_ray.sim.callbacks import EachRound
    from fpzo_ray.sim.devices import client_devices
    from fpzo_ray.sim.ray.federation import run_federated

    training: dict[str, Any] = {
        "rounds": args.participation_rounds,
        "clients_per_round": 50,
        "batch_size": 32,
        "eval_every": args.participation_rounds,
    }
    pruning: dict[str, Any] = {"method": "ntk_sap", "sparsity": 0.9, "iterations": 5}
    if algorithm == "bp":
        training.update(
            algorithm="bp",
            mode="fedavg",
            local_steps=5,
            client_lr=0.05,
            server_optimizer="sgd",
            server_lr=1.0,
        )
        pruning = {"method": "dense"}
    cfg = config_from_dict(
        {
            "data": {**workload_data(args.data_root), "num_clients": 1000},
            "training": training,
            "pruning": pruning,
            "zo": {"num_perturbations": 20},
            "devices": {"enabled": True},
            "simulation": {"num_workers": 2, "worker_cpus": 0.9, "server_cpus": 0.1},
        }
    )
    reports: list[dict] = []
    records = run_federated(cfg, EachRound(lambda metrics, _state: reports.append(metrics))).records
    devices = client_devices(cfg)
    assert devices is not None
    statuses: dict[str, Counter] = {}
    peaks: dict[str, int] = {}
    for record in records:
        statuses.setdefault(record["device"], Counter())[record["status"]] += 1
        peak = record.get("sparse_memory_bytes") or record.get("peak_memory_bytes")
        if peak and peak == peak:  # skip NaN
            peaks[record["device"]] = max(peaks.get(record["device"], 0), int(peak))
    rows = []
    for profile in devices.catalog.profiles:
        seen = statuses.get(profile.name, Counter())
        rows.append(
            {
                "method": "BP FedAvg" if algorithm == "bp" else "NTK-SAP 90% + ZO",
                "device": profile.name,
                "budget_MB": profile.memory_mb,
                "peak_MB": peaks.get(profile.name, 0) / 1e6 or None,
                "sampled": sum(seen.values()),
                "took_part": seen["ok"],
                "out_of_memory": seen["oom"],
                "unavailable": seen["unavailable"],
            }
        )
    last = reports[-1]
    return {
        "rows": rows,
        "test_accuracy": last["test_accuracy"],
        "simulated_time_s": last["simulated_time_s"],
        "aggregated": sum(r["aggregated_clients"] for r in reports),
        "sampled": sum(r["participants"] for r in reports),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fpzo_ray.sim.ray.ray_session import init_ray

    if workload_data(args.data_root)["name"] != "mnist":
        raise SystemExit(
            f"population needs real MNIST under {args.data_root}/MNIST/raw "
            "(10,000 clients need more than the 1,437 digits)"
        )
    init_ray()
    small, _ = round_times(scale_config(args, 1_000))
    large, footprint = round_times(scale_config(args, 10_000))
    small_again, _ = round_times(scale_config(args, 1_000))  # the machine may have changed
    t_small = statistics.median(small + small_again)
    t_large = statistics.median(large)
    print(
        f"Round time, 100 clients a round: population 1,000: {1e3 * t_small:.0f} ms, "
        f"10,000: {1e3 * t_large:.0f} ms (ratio {t_large / t_small:.3f}); Ray footprint "
        f"with 10,000 clients: {footprint / GIB:.2f} GiB",
        flush=True,
    )

    results = {name: participation(args, name) for name in ("bp", "zo")}
    rows = results["bp"]["rows"] + results["zo"]["rows"]
    print(
        "\nWho takes part: the shipped device mix, 1,000 clients, 50 a round, "
        f"{args.participation_rounds} rounds (LeNet-5 peak memory, model stored sparsely)"
    )
    print(
        table(
            rows,
            [
                "method",
                "device",
                "budget_MB",
                "peak_MB",
                "sampled",
                "took_part",
                "out_of_memory",
                "unavailable",
            ],
        )
    )
    for name, label in (("bp", "BP FedAvg"), ("zo", "NTK-SAP 90% + ZO")):
        r = results[name]
        print(
            f"{label}: {r['aggregated']} of {r['sampled']} sampled clients aggregated, "
            f"simulated time {r['simulated_time_s']:.0f} s, test accuracy "
            f"{r['test_accuracy']:.3f} after {args.participation_rounds} rounds"
        )
    return {
        "footprint_gib": footprint / GIB,
        "round_time_10k_over_1k": t_large / t_small,
        "round_time_1k_s": t_small,
        "round_time_10k_s": t_large,
        "participation": results,
    }
