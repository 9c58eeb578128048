"""engine: what the Ray engine costs over the same client work in a plain loop.

The workload: LeNet-5 on MNIST (``--data-root`` holding MNIST/raw; else the digits CNN),
100 clients, 10 a round, ZO FedSGD with K = 20 and batches of 32. Throughput is client updates
per second over the same rounds:

- ``loop``: the clients' work in this process, one after another, one torch thread (no Ray,
  no server);
- ``engine_1``: the whole engine (server actor, one worker actor with one CPU, aggregation
  included);
- ``engine_2``: the same with two worker actors on the two cores.

Also printed: each engine round's wall time split into client compute (the busiest worker),
waiting (less busy workers idling), Ray transfer and scheduling, aggregation and evaluation.
Keys: ``one_worker_over_loop``, ``two_workers_over_loop``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from fpzo_ray.bench.common import data_root, workload_data
from fpzo_ray.bench.timing import table
from fpzo_ray.config import RunConfig, config_from_dict
from fpzo_ray.data import load_dataset, make_partition
from fpzo_ray.protocol import round_participants
from fpzo_ray.pruning import Mask
from fpzo_ray.sim.client import ClientRuntime, serve_clients
from fpzo_ray.sim.messages import MaskBroadcast, TrainBroadcast


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(data_root()))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)


def workload(args: argparse.Namespace, workers: int, worker_cpus: float) -> RunConfig:
    return config_from_dict(
        {
            "data": {**workload_data(args.data_root), "num_clients": 100},
            "pruning": {"method": "dense"},
            "training": {
                "rounds": args.warmup + args.rounds + 1,
                "clients_per_round": 10,
                "batch_size": 32,
                "eval_every": 10_000,
            },
            "zo": {"num_perturbations": 20},
            "simulation": {"num_workers": workers, "worker_cpus": worker_cpus, "server_cpus": 0.1},
        }
    )


def plain_loop(cfg: RunConfig, args: argparse.Namespace) -> float:
    """Client updates per second of the clients' work alone, in this process."""
    torch.set_num_threads(1)
    dataset = load_dataset(cfg.data)
    runtime = ClientRuntime(cfg, dataset, make_partition(cfg.data, dataset.train_labels, cfg.seed))
    mask = MaskBroadcast(1, Mask.dense(runtime.layout).prunable_kept)
    weights = runtime.initial_flat.clone()
    done, elapsed = 0, 0.0
    for r in range(args.warmup + args.rounds):
        clients = round_participants(cfg, r)
        started = time.perf_counter()
        serve_clients(runtime, mask, TrainBroadcast(r, 1, weights), clients)
        if r >= args.warmup:
            elapsed += time.perf_counter() - started
            done += len(clients)
    return done / elapsed


def engine(cfg: RunConfig, args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    import ray

    from fpzo_ray.sim.federation import start_federation

    federation = start_federation(cfg)
    try:
        ray.get(federation.server.prune.remote())
        for r in range(args.warmup):
            ray.get(federation.server.run_round.remote(r))
        started = time.perf_counter()
        rounds = [
            ray.get(federation.server.run_round.remote(args.warmup + r)) for r in range(args.rounds)
        ]
        elapsed = time.perf_counter() - started
    finally:
        federation.shutdown()
    split = {
        key: float(np.mean([m[key] for m in rounds]))
        for key in (
            "time_round_s",
            "time_client_compute_s",
            "time_waiting_s",
            "time_ray_transfer_s",
            "time_aggregation_s",
            "time_evaluation_s",
        )
    }
    return sum(m["aggregated_clients"] for m in rounds) / elapsed, split


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fpzo_ray.sim.ray_session import init_ray

    init_ray()
    loop = plain_loop(workload(args, 1, 1.0), args)
    one, split_one = engine(workload(args, 1, 1.0), args)
    two, split_two = engine(workload(args, 2, 0.9), args)
    loop_again = plain_loop(workload(args, 1, 1.0), args)  # the machine may have changed
    loop = (loop + loop_again) / 2
    cfg = workload(args, 1, 1.0)
    rows = [
        {"setup": "loop (1 thread)", "updates_per_s": loop, "over_loop": 1.0},
        {"setup": "engine, 1 worker", "updates_per_s": one, "over_loop": one / loop},
        {"setup": "engine, 2 workers", "updates_per_s": two, "over_loop": two / loop},
    ]
    print(
        f"Client updates per second ({cfg.data.name}, {cfg.model_name}, K = 20, batch 32, "
        f"10 clients a round, {args.rounds} rounds)"
    )
    print(table(rows, ["setup", "updates_per_s", "over_loop"]))
    splits = [
        {"workers": n, **{k: 1e3 * v for k, v in split.items()}}
        for n, split in ((1, split_one), (2, split_two))
    ]
    print("\nMean engine round, milliseconds")
    print(
        table(
            splits,
            [
                "workers",
                "time_round_s",
                "time_client_compute_s",
                "time_waiting_s",
                "time_ray_transfer_s",
                "time_aggregation_s",
                "time_evaluation_s",
            ],
        )
    )
    return {
        "one_worker_over_loop": one / loop,
        "two_workers_over_loop": two / loop,
        "rows": rows,
        "round_split_ms": splits,
    }
