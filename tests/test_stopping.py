"""The stop signals' handlers, in fresh interpreters (a handler set here would change the test
session's own): SIGINT, SIGTERM and SIGHUP stop the way Ctrl-C does whatever the process
inherited, except a SIGHUP that ``nohup`` asked to be ignored."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Inherits the dispositions given in argv (ignored or default), installs the handlers, sends
# itself the signal, and says whether that raised KeyboardInterrupt.
PROBE = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
for name in sys.argv[3:]:
    signal.signal(getattr(signal, name), signal.SIG_IGN)
from fpzo_ray.stopping import install_stop_handlers
install_stop_handlers()
try:
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))
    time.sleep(2)
    print("not stopped")
except KeyboardInterrupt:
    print("stopped")
"""


def _probe(sent: str, ignored: tuple[str, ...] = ()) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT), sent, *ignored],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("sent", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_every_stop_signal_stops_like_ctrl_c(sent):
    assert _probe(sent) == "stopped"


@pytest.mark.parametrize("sent", ["SIGINT", "SIGTERM"])
def test_an_inherited_ignored_sigint_does_not_make_a_run_unstoppable(sent):
    # what a script's `python -m fpzo_ray.sweep ... &` inherits
    assert _probe(sent, ("SIGINT",)) == "stopped"


def test_nohup_keeps_hangups_ignored_and_the_other_signals_still_stop():
    assert _probe("SIGHUP", ("SIGHUP",)) == "not stopped"
    assert _probe("SIGTERM", ("SIGHUP",)) == "stopped"


def test_sigterm_hands_over_to_the_sigint_handler_of_the_moment():
    """While Tune runs an experiment its own SIGINT handler stops it gracefully: SIGTERM
    must reach that handler, not bypass it."""
    from fpzo_ray.stopping import _as_sigint

    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        _as_sigint(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.SIGINT]


# Stops once, then, as the cleanup runs, receives the signals given in argv 0.3 s apart.
STOPPING_PROBE = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from fpzo_ray.stopping import install_stop_handlers, now_stopping
install_stop_handlers()
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(2)
except KeyboardInterrupt:
    now_stopping()
    for name in sys.argv[2:]:
        os.kill(os.getpid(), getattr(signal, name))
        time.sleep(0.3)
    print("cleanup finished", flush=True)
"""


def _stopping_probe(*signals: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", STOPPING_PROBE, str(ROOT), *signals],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_signal_while_stopping_says_so_and_the_cleanup_finishes():
    """Two Ctrl-C in a row: the second does not cut the cleanup (runs ended KILLED, Ray shut
    down) short with a traceback from an exit handler; it is announced."""
    for second in ("SIGINT", "SIGTERM"):
        done = _stopping_probe(second)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "cleanup finished"
        assert done.stderr.strip() == (
            "Already stopping; another signal quits at once, without finishing the cleanup."
        )


def test_a_third_signal_while_stopping_quits_at_once_with_130():
    done = _stopping_probe("SIGINT", "SIGINT")
    assert done.returncode == 130
    assert "cleanup finished" not in done.stdout
    assert "Traceback" not in done.stderr
