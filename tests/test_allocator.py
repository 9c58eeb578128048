"""Worker processes keep the memory they free (glibc's malloc told not to give it back)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Allocates and frees a 64 MiB block, then prints the resident growth it left behind.
SCRIPT = """
import sys
import psutil
from fpzo_ray.sim.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
process = psutil.Process()
before = process.memory_info().rss
block = bytearray(64 << 20)  # zero-filled: every page touched
del block
print((process.memory_info().rss - before) >> 20)
"""


def _left_resident_mib(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_worker_process_keeps_what_it_freed():
    assert _left_resident_mib("default") < 16  # a freed block goes back to the OS
    assert _left_resident_mib("keep") >= 60  # kept: the next step finds its pages in place
