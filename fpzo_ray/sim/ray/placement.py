"""What each actor of a run reserves from Ray, and where the server computes.

On a GPU run (``simulation.device: cuda``) every actor that touches CUDA reserves a share of
a GPU: the workers ``simulation.worker_gpus`` each (Ray packs ``1 / worker_gpus`` of them onto
one GPU), the server ``simulation.server_gpus`` (0: the server stays on the CPU and never
touches CUDA). An actor without a share must not compute on a GPU: Ray 2.60 no longer hides
the GPUs from it, so it would load a GPU nobody reserved, and where Ray is told to hide them
(``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1``) it fails with "no CUDA GPUs are available".
These bundles are also what a sweep's placement groups hold (``federation.bundles``).
"""

from __future__ import annotations

from typing import Any

import torch

from fpzo_ray.config import SimulationConfig


def server_device(sim: SimulationConfig) -> torch.device:
    """Where the server computes: on a GPU when the run does and the server reserves a share
    of one (``simulation.server_gpus``), else on the CPU. An actor that touches CUDA without
    a share would use a GPU nobody reserved (or fail, where Ray hides the GPUs from it)."""
    on_gpu = sim.device == "cuda" and sim.server_gpus > 0
    return torch.device("cuda" if on_gpu else "cpu")


def server_resources(sim: SimulationConfig) -> dict[str, float]:
    """The server actor's Ray resources (its placement-group bundle)."""
    resources = {"CPU": sim.server_cpus}
    if server_device(sim).type == "cuda":
        resources["GPU"] = sim.server_gpus
    return resources


def worker_resources(sim: SimulationConfig) -> dict[str, float]:
    """One worker actor's Ray resources (its placement-group bundle). Ray packs
    ``1 / worker_gpus`` workers onto one GPU."""
    resources: dict[str, float] = {"CPU": sim.worker_cpus}
    if sim.worker_gpus > 0:
        resources["GPU"] = sim.worker_gpus
    if sim.worker_memory_mb > 0:
        resources["memory"] = int(sim.worker_memory_mb * 1e6)
    return resources


def actor_options(resources: dict[str, float]) -> dict[str, Any]:
    """``ray.remote`` options reserving ``resources`` (one bundle of ``federation.bundles``)."""
    options: dict[str, Any] = {
        "num_cpus": resources["CPU"],
        "num_gpus": resources.get("GPU", 0),
    }
    if "memory" in resources:
        options["memory"] = resources["memory"]
    return options
