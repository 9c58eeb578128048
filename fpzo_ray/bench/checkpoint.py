"""checkpoint: what a server checkpoint costs, against the rounds it protects.

Runs LeNet-5 on MNIST when ``--data-root`` holds it (else the digits CNN on the bundled digits)
in one process, 100 clients, 10 a round, K = 20, and after 25, 100 and ``--rounds`` rounds
times one checkpoint: the server's ``state_dict`` written with ``save_server_state`` and read
back with ``load_server_state`` (median of 5). Printed: the state's size, the time of a
checkpoint, and its overhead at each cadence (checkpoint time over the time of the rounds
between two checkpoints) measured side by side with the rounds. The state holds every client
record so far, so it grows with the rounds: the figure at the last measurement is the worst.
Key ``overhead_at_default`` (at ``simulation.checkpoint_every``'s default).

Then, end to end (``--sweep-repeats`` > 0): the same two-trial sweep on the bundled digits
(200 rounds, the quick sweep's settings) run with checkpoints off and at the default cadence,
alternating, so that both see the same machine. Tune's own bookkeeping (a checkpoint folder
per checkpoint, experiment-state snapshots) is included. Key ``sweep_overhead_at_default``:
the ratio of median sweep times minus one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fpzo_ray.bench.common import data_root, workload_data
from fpzo_ray.bench.timing import table
from fpzo_ray.config import SimulationConfig, config_from_dict
from fpzo_ray.data import federated_data
from fpzo_ray.sim.checkpoint import load_server_state, save_server_state
from fpzo_ray.sim.client import ClientRuntime
from fpzo_ray.sim.in_process import InProcessPool
from fpzo_ray.sim.server import FederatedServer

CADENCES = (1, 5, 10, 20, 50)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(data_root()))
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument(
        "--sweep-repeats", type=int, default=3, help="end-to-end sweeps per setting (0 = skip)"
    )


def _checkpoint_seconds(server: FederatedServer, folder: Path) -> tuple[float, int]:
    times = []
    path = folder / "server_state.pt"
    for _ in range(5):
        start = time.perf_counter()
        save_server_state(server.state_dict(), path)
        load_server_state(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times), path.stat().st_size


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    cfg = config_from_dict(
        {
            "data": {**workload_data(args.data_root), "num_clients": 100},
            "pruning": {"sparsity": 0.9, "iterations": 5},
            "training": {"rounds": args.rounds, "eval_every": args.rounds},
        }
    )
    dataset, partition = federated_data(cfg)
    server = FederatedServer(cfg, dataset, InProcessPool(ClientRuntime(cfg, dataset, partition)))
    server.prune()
    rows, round_times = [], []
    default = SimulationConfig().checkpoint_every
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            start = time.perf_counter()
            server.run_round(r)
            round_times.append(time.perf_counter() - start)
            if r + 1 in (25, 100, args.rounds):
                seconds, size = _checkpoint_seconds(server, Path(tmp))
                per_round = statistics.median(round_times[-25:])
                row = {
                    "rounds_done": r + 1,
                    "state_KiB": size / 1024,
                    "checkpoint_ms": seconds * 1e3,
                    "round_ms": per_round * 1e3,
                }
                row.update({f"overhead_every_{c}": seconds / (c * per_round) for c in CADENCES})
                rows.append(row)
    print(
        f"\nServer checkpoint cost ({cfg.model_name}, {cfg.data.name}, 100 clients, 10 a round, "
        f"K = 20, 90 % sparse)"
    )
    print(
        table(
            rows,
            [
                "rounds_done",
                "state_KiB",
                "checkpoint_ms",
                "round_ms",
                *[f"overhead_every_{c}" for c in CADENCES],
            ],
        )
    )
    worst = rows[-1]["checkpoint_ms"] / (max(default, 1) * rows[-1]["round_ms"])
    print(
        f"\nAt the default cadence (every {default} rounds) the overhead after "
        f"{args.rounds} rounds is {100 * worst:.2f} % of the rounds' time."
    )
    out = {"rows": rows, "default_every": default, "overhead_at_default": worst}
    if args.sweep_repeats > 0:
        out.update(_sweep_overhead(args.sweep_repeats, default))
    return out


def _sweep_overhead(repeats: int, default: int) -> dict[str, Any]:
    import contextlib
    import io

    import ray

    from fpzo_ray.sim.ray_session import init_ray
    from fpzo_ray.sweep import run_sweep
    from fpzo_ray.sweep_spec import find_sweep_file, load_sweep

    init_ray()
    seconds: dict[int, list[float]] = {0: [], default: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for every in seconds:
                spec = load_sweep(
                    find_sweep_file("sweeps/quick.yaml"),
                    [
                        "pruning.sparsity=0.7",
                        "zo.num_perturbations=10",
                        f"simulation.checkpoint_every={every}",
                        "tracking.experiment=bench",
                    ],
                )
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    outcome = run_sweep(spec, Path(tmp) / f"{every}_{i}")
                seconds[every].append(time.perf_counter() - start)
                assert not outcome.interrupted and set(outcome.trials["status"]) == {"OK"}
    ray.shutdown()
    off, on = (statistics.median(seconds[e]) for e in (0, default))
    print(
        f"\nEnd to end, the quick sweep's two sparse K = 10 trials (200 rounds), median of "
        f"{repeats} alternating runs: {off:.1f} s without checkpoints, {on:.1f} s with one "
        f"every {default} rounds: overhead {100 * (on / off - 1):+.1f} %."
    )
    return {"sweep_seconds": seconds, "sweep_overhead_at_default": on / off - 1}
