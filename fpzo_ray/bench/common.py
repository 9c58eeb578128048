"""Shared bench helpers: the workload data set, and the memory footprint of a Ray session."""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def workload_data(root: str) -> dict:
    """MNIST (LeNet-5) when ``root`` holds it, else the bundled digits."""
    if (Path(root) / "MNIST" / "raw").is_dir():
        return {"name": "mnist", "root": root}
    return {"name": "digits"}


def ray_footprint_bytes() -> int:
    """Proportional set size (shared pages split fairly) of this process and every Ray
    process of the machine: raylet, GCS, agents, actors, and the object store they map."""
    import psutil

    total = 0
    me = psutil.Process()
    for proc in psutil.process_iter(["cmdline", "pid"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.info["pid"] == me.pid or "ray" in cmd.lower():
                total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total
