"""Will a sweep's trials fit the cluster? Checked before it starts, watched while it waits.

Every trial reserves a placement group: its driver, its server and its workers
(``sim.ray.federation.bundles``). A request no node can ever satisfy (``worker_cpus: 1000`` on
2-CPU machines) would make Ray wait forever, so it is refused before the sweep starts, naming
the field. A request that fits but finds the cluster busy (other jobs, nodes still coming up)
is watched: one line every ``report_every_s`` while nothing runs, and after
``give_up_after_s`` the sweep stops (resumable) instead of waiting forever.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

from fpzo_ray.config import ConfigError, RunConfig, SimulationConfig, show

#: The configuration field behind each placement-group bundle, for error messages.
_DRIVER, _SERVER, _WORKER = 0, 1, 2


class ResourceWaitTimeout(RuntimeError):
    """No trial could start for longer than the sweep was told to wait."""


def cluster_nodes() -> list[dict[str, float]]:
    """Total resources of every live node: of the running or addressed Ray cluster, else of
    the local Ray this machine would start (its CPUs, GPUs and memory), without starting it."""
    import ray

    from fpzo_ray.sim.ray.ray_session import cluster_address, init_ray

    if ray.is_initialized() or cluster_address() is not None:
        init_ray()
        return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    import psutil
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        {
            "CPU": float(cpus or 1),
            "GPU": float(torch.cuda.device_count()),
            "memory": float(psutil.virtual_memory().total),
        }
    ]


def _field(bundle_index: int, resource: str) -> str:
    if bundle_index == _DRIVER:
        return "simulation"  # the driver's 0.1 CPU is fixed
    if bundle_index == _SERVER:
        return "simulation.server_gpus" if resource == "GPU" else "simulation.server_cpus"
    return {
        "CPU": "simulation.worker_cpus",
        "GPU": "simulation.worker_gpus",
        "memory": "simulation.worker_memory_mb",
    }.get(resource, "simulation")


def check_resources(
    configs: Sequence[RunConfig], concurrent: int = 1, nodes: list[dict[str, float]] | None = None
) -> None:
    """Raise :class:`ConfigError` for the first trial whose placement group no cluster state
    could ever hold: a bundle larger than every node, or bundles more than all nodes have."""
    from fpzo_ray.sim.ray.federation import bundles, resolve_num_workers

    nodes = nodes if nodes is not None else cluster_nodes()
    total = {r: sum(n.get(r, 0.0) for n in nodes) for r in {r for n in nodes for r in n}}
    seen = set()
    for cfg in configs:
        if cfg.simulation in seen:
            continue
        seen.add(cfg.simulation)
        _check_device(cfg.simulation, nodes)
        workers = resolve_num_workers(cfg, total.get("CPU", 1.0), concurrent)
        group = bundles(cfg, workers)
        for index, bundle in enumerate(group):
            for resource, amount in bundle.items():
                largest = max(n.get(resource, 0.0) for n in nodes)
                if amount > largest + 1e-9:
                    who = "a worker" if index >= _WORKER else "the server"
                    raise ConfigError(
                        f"config error: {_field(min(index, _WORKER), resource)}: {who} needs "
                        f"{_amount(resource, amount)} {resource}, the largest node has "
                        f"{_amount(resource, largest)}"
                    )
        need: dict[str, float] = {}
        for bundle in group:
            for resource, amount in bundle.items():
                need[resource] = need.get(resource, 0.0) + amount
        for resource, amount in need.items():
            if amount > total.get(resource, 0.0) + 1e-9:
                raise ConfigError(
                    f"config error: simulation.num_workers: one run needs "
                    f"{_amount(resource, amount)} {resource} (driver, server and {workers} "
                    f"workers), the cluster has {_amount(resource, total.get(resource, 0.0))}"
                )


def _check_device(sim: SimulationConfig, nodes: list[dict[str, float]]) -> None:
    """``simulation.device: cuda`` needs GPUs in the cluster, reserved by the workers.

    Where the driver runs says nothing (a head node often has no GPU, its workers do): what
    counts are the nodes' GPU resources (the local machine's CUDA devices for a local run,
    ``cluster_nodes``). Without any, every actor would die on its first CUDA call after Ray
    started; without a GPU share per worker, Ray may place the workers on a GPU-less node.
    """
    if sim.device != "cuda":
        return
    if not any(n.get("GPU", 0.0) > 0 for n in nodes):
        raise ConfigError(
            "config error: simulation.device: got 'cuda', but no node of the cluster has a GPU "
            "(locally: torch finds no CUDA device); use cpu, or a cluster with GPUs"
        )
    if sim.worker_gpus <= 0:
        raise ConfigError(
            "config error: simulation.worker_gpus: got 0, but simulation.device is cuda: each "
            "worker must reserve a GPU share (e.g. 0.25) so that Ray places it by a GPU"
        )


def give_up_after(text: str) -> float:
    """``--give-up-after``: seconds, a finite number >= 0 (0 = wait forever). Parsed here,
    not by argparse, so that a bad value is one line naming the argument, like every other
    input error."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(
            f"config error: --give-up-after: got {show(text)}, must be a finite number of "
            "seconds >= 0 (0 = wait forever)"
        )
    return seconds


def _amount(resource: str, value: float) -> str:
    return f"{value / 1e6:.0f} MB of" if resource == "memory" else f"{value:g}"


def resource_watch(give_up_after_s: float, report_every_s: float = 30.0) -> Any:
    """A Tune callback: while trials wait and none runs, say so; past the limit, stop."""
    from ray.tune import Callback

    class ResourceWatch(Callback):
        """Says when trials wait for resources; past the give-up time, stops the sweep."""

        def __init__(self) -> None:
            self.waiting_since: float | None = None
            self.last_said = 0.0

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            pending = [t for t in trials if t.status == "PENDING"]
            if not pending or any(t.status == "RUNNING" for t in trials):
                self.waiting_since = None
                return
            now = time.time()
            if self.waiting_since is None:
                self.waiting_since = self.last_said = now
                return
            waited = now - self.waiting_since
            if give_up_after_s > 0 and waited > give_up_after_s:
                raise ResourceWaitTimeout(
                    f"no trial could start for {waited:.0f} s: {len(pending)} wait for "
                    f"resources the cluster does not have free ({_free()}); the sweep stops: "
                    "resume it once the cluster has room, or raise --give-up-after"
                )
            if now - self.last_said >= report_every_s:
                self.last_said = now
                print(
                    f"waiting for resources for {waited:.0f} s: {len(pending)} trials "
                    f"pending, none running; free now: {_free()}",
                    flush=True,
                )

    return ResourceWatch()


def _free() -> str:
    import ray

    free = ray.available_resources()
    return ", ".join(
        f"{_amount(k, v)} {k}" for k, v in sorted(free.items()) if k in ("CPU", "GPU", "memory")
    )
