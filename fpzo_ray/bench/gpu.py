"""gpu: client updates per second with 1, 2, 4 and 8 workers sharing one GPU, and how far a
GPU run is from a CPU run of the same seeds.

On CUDA (``--device cuda``, the default), for LeNet-5 (MNIST when ``--data-root`` holds it,
else the row is skipped), ResNet-20 and ResNet-18 (CIFAR-shaped random images: the speed of a
step does not depend on the pixels), each ``zo.batching`` mode of ``--modes`` and each worker
count of ``--workers``: the whole engine (``bench throughput``'s workload: ZO FedSGD, K = 20,
batch 32, 100 clients, 10 a round), its workers sharing GPU 0 (``simulation.worker_gpus`` =
1 / workers; the server on the CPU, ``simulation.server_gpus: 0``, so that the workers hold
the whole GPU), reports:

- ``updates_per_s``: client updates per second over ``--rounds`` rounds after ``--warmup``;
- ``gpu_mb_per_worker``: the largest GPU memory one worker process held (``nvidia-smi``'s
  per-process figure, sampled every 0.2 s: the CUDA context included);
- ``utilisation``: the GPU's mean utilisation over the measured rounds (``nvidia-smi``).

Then the same short run (``--agreement-rounds`` rounds of LeNet-5, or of the digits CNN
without MNIST) in this process on the CPU and on the GPU, from the same seeds:
``cpu_gpu_max_estimate_diff`` (the largest coordinate difference of the first round's
aggregated estimate: the server steps by plain SGD at learning rate 1 for this check, so the
estimate is the change of the weights) and the final test accuracies of both.

JSON keys: ``cuda``, ``lenet_updates_per_s_gpu`` and ``resnet20_updates_per_s_gpu`` (the
default ``auto`` mode, the best worker count), ``best_workers_per_gpu`` (per model, in
``auto``), ``cpu_gpu_max_estimate_diff``, ``cpu_gpu_final_accuracy``, ``rows``. Without CUDA
it prints one line saying so and ``{"cuda": false}``. ``--device cpu`` runs the same code
path on the CPU (no GPU shares, no ``nvidia-smi``): a check of the bench itself, not a GPU
figure.

Where Ray or MLflow is not installed (a bare GPU machine with PyTorch alone), each row is one
in-process client runtime on the device instead (``bench throughput``'s plain loop: the
clients' work without the engine), for one worker only; ``engine`` in the JSON says which
(``ray`` or ``in_process``). The GPU figures and the CPU-against-GPU check need no Ray.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import threading
from typing import Any

import numpy as np

from fpzo_ray.bench.common import data_root, workload_data
from fpzo_ray.bench.timing import table
from fpzo_ray.config import RunConfig, config_from_dict, config_to_dict, merge
from fpzo_ray.data.arrays import ArrayDataset, PixelNormalisation

#: Models measured, with their data: ``None`` for MNIST (skipped without it).
MODELS: dict[str, dict[str, Any] | None] = {
    "lenet": None,
    "resnet20": {"target": "fpzo_ray.bench.gpu:random_images", "args": {"side": 32}},
    "resnet18": {"target": "fpzo_ray.bench.gpu:random_images", "args": {"side": 32}},
}
NETWORKS = {"lenet": "lenet5", "resnet20": "resnet20", "resnet18": "resnet18", "digits": "auto"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(data_root()))
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--models", default="lenet,resnet20,resnet18")
    parser.add_argument("--modes", default="auto,loop,batched", help="zo.batching modes")
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts sharing one GPU")
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds per setup")
    parser.add_argument("--warmup", type=int, default=2, help="rounds before measuring")
    parser.add_argument("--agreement-rounds", type=int, default=20)


def random_images(
    side: int = 32, channels: int = 3, train: int = 5000, test: int = 1000, seed: int = 0
) -> ArrayDataset:
    """CIFAR-shaped uint8 images with random labels (a ``data.target`` loader): what a step
    costs does not depend on the pixels."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        images = rng.integers(0, 256, (n, channels, side, side), dtype=np.uint8)
        return images, rng.integers(0, 10, n).astype(np.int64)

    (x, y), (tx, ty) = split(train), split(test)
    norm = PixelNormalisation(255.0, 0.5, 0.25)
    return ArrayDataset("random_images", x, y, tx, ty, num_classes=10, normalisation=norm)


def gpu_config(
    data: dict[str, Any], model: str, batching: str, workers: int, device: str, rounds: int
) -> RunConfig:
    """``bench throughput``'s workload with ``workers`` workers sharing GPU 0."""
    from fpzo_ray.bench.throughput import workload

    cpus = os.cpu_count() or 2
    raw = config_to_dict(
        workload(
            {"name": "digits"},
            rounds,
            batching,
            workers=workers,
            worker_cpus=max(0.1, min(1.0, (cpus - 1.5) / workers)),
        )
    )
    raw["data"].update(data)
    raw["model"]["name"] = NETWORKS[model]
    on_gpu = device == "cuda"
    raw["simulation"].update(
        device=device, worker_gpus=1.0 / workers if on_gpu else 0.0, server_gpus=0.0
    )
    return config_from_dict(raw)


class GpuSampler:
    """``nvidia-smi`` sampled on a thread: per-process GPU memory and the GPU's utilisation."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s = every_s
        self.process_mb: dict[int, float] = {}
        self.utilisation: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def _query(self, *args: str) -> list[list[str]]:
        out = subprocess.run(
            ["nvidia-smi", *args, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return [[v.strip() for v in line.split(",")] for line in out.splitlines() if line.strip()]

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            for pid, used in self._query("--query-compute-apps=pid,used_memory"):
                self.process_mb[int(pid)] = max(self.process_mb.get(int(pid), 0.0), float(used))
            for (util,) in self._query("--query-gpu=utilization.gpu", "--id=0"):
                self.utilisation.append(float(util))


def engine_available() -> bool:
    """Whether the whole engine can run here (it needs Ray and MLflow)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("ray", "mlflow"))


def measure_engine(cfg: RunConfig, warmup: int, in_process: bool = False) -> dict[str, Any]:
    """Updates/s of whole engine rounds (``in_process``: of one client runtime's rounds, no
    engine), with the GPU sampled meanwhile."""
    from fpzo_ray.bench.throughput import engine, plain_loop

    with GpuSampler() as sampler:
        if in_process:
            updates_per_s, _ = plain_loop(cfg, warmup, cfg.training.rounds - warmup - 1)
        else:
            updates_per_s, _ = engine(cfg, warmup)
    return {
        "updates_per_s": updates_per_s,
        "gpu_mb_per_worker": max(sampler.process_mb.values(), default=None),
        "utilisation": statistics.mean(sampler.utilisation) if sampler.utilisation else None,
    }


def agreement(data: dict[str, Any], model: str, rounds: int, device: str) -> dict[str, Any]:
    """The same in-process run on the CPU and on ``device``: the first round's estimate
    (plain SGD at learning rate 1: the change of the weights) and the final test accuracies.
    (With ``device`` cpu, a check of the bench: both runs must agree exactly.)"""
    import torch

    from fpzo_ray.data import federated_data
    from fpzo_ray.sim.client import ClientRuntime
    from fpzo_ray.sim.devices import client_devices
    from fpzo_ray.sim.in_process import InProcessPool, run_in_process
    from fpzo_ray.sim.server import FederatedServer

    def config(side: str, server_optimizer: str | None = None) -> RunConfig:
        raw = config_to_dict(gpu_config(data, model, "auto", 1, "cpu", rounds))
        on = "cuda" if side == "gpu" else "cpu"
        raw["simulation"].update(device=on, server_gpus=1.0 if on == "cuda" else 0.0)
        if server_optimizer:
            raw["training"].update(server_optimizer=server_optimizer, server_lr=1.0)
        return config_from_dict(merge(raw, {"training": {"eval_every": 1}}))

    other = "gpu" if device == "cuda" else "cpu again"
    first: dict[str, torch.Tensor] = {}
    final: dict[str, float] = {}
    for side in ("cpu", other):
        cfg = config(side, "sgd")
        dataset, partition = federated_data(cfg)
        server = FederatedServer(
            cfg, dataset, InProcessPool(ClientRuntime(cfg, dataset, partition)), client_devices(cfg)
        )
        server.prune()
        before = server.optimizer.weights.detach().cpu().clone()
        server.run_round(0)
        first[side] = before - server.optimizer.weights.detach().cpu()
        cfg = config(side)
        final[side] = run_in_process(cfg, *federated_data(cfg))[-1]["test_accuracy"]
    name = "cpu_gpu" if device == "cuda" else "cpu_cpu"
    return {
        f"{name}_max_estimate_diff": float((first["cpu"] - first[other]).abs().max()),
        "estimate_max_abs": float(first["cpu"].abs().max()),
        f"{name}_final_accuracy": final,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench gpu: torch finds no CUDA device here: nothing to measure")
        return {"cuda": False}
    in_process = not engine_available()
    worker_counts = [int(w) for w in args.workers.split(",")]
    if in_process:
        print(
            "bench gpu: Ray or MLflow is not installed here: each row is one in-process client "
            "runtime on the device, one worker (the shared-GPU rows need Ray)"
        )
        worker_counts = [1]
    else:
        from fpzo_ray.sim.ray.ray_session import init_ray

        init_ray()
    mnist = workload_data(args.data_root)
    rows: list[dict[str, Any]] = []
    for model in args.models.split(","):
        data = MODELS.get(model, {"name": "digits"}) or mnist
        if NETWORKS[model] == "lenet5" and data["name"] != "mnist":
            print(f"(no MNIST under {args.data_root}: the {model} rows are skipped)")
            continue
        for batching in args.modes.split(","):
            for workers in worker_counts:
                cfg = gpu_config(
                    data, model, batching, workers, args.device, args.warmup + args.rounds + 1
                )
                row = {"model": model, "batching": batching, "workers": workers}
                row.update(measure_engine(cfg, args.warmup, in_process))
                print(row, flush=True)
                rows.append(row)
    print(
        table(
            rows,
            ["model", "batching", "workers", "updates_per_s", "gpu_mb_per_worker", "utilisation"],
        )
    )
    result: dict[str, Any] = {
        "cuda": args.device == "cuda",
        "engine": "in_process" if in_process else "ray",
        "rows": rows,
    }
    best: dict[str, int] = {}
    for model in {r["model"] for r in rows}:
        default = [r for r in rows if r["model"] == model and r["batching"] == "auto"]
        if default:
            top = max(default, key=lambda r: r["updates_per_s"])
            best[model] = top["workers"]
            result[f"{model}_updates_per_s_{'gpu' if args.device == 'cuda' else 'cpu'}"] = top[
                "updates_per_s"
            ]
    result["best_workers_per_gpu"] = best
    small = "lenet" if mnist["name"] == "mnist" else "digits"
    agreed = agreement(mnist, small, args.agreement_rounds, args.device)
    result.update(agreed)
    print(f"CPU against {args.device}, {small}, same seeds: {agreed}")
    return result
