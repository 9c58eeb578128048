"""The software and machine a sweep ran on, recorded when it starts (``environment.json`` in
its experiment folder and on its parent run), so that a report read months later says what
produced its figures."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

PACKAGES = (
    "fpzo_ray",
    "torch",
    "torchvision",
    "ray",
    "mlflow",
    "pandas",
    "numpy",
    "matplotlib",
    "scikit-learn",
)


def environment() -> dict[str, Any]:
    """Python, the packages that decide the numbers, the OS, CPU count and, where Ray runs,
    the cluster's totals."""
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus_here": os.cpu_count(),
    }
    for package in PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    try:
        import ray

        if ray.is_initialized():
            totals = ray.cluster_resources()
            out["ray_cluster"] = {
                "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
                "CPU": totals.get("CPU", 0),
                "GPU": totals.get("GPU", 0),
            }
    except ImportError:
        pass
    try:
        import torch

        out["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        pass
    return out
