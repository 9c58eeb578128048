"""throughput: simulated client updates per second, against the plain loop and the machine.

Two workloads, each ZO FedSGD with K = 20 and batches of 32, 100 clients, 10 a round: the
digits CNN on the bundled digits, and LeNet-5 on MNIST (``--data-root`` holding MNIST/raw;
without it the LeNet rows are skipped, saying so). Measured, interleaved in one run (every
setup once per pass, ``--passes`` passes):

- ``loop``: the plain eager loop: the clients' work one after another in this process, one
  torch thread, ``zo.batching: loop`` (the reference every ratio is over);
- the engine with 1 and 2 worker actors (server actor, aggregation and the driver's per-round
  MLflow logging included) in its default configuration (``zo.batching: auto``) and in
  ``loop`` mode; with ``--compile`` also the default with ``simulation.compile``;
- ``sgemm``: one thread multiplying 1024 x 1024 float32 matrices, this machine's dense
  arithmetic rate.

Printed per row: client updates per second (median), the ratio to the loop (the median of the
passes' ratios, each over the same pass's loop) and its spread over the passes, the client
FLOP/s the setup achieved (the clients' counted FLOPs over wall time) and that rate as a
fraction of sgemm's (of two threads' for two workers). Keys: ``digits_two_workers_over_loop``
and ``lenet_two_workers_over_loop`` (the default configuration with 2 workers over the loop;
goals 2.5 and 3.5), each with ``_spread`` and ``_verdict`` (``met`` only when every pass
meets the goal, "not separable from the goal" when the spread crosses it),
``lenet_gflops_fraction_of_sgemm`` (the same setup vs 2 x one-thread sgemm), ``modes`` (rows).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from fpzo_ray.bench.common import data_root
from fpzo_ray.bench.timing import PassRatios, table
from fpzo_ray.config import RunConfig, config_from_dict
from fpzo_ray.data import load_dataset, make_partition
from fpzo_ray.protocol import round_participants
from fpzo_ray.pruning import Mask
from fpzo_ray.sim.client import ClientRuntime, serve_clients
from fpzo_ray.sim.messages import MaskBroadcast, TrainBroadcast, TrainReply

#: The engine's setups: the default (``auto``), the plain loop mode, and with ``--compile``
#: the default compiled.
MODES = (("auto", False), ("loop", False), ("auto", True))
LOOP = "loop (plain, 1 thread)"
#: The goals of the default configuration with two workers, over the plain loop.
GOALS = {"digits": 2.5, "lenet": 3.5}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(data_root()))
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds per setup")
    parser.add_argument("--warmup", type=int, default=3, help="rounds before measuring")
    parser.add_argument("--passes", type=int, default=3, help="interleaved passes (medians)")
    parser.add_argument("--compile", action="store_true", help="add simulation.compile rows")


def workload(
    data: dict[str, Any],
    rounds: int,
    batching: str = "auto",
    compiled: bool = False,
    workers: int = 1,
    worker_cpus: float = 1.0,
) -> RunConfig:
    return config_from_dict(
        {
            "data": {**data, "num_clients": 100},
            "pruning": {"method": "dense"},
            "training": {
                "rounds": rounds,
                "clients_per_round": 10,
                "batch_size": 32,
                "eval_every": 10_000,  # evaluation off: the clients' throughput
                "eval_subset": 0,
            },
            "zo": {"num_perturbations": 20, "batching": batching},
            "simulation": {
                "num_workers": workers,
                "worker_cpus": worker_cpus,
                "server_cpus": 0.1,
                "compile": compiled,
                "checkpoint_every": 0,
            },
        }
    )


def plain_loop(cfg: RunConfig, warmup: int, rounds: int) -> tuple[float, float]:
    """(client updates per second, client FLOP/s) of the clients' work alone, one thread."""
    torch.set_num_threads(1)
    dataset = load_dataset(cfg.data)
    runtime = ClientRuntime(cfg, dataset, make_partition(cfg.data, dataset.train_labels, cfg.seed))
    mask = MaskBroadcast(1, Mask.dense(runtime.layout).prunable_kept)
    weights = runtime.initial_flat.clone()
    done, flops, elapsed = 0, 0, 0.0
    for r in range(warmup + rounds):
        clients = round_participants(cfg, r)
        started = time.perf_counter()
        replies = serve_clients(runtime, mask, TrainBroadcast(r, 1, weights), clients)
        if r >= warmup:
            elapsed += time.perf_counter() - started
            done += len(clients)
            flops += sum(reply.flops for reply in replies if isinstance(reply, TrainReply))
    return done / elapsed, flops / elapsed


@dataclass(frozen=True)
class TimedRound:
    """One engine round as the driver saw it: when its metrics arrived, how long reporting
    them took (MLflow, queued), and the metrics (the server's own timing among them)."""

    arrived: float
    tracking_s: float
    metrics: dict[str, Any]


def timed_rounds(cfg: RunConfig) -> list[TimedRound]:
    """A whole engine run, reported to MLflow the way ``python -m fpzo_ray.run`` reports it
    (queued; the store a local SQLite file), every round timed at the driver."""
    from fpzo_ray.sim.callbacks import EachRound
    from fpzo_ray.sim.ray.federation import run_federated
    from fpzo_ray.tracking import MLflowTracker, round_metrics

    rounds: list[TimedRound] = []
    with tempfile.TemporaryDirectory() as folder:
        tracker = MLflowTracker(f"sqlite:///{folder}/mlflow.db", "engine", folder)
        run_id = tracker.start_run("engine", {})

        def report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
            arrived = time.perf_counter()
            tracker.queue_metrics(run_id, round_metrics(metrics), int(metrics["round"]))
            rounds.append(TimedRound(arrived, time.perf_counter() - arrived, metrics))

        run_federated(cfg, EachRound(report))
        tracker.flush()
        tracker.end_run(run_id)
    return rounds


def engine(cfg: RunConfig, warmup: int) -> tuple[float, float]:
    """(client updates per second, client FLOP/s) of whole engine rounds (:func:`timed_rounds`)
    after ``warmup`` rounds, the last round (its final evaluation) left out."""
    rounds = timed_rounds(cfg)
    measured = rounds[warmup:-1]
    seconds = measured[-1].arrived - rounds[warmup - 1].arrived
    return (
        sum(int(r.metrics["aggregated_clients"]) for r in measured) / seconds,
        sum(int(r.metrics["round_client_flops"]) for r in measured) / seconds,
    )


def sgemm_flops(size: int = 1024, repeats: int = 20) -> float:
    """FLOP/s of one thread's float32 matrix product."""
    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fpzo_ray.bench.common import workload_data
    from fpzo_ray.sim.ray.ray_session import init_ray

    init_ray()
    workloads = {"digits": {"name": "digits"}}
    mnist = workload_data(args.data_root)
    if mnist["name"] == "mnist":
        workloads["lenet"] = mnist
    else:
        print(f"(no MNIST under {args.data_root}: the LeNet-5 rows are skipped)")
    modes = [m for m in MODES if args.compile or not m[1]]
    total = args.warmup + args.rounds
    setups: dict[tuple[str, str], Callable[[], tuple[float, float]]] = {}
    for name, data in workloads.items():
        setups[(name, LOOP)] = partial(
            plain_loop, workload(data, total, "loop"), args.warmup, args.rounds
        )
        for batching, compiled in modes:
            for workers, cpus in ((1, 1.0), (2, 0.9)):
                cfg = workload(data, total + 1, batching, compiled, workers, cpus)
                setups[(name, _label(workers, batching, compiled))] = partial(
                    engine, cfg, args.warmup
                )
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {k: [] for k in setups}
    gemm: list[float] = []
    for _ in range(args.passes):
        gemm.append(sgemm_flops())
        for key, measure in setups.items():
            samples[key].append(measure())
    sgemm = statistics.median(gemm)
    rows: list[dict[str, Any]] = []
    ratios: dict[tuple[str, str], PassRatios] = {}
    for (name, label), values in samples.items():
        loop = [v[0] for v in samples[(name, LOOP)]]
        ratios[(name, label)] = PassRatios.of([v[0] for v in values], loop)
        low, high = ratios[(name, label)].spread
        flops = statistics.median(v[1] for v in values)
        threads = 2 if label.startswith("engine 2w") else 1
        rows.append(
            {
                "workload": name,
                "setup": label,
                "updates_per_s": statistics.median(v[0] for v in values),
                "over_loop": ratios[(name, label)].median,
                "spread": f"{low:.2f}-{high:.2f}",
                "gflops": flops / 1e9,
                "fraction_of_sgemm": flops / (threads * sgemm),
            }
        )
    print(
        f"Client updates per second (ZO FedSGD, K = 20, batch 32, 10 clients a round, "
        f"{args.rounds} rounds, median of {args.passes} interleaved passes; over_loop: the "
        f"median of each pass's ratio to that pass's plain loop, spread: their range); "
        f"one-thread sgemm here: {sgemm / 1e9:.1f} GFLOP/s"
    )
    columns = ["workload", "setup", "updates_per_s", "over_loop", "spread", "gflops"]
    print(table(rows, [*columns, "fraction_of_sgemm"]))
    result: dict[str, Any] = {"sgemm_gflops": sgemm / 1e9, "modes": rows}
    default = _label(2, "auto", False)
    for name, goal in GOALS.items():
        if (name, default) in ratios:
            headline = f"{name}_two_workers_over_loop"
            result.update(ratios[(name, default)].keys(headline, goal))
            print(f"{headline}: {ratios[(name, default)].text(goal)}")
    if ("lenet", default) in ratios:
        row = next(r for r in rows if (r["workload"], r["setup"]) == ("lenet", default))
        result["lenet_gflops_fraction_of_sgemm"] = row["fraction_of_sgemm"]
    return result


def _label(workers: int, batching: str, compiled: bool) -> str:
    default = " (default)" if (batching, compiled) == ("auto", False) else ""
    return f"engine {workers}w, {batching}{' + compile' if compiled else ''}{default}"
