"""Shared bench helpers: the workload data set, and the memory footprint of a Ray session."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """Where benches (and the tests that need real data) look for data sets, ``--data-root``
    overriding it: the folder in ``FPZO_DATA_ROOT``, else ``./data``."""
    return Path(os.environ.get("FPZO_DATA_ROOT") or "data")


def workload_data(root: str) -> dict:
    """MNIST (LeNet-5) when ``root`` holds it, else the bundled digits."""
    if (Path(root) / "MNIST" / "raw").is_dir():
        return {"name": "mnist", "root": root}
    return {"name": "digits"}


def ray_footprint_bytes() -> int:
    """Proportional set size (shared pages split fairly) of this driver and every process it
    started: a local Ray session's GCS, raylet, agents and actors (and the object store they
    map). Other Ray sessions on the machine are not counted."""
    import psutil

    me = psutil.Process()
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total
