"""The server's state on disk: written atomically, read without executing anything.

A checkpoint holds tensors and plain data only (numbers, strings, lists, dicts), and is read
with ``torch.load(weights_only=True)``: a crafted file cannot run code on ``--resume``. A file
that cannot be read (truncated, corrupt, or crafted) raises :class:`CheckpointError`, one line
naming it; callers then fall back to an older checkpoint of the same run.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
STATE_FILE = "server_state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read; the message names it."""


def save_server_state(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_server_state(path: Path) -> dict[str, Any]:
    """The state saved in ``path``, read with ``weights_only=True``."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: no such file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read ({reason})") from None
    if not isinstance(state, dict) or "rounds_done" not in state:
        raise CheckpointError(f"checkpoint {path} does not hold a server state")
    return state


def newest_readable(
    folders: list[Path], warn: Callable[[str], Any] | None = None
) -> dict[str, Any] | None:
    """The state in the first of ``folders`` (newest first) that can be read; every one that
    cannot is reported through ``warn`` (default: a logged warning) and skipped. None when
    none can be read."""
    for folder in folders:
        try:
            return load_server_state(folder / STATE_FILE)
        except CheckpointError as exc:
            (warn or log.warning)(f"{exc}; trying an older checkpoint")
    return None
