"""How an entry point reports an error after work has started (a full disk, a lost store, a
bug): one line naming the cause, the traceback saved beside the results rather than printed
(hundreds of lines of Ray, Tune and SQLAlchemy frames bury the one that matters), and the
command that continues the work once the cause is fixed."""

from __future__ import annotations

import re
import sysconfig
import traceback
from pathlib import Path

ERROR_LOG = "error.log"


class StoppedOnError(RuntimeError):
    """Work stopped on an error; the message is ready to print (what, where, how to go on)."""


class RunFailed(RuntimeError):
    """A run that cannot give a meaningful result, whatever more rounds it ran: ``kind``
    names why (``no_usable_clients``, ``non_finite_weights``, ``pruning_failed``), the
    message what was seen. Raised by the server; the run ends FAILED, never FINISHED."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)  # both in args: it crosses Ray pickled
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def root_cause(exc: BaseException) -> str:
    """``Type: first line`` of the innermost exception: "OperationalError: database or disk is
    full" rather than the MlflowException wrapping it, and the actor's own exception rather
    than Ray's wrapper; then where it was raised when that was in the researcher's own code
    (a model, a data loader, an algorithm named by import path): `` (raised in FILE:LINE, in
    FUNCTION)``."""
    chain, seen = [_unwrapped(exc)], {id(exc)}
    while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None:
        if id(inner) in seen:
            break
        seen.add(id(inner))
        chain.append(_unwrapped(inner))
    cause = chain[-1]
    lines = str(cause).strip().splitlines()
    text = f"{type(cause).__name__}: {lines[0][:200] if lines else ''}".rstrip(": ")
    return text + _user_frame([exc, *chain])


def run_failure(exc: BaseException) -> RunFailed | None:
    """The :class:`RunFailed` behind ``exc`` (raised in the server actor, wrapped by Ray)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current = _unwrapped(current)
        if isinstance(current, RunFailed):
            return current
        current = current.__cause__ or current.__context__
    return None


def _unwrapped(exc: BaseException) -> BaseException:
    """The exception an actor raised rather than Ray's wrapper of it (``RayTaskError``, whose
    text is the actor's whole traceback): its ``cause``."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
#: Code that is not the researcher's: this package, the interpreter's library, installed
#: packages (torch, Ray, MLflow).
_NOT_USER_CODE = tuple(
    {str(Path(__file__).resolve().parent), sysconfig.get_paths()["stdlib"]}
    | {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
)


def _user_frame(chain: list[BaseException]) -> str:
    """`` (raised in FILE:LINE, in FUNCTION)`` for the innermost frame of the researcher's
    own code in the tracebacks of ``chain`` (a Ray wrapper's text is its actor's), or
    "" when the error arose elsewhere."""
    for exc in reversed(chain):
        wrapped = isinstance(getattr(exc, "cause", None), BaseException)
        text = str(exc) if wrapped else "".join(traceback.format_tb(exc.__traceback__))
        for file, line, function in reversed(_FRAME.findall(text)):
            if not file.startswith(("<", *_NOT_USER_CODE)):
                return f" (raised in {file}:{line}, in {function})"
    return ""


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
        if re.match(r"^[\w.]+(Error|Exception|Interrupt|Failed)\b:?", line):
            return line
    return lines[-1] if lines else "trial failed"
