"""Where the package keeps what outlives a process on a machine: compiled kernels, torch's
compile cache. ``$FPZO_CACHE_DIR``, by default ``~/.cache/fpzo_ray``; never the temp folder,
which a run leaves as it found it."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the cache folder.
CACHE_ENV = "FPZO_CACHE_DIR"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fpzo_ray")
