"""Compiled Philox fills: one AOTInductor package per (fill kind, dtype), built once per
machine and torch version, loaded by every later process in milliseconds.

Why ahead of time: the Philox fill is ~300 tensor ops per chunk, 18-55 ns a number eagerly
on one CPU thread against 1-3 compiled (inductor fuses them into one loop). Compiling with
``torch.compile`` in each process cost ~4.6 s with inductor's disk cache warm (importing
Dynamo, tracing, the cache lookup) and tens of seconds cold: more than a short run draws. An
AOTInductor package holds the same inductor C++ for :func:`philox._tile_rows`, exported with
a dynamic number of seeds and of blocks; torch's C++ loader
(``torch._C._aoti.AOTIModelPackageLoader``) opens it in ~2 ms without importing Dynamo or
Inductor, and a call costs the kernel plus a few microseconds.

Bits: inductor's C++ is built without floating-point contraction or unsafe math (checked
before every build), so the package computes the eager fill's IEEE operations one by one and
gives its bits (tested on many seeds and offsets).

Packages live in the package cache (``fpzo_ray.cache``), named by kind, dtype,
torch version and the CPU's vector capability (a package compiled for AVX-512 does not run on
an AVX2 machine sharing the home directory). The first process to load a package unpacks it
into a folder beside it (:func:`unpacked`), which every later one loads from. A build takes
10-30 s of one core, in a process of its own (:func:`start_build`):
exporting and compiling change process-wide state of torch for a while (a simulation
computing beside a build on a thread of the same process got other float32 roundings), and
a separate process also spares the caller the imports of Dynamo and Inductor. Concurrent
builders on a machine build each package once (a lock file naming the builder; the lock of a
builder that is gone is taken over); the builds' output is appended to a log beside the package.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from fpzo_ray.cache import cache_dir

#: A build lock older than this belongs to a process that died while building.
STALE_LOCK_SECONDS = 600.0

#: ``kernel(params, num_blocks) -> rows``: :func:`philox._tile_rows` of one kind and dtype on
#: the CPU.
Kernel = Callable[[torch.Tensor, int], torch.Tensor]


def package_path(kind: str, dtype: torch.dtype) -> Path:
    """Where the package of ``kind`` and ``dtype`` lives for this torch and this CPU."""
    capability = torch.backends.cpu.get_cpu_capability()
    dtype_name = str(dtype).removeprefix("torch.")
    return cache_dir() / f"philox-{kind}-{dtype_name}-torch{torch.__version__}-{capability}.pt2"


_loaded: dict[tuple[str, torch.dtype], Kernel] = {}


def load(kind: str, dtype: torch.dtype) -> Kernel | None:
    """The built package's kernel (loaded once per process), or None when it is not built
    (yet)."""
    if (kind, dtype) in _loaded:
        return _loaded[kind, dtype]
    path = package_path(kind, dtype)
    if not path.is_file():
        return None
    # From an unpacked folder: given the package file, the loader unpacks it into a folder of
    # its own in the temp folder, which outlives the many processes that never destroy it
    # (Ray's workers exit without it), 1.8 MB each.
    loader = torch._C._aoti.AOTIModelPackageLoader(str(unpacked(path)), "model", False, 1, -1)

    def kernel(params: torch.Tensor, num_blocks: int) -> torch.Tensor:
        # the number of blocks travels as the length of an empty tensor (a dynamic size)
        rows: torch.Tensor = loader.run([params, torch.empty(num_blocks, 0)])[0]
        return rows

    _loaded[kind, dtype] = kernel
    return kernel


def unpacked(package: Path) -> Path:
    """The package's files in a folder beside it (``<name>.unpacked``), unpacked on first use:
    the loader reads them there and copies nothing. Unpacked under a name of this process's
    own and renamed into place, so a reader never sees half a folder; a process that loses
    the race to another unpacking the same package drops its copy."""
    folder = package.with_name(package.stem + ".unpacked")
    if folder.is_dir():
        return folder
    partial = package.with_name(f"{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(package) as archive:
        for member in archive.infolist():
            # the archive holds one top folder, named after the file it was first written as
            _, _, inside = member.filename.partition("/")
            if inside and not member.is_dir():
                member.filename = inside
                archive.extract(member, partial)
    try:
        partial.rename(folder)
    except OSError:  # another process unpacked it first
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def check_flags() -> None:
    """Raise unless inductor compiles C++ without FP contraction or unsafe math (either would
    change the Gaussian bits)."""
    import torch._inductor.config as inductor

    if inductor.cpp.enable_floating_point_contract_flag != "off" or (
        inductor.cpp.enable_unsafe_math_opt_flag
    ):
        raise RuntimeError(
            "compiled Philox fills need inductor's C++ without FP contraction or unsafe "
            "math (TORCHINDUCTOR_CPP_ENABLE_FLOATING_POINT_CONTRACT_FLAG=off, "
            "TORCHINDUCTOR_CPP_ENABLE_UNSAFE_MATH_OPT_FLAG=0)"
        )


def stale_lock(lock: Path) -> bool:
    """Whether the builder holding ``lock`` is gone: a process of this host that no longer
    runs (killed while building), or a lock older than
    ``STALE_LOCK_SECONDS`` (a builder on another host sharing the folder)."""
    try:
        host, pid = lock.read_text().split()
        age = time.time() - lock.stat().st_mtime
    except (OSError, ValueError):
        return False  # being written or just removed: look again later
    if age > STALE_LOCK_SECONDS:
        return True
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process
        return False
    return False


#: What a build process runs (``-c``, not ``-m``: the package imports this module first).
_BUILD = (
    "import sys, torch; from fpzo_ray.zo.execution.philox_build import build; "
    "build(sys.argv[1], getattr(torch, sys.argv[2]))"
)
#: Starts its arguments as a process of their own and exits: the builder is then nobody's
#: child, and Ray, which kills a worker's child processes when the worker exits (a trial's
#: end), lets it finish.
_DETACH = (
    "import subprocess, sys; "
    "subprocess.Popen(sys.argv[1:], start_new_session=True, stdin=subprocess.DEVNULL)"
)


def build_command(kind: str, dtype: torch.dtype) -> list[str]:
    """The command of a build process."""
    return [sys.executable, "-c", _BUILD, kind, str(dtype).removeprefix("torch.")]


def build_log(kind: str, dtype: torch.dtype) -> Path:
    """The builds' output (appended), beside the package."""
    return package_path(kind, dtype).with_suffix(".log")


def start_build(kind: str, dtype: torch.dtype, detach: bool = False) -> subprocess.Popen[bytes]:
    """A process building the package of ``kind`` and ``dtype`` (it exits at once when the
    package exists or another process is building it), its output appended to
    :func:`build_log`. ``detach``: the builder outlives this process and its process tree
    (the returned process is the one that started it, already done)."""
    log_path = build_log(kind, dtype)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = build_command(kind, dtype)
    if detach:
        command = [sys.executable, "-c", _DETACH, *command]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    if detach:
        process.wait()
    return process


def build_failure(kind: str, dtype: torch.dtype, returncode: int) -> str:
    """Why a build process failed: its exit status and the last line of the log."""
    log = build_log(kind, dtype)
    lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    return f"exit {returncode}: {lines[-1] if lines else 'no output'} (log: {log})"


def kernel(kind: str, dtype: torch.dtype) -> Kernel:
    """The package's kernel, building it first if needed (in a process of its own, waiting
    for it or for another builder). Raises RuntimeError when the build fails."""
    lock = package_path(kind, dtype).with_suffix(".lock")
    while True:
        found = load(kind, dtype)
        if found is not None:
            return found
        if lock.exists() and not stale_lock(lock):
            time.sleep(1.0)  # another process is building it
            continue
        returncode = start_build(kind, dtype).wait()
        if returncode != 0:
            why = build_failure(kind, dtype, returncode)
            raise RuntimeError(f"building a Philox kernel failed: {why}")
