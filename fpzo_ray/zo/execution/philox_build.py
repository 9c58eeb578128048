"""Building a Philox kernel package (``zo.philox_kernels``) in a process of its own: the
generator's own tile function (``zo.philox``) exported and compiled by AOTInductor. Apart
from ``philox_kernels`` (which only finds and loads packages) because it needs the
generator, which needs the loader: the three modules import in one direction."""

from __future__ import annotations

import os
import socket

import torch

from fpzo_ray.cache import keep_inductor_headers_in_cache
from fpzo_ray.zo import philox
from fpzo_ray.zo.execution.philox_kernels import check_flags, package_path, stale_lock


def build(kind: str, dtype: torch.dtype) -> bool:
    """Build the package of ``kind`` and ``dtype`` in this process unless it exists; False
    when another process is building it (its lock is fresh). Raises what compiling raised.
    Run it in a process of its own (:func:`start_build`), never beside other torch work."""
    import torch._inductor

    keep_inductor_headers_in_cache()

    path = package_path(kind, dtype)
    if path.is_file():
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_suffix(".lock")
    try:
        descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if not stale_lock(lock):
            return False
        lock.unlink(missing_ok=True)  # its builder died: take over
        return build(kind, dtype)
    os.write(descriptor, f"{socket.gethostname()} {os.getpid()}".encode())
    os.close(descriptor)
    try:
        check_flags()

        class TileRows(torch.nn.Module):
            def forward(self, params: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
                return philox._tile_rows(params, blocks.shape[0], kind, dtype, params.device)

        example = (torch.zeros(philox.NUM_PARAMS, 2, 1, dtype=torch.int64), torch.empty(512, 0))
        seeds = torch.export.Dim("seeds", min=1, max=1 << 24)
        blocks = torch.export.Dim("blocks", min=1, max=1 << 40)
        program = torch.export.export(
            TileRows(), example, dynamic_shapes=({1: seeds}, {0: blocks}), strict=False
        )
        partial = path.with_suffix(f".{os.getpid()}.partial.pt2")
        torch._inductor.aoti_compile_and_package(program, package_path=str(partial))
        os.replace(partial, path)  # atomic: readers see no half-written package
    finally:
        lock.unlink(missing_ok=True)
    return True
