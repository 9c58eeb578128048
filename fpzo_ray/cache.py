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


#: torch's variable naming inductor's compile cache (set by the package to its own cache).
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def inductor_cache_dir() -> Path:
    """Inductor's compile cache: ``$TORCHINDUCTOR_CACHE_DIR`` (which importing the package
    sets, by default, to ``<cache>/inductor``)."""
    return Path(os.environ.get(INDUCTOR_CACHE_ENV) or cache_dir() / "inductor")


def keep_inductor_headers_in_cache() -> None:
    """Call before inductor compiles C++: it keeps the headers it precompiles (hundreds of
    MB) in ``<temp>/torchinductor_<user>/precompiled_headers`` whatever
    ``TORCHINDUCTOR_CACHE_DIR`` says (a path fixed when its code cache is imported); they go
    to the compile cache instead, so that nothing is left in the temp folder. These are
    private names of torch: where they are absent, nothing is changed."""
    from torch._inductor import codecache

    if hasattr(codecache, "_HEADER_DIR") and hasattr(codecache, "_HEADER_LOCK_DIR"):
        headers = inductor_cache_dir() / "precompiled_headers"
        codecache._HEADER_DIR = str(headers)
        codecache._HEADER_LOCK_DIR = str(headers / "locks")
