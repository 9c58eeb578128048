"""Diagnostics: one logger per module (``logging.getLogger(__name__)``), shown by a single
handler on the package's logger as ``warning: <message>`` lines on stderr.

Entry points and the processes Ray starts for a run (the trial, the server, the workers) call
:func:`configure`; the level comes from ``FPZO_LOG_LEVEL`` (default ``WARNING``: worker
replacements, unreadable checkpoints, figures that could not be drawn; ``INFO`` adds every
retried or out-of-memory client). What a command is for (tables, progress lines, the paths
it wrote) is its output, printed, not logged.
"""

from __future__ import annotations

import logging
import os
import sys

PACKAGE = "fpzo_ray"
LEVEL_VARIABLE = "FPZO_LOG_LEVEL"


class _LowerLevelFormatter(logging.Formatter):
    """``warning: message``: the way the commands' own one-line messages read."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def configure() -> None:
    """Attach the package's handler once per process (idempotent)."""
    logger = logging.getLogger(PACKAGE)
    if any(getattr(h, "fpzo_ray", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.fpzo_ray = True  # type: ignore[attr-defined]
    handler.setFormatter(_LowerLevelFormatter())
    logger.addHandler(handler)
    logger.setLevel(os.environ.get(LEVEL_VARIABLE, "WARNING").upper())
    logger.propagate = False
