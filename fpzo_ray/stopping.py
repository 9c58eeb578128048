"""How a run or sweep is stopped from outside: SIGINT, SIGTERM and SIGHUP all stop it the way
Ctrl-C does (Tune checkpoints its experiment, runs end KILLED, the table of trial states and
the resume command are printed, exit 130), however the process was started.

The handlers are installed explicitly rather than inherited: a process started in the
background by a script (``python -m fpzo_ray.sweep ... &``) inherits SIGINT as *ignored*, and
``ray.init`` replaces SIGTERM's handler with one that exits on the spot. SIGTERM and SIGHUP
call whatever handles SIGINT at that moment: Tune's own while an experiment runs (a graceful
stop; a second signal stops at once), Python's ``KeyboardInterrupt`` otherwise. The one
inherited disposition kept is an ignored SIGHUP: that is what ``nohup`` asks for (the run
outlives the terminal), and SIGINT and SIGTERM still stop such a run.

Once a stop is being carried out (runs ended KILLED, the state saved, Ray shut down, at exit
the session folder removed), another signal must not cut that short half-way, where a
``KeyboardInterrupt`` would only print a traceback from an exit handler: it is announced, and
a third quits at once (:func:`now_stopping`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

#: The exit status of a run or sweep stopped by any of these signals (128 + SIGINT).
STOPPED_EXIT_CODE = 130

_hangups_ignored: bool | None = None  # SIGHUP's disposition as inherited (nohup), read once
_signals_while_stopping = 0


def install_stop_handlers() -> None:
    """SIGINT raises ``KeyboardInterrupt``; SIGTERM and SIGHUP act as SIGINT does. Call it at
    the start, and again after anything that installs handlers of its own (``ray.init``)."""
    global _hangups_ignored
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    if _hangups_ignored is None:
        _hangups_ignored = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _as_sigint)
    if not _hangups_ignored:
        signal.signal(signal.SIGHUP, _as_sigint)


def _as_sigint(signum: int, frame: FrameType | None) -> None:
    """Hand the signal to SIGINT's current handler (Tune's during a fit)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt(signal.Signals(signum).name)


def now_stopping() -> None:
    """The process is stopping (a stop was received, or it is exiting): from now on a stop
    signal does not interrupt the cleanup; the first one says so, the next quits at once."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _while_stopping)
    signal.signal(signal.SIGTERM, _while_stopping)
    if not _hangups_ignored:
        signal.signal(signal.SIGHUP, _while_stopping)


def _while_stopping(signum: int, frame: FrameType | None) -> None:
    global _signals_while_stopping
    _signals_while_stopping += 1
    if _signals_while_stopping == 1:
        print(
            "\nAlready stopping; another signal quits at once, without finishing the cleanup.",
            file=sys.stderr,
            flush=True,
        )
        return
    os._exit(STOPPED_EXIT_CODE)  # a local Ray's processes go with the driver (fate sharing)
