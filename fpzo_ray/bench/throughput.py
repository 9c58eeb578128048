"""throughput: simulated client updates per second, against the plain loop and the machine.

Two workloads, each ZO FedSGD with K = 20 and batches of 32, 100 clients, 10 a round: the
digits CNN on the bundled digits, and LeNet-5 on MNIST (``--data-root`` holding MNIST/raw;
without it the LeNet rows are skipped, saying so). Measured, interleaved in one run (every
setup once per pass, ``--passes`` passes, medians):

- ``loop``: the plain eager loop: the clients' work one after another in this process, one
  torch thread, ``zo.batching: loop`` (the reference every ratio is over);
- the engine with 1 and 2 worker actors (server actor, aggregation and the driver's per-round
  MLflow logging included) in each ZO mode: ``loop`` and ``batched``, each eager or with
  ``simulation.compile``;
- ``sgemm``: one thread multiplying 1024 x 1024 float32 matrices, this machine's dense
  arithmetic rate.

Printed per row: client updates per second, the ratio to the loop, the client FLOP/s the
setup achieved (the clients' counted FLOPs over wall time) and that rate as a fraction of
sgemm's (of two threads' for two workers). Keys: ``digits_two_workers_over_loop``,
``lenet_two_workers_over_loop`` (the best mode with 2 workers over the loop),
``lenet_gflops_fraction_of_sgemm`` (2 workers vs 2 x one-thread sgemm), ``modes`` (rows).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from fpzo_ray.bench.common import data_root
from fpzo_ray.bench.timing import table
from fpzo_ray.config import RunConfig, config_from_dict
from fpzo_ray.data import load_dataset, make_partition
from fpzo_ray.protocol import round_participants
from fpzo_ray.pruning import Mask
from fpzo_ray.sim.client import ClientRuntime, serve_clients
from fpzo_ray.sim.messages import MaskBroadcast, TrainBroadcast, TrainReply

MODES = (("loop", False), ("batched", False), ("loop", True), ("batched", True))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(data_root()))
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds per setup")
    parser.add_argument("--warmup", type=int, default=3, help="rounds before measuring")
    parser.add_argument("--passes", type=int, default=3, help="interleaved passes (medians)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled modes")


def workload(
    data: dict[str, Any],
    rounds: int,
    batching: str = "loop",
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
                "eval_every": 10_000,
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


def engine(cfg: RunConfig, warmup: int) -> tuple[float, float]:
    """(client updates per second, client FLOP/s) of whole engine rounds, reported to MLflow
    the way ``python -m fpzo_ray.run`` reports them (queued; the store is a local SQLite
    file)."""
    from fpzo_ray.sim.federation import run_federated
    from fpzo_ray.tracking import MLflowTracker, round_metrics

    with tempfile.TemporaryDirectory() as folder:
        tracker = MLflowTracker(f"sqlite:///{folder}/mlflow.db", "throughput", folder)
        run_id = tracker.start_run("throughput", {})
        marks: list[tuple[float, int, int]] = []  # (time, clients, flops) after each round

        def report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
            tracker.queue_metrics(run_id, round_metrics(metrics), int(metrics["round"]))
            marks.append(
                (
                    time.perf_counter(),
                    int(metrics["aggregated_clients"]),
                    int(metrics["round_client_flops"]),
                )
            )

        run_federated(cfg, report)
        tracker.flush()
        tracker.end_run(run_id)
    measured = marks[warmup:-1]  # the last round ends with the final evaluation
    seconds = measured[-1][0] - marks[warmup - 1][0]
    return sum(m[1] for m in measured) / seconds, sum(m[2] for m in measured) / seconds


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
    from fpzo_ray.sim.ray_session import init_ray

    init_ray()
    workloads = {"digits": {"name": "digits"}}
    mnist = workload_data(args.data_root)
    if mnist["name"] == "mnist":
        workloads["lenet"] = mnist
    else:
        print(f"(no MNIST under {args.data_root}: the LeNet-5 rows are skipped)")
    modes = [m for m in MODES if not (m[1] and args.no_compile)]
    total = args.warmup + args.rounds
    setups: dict[tuple[str, str], Callable[[], tuple[float, float]]] = {}
    for name, data in workloads.items():
        setups[(name, "loop (plain, 1 thread)")] = partial(
            plain_loop, workload(data, total), args.warmup, args.rounds
        )
        for batching, compiled in modes:
            for workers, cpus in ((1, 1.0), (2, 0.9)):
                label = f"engine {workers}w, {batching}{' + compile' if compiled else ''}"
                cfg = workload(data, total + 1, batching, compiled, workers, cpus)
                setups[(name, label)] = partial(engine, cfg, args.warmup)
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {k: [] for k in setups}
    gemm: list[float] = []
    for _ in range(args.passes):
        gemm.append(sgemm_flops())
        for key, measure in setups.items():
            samples[key].append(measure())
    sgemm = statistics.median(gemm)
    rows: list[dict[str, Any]] = []
    for (name, label), values in samples.items():
        updates = statistics.median(v[0] for v in values)
        flops = statistics.median(v[1] for v in values)
        threads = 2 if " 2w," in label else 1
        rows.append(
            {
                "workload": name,
                "setup": label,
                "updates_per_s": updates,
                "gflops": flops / 1e9,
                "fraction_of_sgemm": flops / (threads * sgemm),
            }
        )
    for row in rows:
        loop = next(
            r for r in rows if r["workload"] == row["workload"] and r["setup"].startswith("loop")
        )
        row["over_loop"] = row["updates_per_s"] / loop["updates_per_s"]
    print(
        f"Client updates per second (ZO FedSGD, K = 20, batch 32, 10 clients a round, "
        f"{args.rounds} rounds, median of {args.passes} interleaved passes); one-thread "
        f"sgemm here: {sgemm / 1e9:.1f} GFLOP/s"
    )
    print(
        table(
            rows, ["workload", "setup", "updates_per_s", "over_loop", "gflops", "fraction_of_sgemm"]
        )
    )

    def best_two(name: str, key: str) -> float | None:
        values = [r[key] for r in rows if r["workload"] == name and " 2w," in r["setup"]]
        return max(values) if values else None

    return {
        "digits_two_workers_over_loop": best_two("digits", "over_loop"),
        "lenet_two_workers_over_loop": best_two("lenet", "over_loop"),
        "lenet_gflops_fraction_of_sgemm": best_two("lenet", "fraction_of_sgemm"),
        "sgemm_gflops": sgemm / 1e9,
        "modes": rows,
    }
