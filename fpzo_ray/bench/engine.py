"""engine: what the Ray engine costs over the same client work in a plain loop.

The workload: LeNet-5 on MNIST (``--data-root`` holding MNIST/raw; else the digits CNN),
100 clients, 10 a round, ZO FedSGD with K = 20 and batches of 32. Throughput is client updates
per second over the same rounds, in each ZO execution mode (``zo.batching`` loop and batched):

- ``loop``: the clients' work in this process, one after another, one torch thread (no Ray,
  no server), in that mode;
- ``engine_1``: the whole engine (server actor, one worker actor with one CPU, aggregation
  included);
- ``engine_2``: the same with two worker actors on the two cores.

Also printed: each engine round's wall time split into client compute (the busiest worker),
waiting (less busy workers idling), Ray transfer and scheduling, aggregation and evaluation.
Keys: ``one_worker_over_loop``, ``two_workers_over_loop`` (loop mode, engine over the loop in
the same mode: the engine's own overhead), ``batched`` (the same two ratios in batched mode).
``bench throughput`` compares every mode against the plain loop instead.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import ray

from fpzo_ray.bench.common import data_root, workload_data
from fpzo_ray.bench.throughput import plain_loop, workload
from fpzo_ray.bench.timing import table
from fpzo_ray.config import RunConfig

SPLIT = (
    "time_round_s",
    "time_client_compute_s",
    "time_waiting_s",
    "time_ray_transfer_s",
    "time_aggregation_s",
    "time_evaluation_s",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(data_root()))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)


def engine(cfg: RunConfig, warmup: int, rounds: int) -> tuple[float, dict[str, float]]:
    """Client updates per second of engine rounds, and the mean round's time split."""
    from fpzo_ray.sim.federation import start_federation

    federation = start_federation(cfg)
    try:
        ray.get(federation.server.prune.remote())
        for r in range(warmup):
            ray.get(federation.server.run_round.remote(r))
        started = time.perf_counter()
        reports = [ray.get(federation.server.run_round.remote(warmup + r)) for r in range(rounds)]
        elapsed = time.perf_counter() - started
    finally:
        federation.shutdown()
    split = {key: float(np.mean([m[key] for m in reports])) for key in SPLIT}
    return sum(m["aggregated_clients"] for m in reports) / elapsed, split


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fpzo_ray.sim.ray_session import init_ray

    init_ray()
    data = workload_data(args.data_root)
    total = args.warmup + args.rounds + 1
    rows, splits, ratios = [], [], {}
    for batching in ("loop", "batched"):
        cfg = workload(data, total, batching)
        loop = plain_loop(cfg, args.warmup, args.rounds)[0]
        one, split_one = engine(cfg, args.warmup, args.rounds)
        two, split_two = engine(
            workload(data, total, batching, workers=2, worker_cpus=0.9), args.warmup, args.rounds
        )
        loop = (loop + plain_loop(cfg, args.warmup, args.rounds)[0]) / 2  # the machine drifts
        ratios[batching] = (one / loop, two / loop)
        rows += [
            {"mode": batching, "setup": setup, "updates_per_s": rate, "over_loop": rate / loop}
            for setup, rate in (
                ("loop (1 thread)", loop),
                ("engine, 1 worker", one),
                ("engine, 2 workers", two),
            )
        ]
        splits += [
            {"mode": batching, "workers": n, **{k: 1e3 * v for k, v in split.items()}}
            for n, split in ((1, split_one), (2, split_two))
        ]
    print(
        f"Client updates per second ({cfg.data.name}, {cfg.model_name}, K = 20, batch 32, "
        f"10 clients a round, {args.rounds} rounds), each mode over its own plain loop"
    )
    print(table(rows, ["mode", "setup", "updates_per_s", "over_loop"]))
    print("\nMean engine round, milliseconds")
    print(table(splits, ["mode", "workers", *SPLIT]))
    return {
        "one_worker_over_loop": ratios["loop"][0],
        "two_workers_over_loop": ratios["loop"][1],
        "batched": {
            "one_worker_over_loop": ratios["batched"][0],
            "two_workers_over_loop": ratios["batched"][1],
        },
        "rows": rows,
        "round_split_ms": splits,
    }
