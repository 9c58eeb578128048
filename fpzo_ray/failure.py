"""How an entry point reports an error after work has started (a full disk, a lost store, a
bug): one line naming the cause, the traceback saved beside the results rather than printed
(hundreds of lines of Ray, Tune and SQLAlchemy frames bury the one that matters), and the
command that continues the work once the cause is fixed."""

from __future__ import annotations

import re
import traceback
from pathlib import Path

ERROR_LOG = "error.log"


class StoppedOnError(RuntimeError):
    """Work stopped on an error; the message is ready to print (what, where, how to go on)."""


def root_cause(exc: BaseException) -> str:
    """``Type: first line`` of the innermost exception: "OperationalError: database or disk is
    full" rather than the MlflowException wrapping it."""
    cause, seen = exc, {id(exc)}
    while (inner := cause.__cause__ or cause.__context__) is not None:
        cause = inner
        if id(cause) in seen:
            break
        seen.add(id(cause))
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:200] if lines else ''}".rstrip(": ")


def save_traceback(exc: BaseException, folder: Path) -> str:
    """Write ``exc``'s traceback to ``folder/error.log`` (when the disk still takes it); says
    where it went, or why it could not be saved."""
    log = folder / ERROR_LOG
    try:
        log.write_text("".join(traceback.format_exception(exc)))
        return f"the traceback is in {log}"
    except OSError as why:
        return f"the traceback could not be saved ({why.strerror})"


def stopped_on_error(exc: BaseException, folder: Path, resume_command: str) -> StoppedOnError:
    """The error to raise in place of ``exc``: its traceback goes to ``folder/error.log``."""
    saved = save_traceback(exc, folder)
    return StoppedOnError(
        f"error: {root_cause(exc)}\n{saved}; once the cause is fixed, "
        f"resume with:\n  {resume_command}"
    )


def error_summary(trace: str) -> str:
    """The line of a traceback that says what went wrong (``SomeError: message``)."""
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b:?", line):
            return line
    return lines[-1] if lines else "trial failed"
