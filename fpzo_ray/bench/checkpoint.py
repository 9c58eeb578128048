"""checkpoint: what a server checkpoint costs, against the rounds it protects.

Runs LeNet-5 on MNIST when ``--data-root`` holds it (else the digits CNN on the bundled digits)
in one process, 100 clients, 10 a round, K = 20, and after 25, 100 and ``--rounds`` rounds
times one checkpoint: the server's ``state_dict`` written with ``save_server_state`` and read
back with ``load_server_state`` (median of 5). Printed: the state's size, the time of a
checkpoint, and its overhead at each cadence (checkpoint time over the time of the rounds
between two checkpoints) measured side by side with the rounds. The state holds every client
record so far, so it grows with the rounds: the figure at the last measurement is the worst.
Key ``overhead_at_default`` (at ``simulation.checkpoint_every``'s default).

Then where checkpoints persist (``--storage-passes`` > 0): the same state persisted as a
trial's checkpoint is (written to a local folder, copied to the storage with pyarrow, the
way Tune persists it) and read back (fetched and loaded, the way a restarted trial reads it),
to a local path and to an S3 endpoint (``--s3-endpoint host:port``; without one, moto's
S3-compatible server on a local port when the test extra is installed), in interleaved
passes. Keys ``storage_rows`` (per storage: bytes, median and spread of the persist and read
milliseconds), ``s3_over_local`` (the ratio of a checkpoint's persist-and-read time, per
pass: median and spread) and ``<storage>_persist_overhead_at_default`` (persisting at the
default cadence over the rounds' time).

Then, end to end (``--sweep-repeats`` > 0): the same two-trial sweep on the bundled digits
(200 rounds, the quick sweep's settings) run with checkpoints off and at the default cadence,
alternating, so that both see the same machine. Tune's own bookkeeping (a checkpoint folder
per checkpoint, experiment-state snapshots) is included. Key ``sweep_overhead_at_default``:
the ratio of median sweep times minus one.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
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
    parser.add_argument(
        "--storage-passes",
        type=int,
        default=9,
        help="interleaved passes of a checkpoint persisted to a local path and to S3 (0 = skip)",
    )
    parser.add_argument(
        "--s3-endpoint",
        default=None,
        metavar="HOST:PORT",
        help="an S3-compatible endpoint with a writable bucket fpzo-bench (http); default: "
        "moto's server on a local port, when installed",
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
    out: dict[str, Any] = {"rows": rows, "default_every": default, "overhead_at_default": worst}
    if args.storage_passes > 0:
        stored = _storage_cost(server.state_dict(), args.storage_passes, args.s3_endpoint)
        out.update(stored)
        for row in stored["storage_rows"]:  # a trial waits for its checkpoint's persist
            share = row["persist_ms"] / (max(default, 1) * rows[-1]["round_ms"])
            out[f"{row['storage']}_persist_overhead_at_default"] = share
            print(
                f"Persisting to {row['storage']} every {default} rounds: {100 * share:.2f} % "
                "of the rounds' time"
            )
    if args.sweep_repeats > 0:
        out.update(_sweep_overhead(args.sweep_repeats, default))
    return out


def _sweep_overhead(repeats: int, default: int) -> dict[str, Any]:
    import io

    import ray

    from fpzo_ray.sim.ray.ray_session import init_ray
    from fpzo_ray.sweep.phases import run_sweep
    from fpzo_ray.sweep.spec import find_sweep_file, load_sweep

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


BENCH_BUCKET = "fpzo-bench"


def _storage_cost(state: dict[str, Any], passes: int, endpoint: str | None) -> dict[str, Any]:
    """One checkpoint persisted to and read back from a local path and an S3 endpoint, in
    interleaved passes (see the module docstring)."""
    from fpzo_ray.artifacts import STATE_FILE
    from fpzo_ray.bench.timing import PassRatios
    from fpzo_ray.storage import open_storage

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if endpoint is None:
            endpoint = stack.enter_context(_local_s3_endpoint())
        storages = {"local": open_storage(tmp / "store")}
        if endpoint is not None:
            uri = f"s3://{BENCH_BUCKET}/bench?endpoint_override={endpoint}&scheme=http"
            storages["s3"] = open_storage(uri)
        else:
            print("\nS3 row skipped: no --s3-endpoint and no moto[server] (the test extra)")
        samples: dict[str, dict[str, list[float]]] = {
            name: {"persist": [], "read": []} for name in storages
        }
        size = 0
        for i in range(passes + 1):  # the first pass warms connections and caches
            for name, storage in storages.items():
                local = tmp / f"{name}_{i}"
                start = time.perf_counter()
                save_server_state(state, local / STATE_FILE)
                storage.upload(local, f"checkpoint_{i:06d}")
                persisted = time.perf_counter()
                storage.child(f"checkpoint_{i:06d}").download(tmp / f"{name}_back_{i}")
                load_server_state(tmp / f"{name}_back_{i}" / STATE_FILE)
                done = time.perf_counter()
                size = (local / STATE_FILE).stat().st_size
                if i:
                    samples[name]["persist"].append(persisted - start)
                    samples[name]["read"].append(done - persisted)
    rows = []
    for name, times in samples.items():
        row: dict[str, Any] = {"storage": name, "bytes": size}
        for what, values in times.items():
            row[f"{what}_ms"] = statistics.median(values) * 1e3
            row[f"{what}_ms_spread"] = [min(values) * 1e3, max(values) * 1e3]
        rows.append(row)
    print(f"\nOne checkpoint ({size / 1024:.0f} KiB) persisted and read back, {passes} passes")
    print(table(rows, ["storage", "bytes", "persist_ms", "read_ms"]))
    out: dict[str, Any] = {"storage_rows": rows, "s3_endpoint": endpoint}
    if "s3" in samples:
        total = {n: [p + r for p, r in zip(t["persist"], t["read"])] for n, t in samples.items()}
        ratio = PassRatios.of(total["s3"], total["local"])
        low, high = ratio.spread
        print(
            f"S3 over local path, persist and read: {ratio.median:.3g} "
            f"(passes {low:.3g}-{high:.3g})"
        )
        out["s3_over_local"] = {"median": ratio.median, "spread": [low, high]}
    return out


@contextlib.contextmanager
def _local_s3_endpoint() -> Iterator[str | None]:
    """moto's S3-compatible server on a free local port with the bench's bucket (its
    ``host:port``), stopped afterwards; None when moto is not installed."""
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    try:
        import moto.server  # noqa: F401
    except ImportError:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # moto takes any credentials; the S3 client needs some (set for the bench's time only)
    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    unset = [k for k in credentials if k not in os.environ]
    os.environ.update({k: credentials[k] for k in unset})
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/{BENCH_BUCKET}", method="PUT"
                )
                urllib.request.urlopen(request, timeout=2).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        for key in unset:
            os.environ.pop(key, None)
