"""A bench's saved result: its headline figures with the machine, commit, date and command
that produced them, as one JSON file (``--save``). ``python -m fpzo_ray.bench.pages``
generates ``docs/benchmarks.md`` from the saved files: the tables are never typed by hand.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

#: Where ``python -m fpzo_ray.bench NAME`` saves its result unless ``--save`` says otherwise
#: (``results/`` is the results folder every command writes to, ignored by git). The
#: published results are the ones in ``docs/benchmarks/`` (``bench.pages``).
DEFAULT_FOLDER = Path("results") / "bench"
#: What a measurement depends on, for the ``dirty`` flag of its commit.
CODE = ("fpzo_ray", "pyproject.toml")


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, memory, GPU, software versions."""
    import psutil
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "system": platform.platform(),
    }


def commit() -> dict[str, Any]:
    """The commit of the package's checkout, and whether its code (:data:`CODE`) had
    uncommitted changes (None outside a git checkout)."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        # the code measured: not the results being saved, not the generated pages
        changed = git("status", "--porcelain", "--untracked-files=no", "--", *CODE)
        return {"id": git("rev-parse", "HEAD"), "dirty": bool(changed)}
    except (OSError, subprocess.CalledProcessError):
        return {"id": None, "dirty": None}


def jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold (paths, tuples, NumPy numbers) made plain."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # a NumPy or torch scalar
        return value.item()
    return str(value)


def record(name: str, argv: list[str], options: dict[str, Any], result: dict) -> dict:
    """The saved form of one bench run."""
    return {
        "bench": name,
        "command": " ".join(["python -m fpzo_ray.bench", name, *argv]),
        "options": jsonable(options),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "results": jsonable(result),
    }


def save(saved: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=1) + "\n")
    return path


def default_path(name: str) -> Path:
    return DEFAULT_FOLDER / f"{name}.json"
