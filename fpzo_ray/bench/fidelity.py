"""fidelity: does federated NTK-SAP pruning keep ZO accuracy while cutting FLOPs? (real MNIST)

LeNet-5 on MNIST (``--data-root`` holding MNIST/raw), 100 clients, Dirichlet alpha 0.1 and
1.0, 10 clients a round, the same rounds and K for every run. Methods:

- ``ntk_sap`` at 80 % and 90 % sparsity: federated data-free NTK-SAP + ZO FedSGD (the paper's);
- ``dense_zo``: ZO FedSGD on the dense model (vanilla BAFFLE);
- ``random_layerwise`` at 80 % / 90 %: random masks with the NTK-SAP mask's per-layer densities;
- ``bp_fedavg``: BP FedAvg on the dense model (E local SGD steps): the accuracy ceiling.

Every run goes through the Ray engine (server and worker actors), two at a time. Printed:
final and best test accuracy, cumulative client FLOPs (everything: forward passes, backward
passes, ZO vector work) and the ratios to dense ZO. Key ``runs``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fpzo_ray.bench.common import SHARED
from fpzo_ray.bench.timing import table
from fpzo_ray.config import config_from_dict

METHODS = ("ntk_sap", "dense_zo", "random_layerwise", "bp_fedavg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(SHARED))
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--concurrent", type=int, default=2)


def run_config(args: argparse.Namespace, method: str, alpha: float, sparsity: float) -> dict:
    training: dict[str, Any] = {"rounds": args.rounds, "clients_per_round": 10, "batch_size": 32,
                                "server_lr": 0.01, "eval_every": max(1, args.rounds // 20)}
    pruning: dict[str, Any] = {"method": "dense", "sparsity": 0.0, "iterations": 10,
                               "clients_per_iteration": 10, "draws_per_client": 1,
                               "batch_size": 16}
    if method in ("ntk_sap", "random_layerwise"):
        pruning.update(method=method, sparsity=sparsity, reference_method="ntk_sap")
    if method == "bp_fedavg":
        training.update(algorithm="bp", mode="fedavg", local_steps=5, client_lr=0.05,
                        server_optimizer="sgd", server_lr=1.0)
    return {"data": {"name": "mnist", "root": args.data_root, "partition": "dirichlet",
                     "alpha": alpha, "num_clients": 100},
            "pruning": pruning, "training": training,
            "zo": {"num_perturbations": args.k, "sigma": 1e-3, "clip_inf_norm": 0.3},
            "simulation": {"num_workers": 1, "worker_cpus": 0.85, "server_cpus": 0.1}}


def _one(args: argparse.Namespace, method: str, alpha: float, sparsity: float) -> dict:
    from fpzo_ray.sim.federation import run_federated

    cfg = config_from_dict(run_config(args, method, alpha, sparsity))
    reports: list[dict] = []
    started = time.time()
    run_federated(cfg, reports.append)
    accuracies = [r["test_accuracy"] for r in reports if "test_accuracy" in r]
    last = reports[-1]
    row = {"method": method, "alpha": alpha, "sparsity": sparsity if cfg.pruning.sparsity else 0.0,
           "accuracy": accuracies[-1], "best_accuracy": max(accuracies),
           "flops": last["cumulative_client_flops"],
           "forward_flops": last["cumulative_client_forward_flops"],
           "upload_bytes": last["cumulative_upload_bytes"],
           "peak_memory_bytes": max(r["max_client_peak_memory_bytes"] for r in reports),
           "kept_fraction": reports[0]["setup"]["kept_fraction"], "wall_s": time.time() - started}
    print(f"  done {method} alpha={alpha} sparsity={row['sparsity']}: accuracy "
          f"{row['accuracy']:.4f} in {row['wall_s']:.0f} s", flush=True)
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not (Path(args.data_root) / "MNIST" / "raw").is_dir():
        raise SystemExit(f"fidelity needs real MNIST under {args.data_root}/MNIST/raw")
    from fpzo_ray.sweep import init_ray

    init_ray()
    jobs = []
    for alpha in args.alphas:
        for method in args.methods:
            sparsities = args.sparsities if method in ("ntk_sap", "random_layerwise") else [0.0]
            jobs.extend((method, alpha, s) for s in sparsities)
    with ThreadPoolExecutor(args.concurrent) as pool:
        rows = list(pool.map(lambda job: _one(args, *job), jobs))
    for row in rows:
        dense = next((r for r in rows if r["method"] == "dense_zo" and r["alpha"] == row["alpha"]),
                     None)
        if dense:
            row["flops_vs_dense_zo"] = row["flops"] / dense["flops"]
            row["accuracy_minus_dense_zo"] = row["accuracy"] - dense["accuracy"]
        row["gflops"] = row["flops"] / 1e9
        row["peak_memory_MB"] = row["peak_memory_bytes"] / 1e6
    print(f"\nMNIST, LeNet-5, 100 clients (10 a round), {args.rounds} rounds, K = {args.k}")
    print(table(rows, ["method", "alpha", "sparsity", "kept_fraction", "accuracy",
                       "best_accuracy", "accuracy_minus_dense_zo", "gflops", "flops_vs_dense_zo",
                       "peak_memory_MB", "wall_s"]))
    return {"runs": rows}
