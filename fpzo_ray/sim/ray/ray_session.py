"""The process's Ray session: a cluster joined only when one is named, else a Ray of its own.

``ray.init()`` with no address joins whatever cluster Ray last recorded on this machine (its
``ray_current_cluster`` file): after a ``ray start --head`` that died without ``ray stop``, a
local run then waits on the dead head, and beside a live unrelated head it silently runs
there. A run here starts its own local Ray unless ``RAY_ADDRESS`` (which ``ray job submit``
sets, and which ``--address`` on the command lines sets) names the cluster to join; a named
cluster that does not answer is one line within seconds, not a minute of retries.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fpzo_ray.config import ConfigError
from fpzo_ray.stopping import install_stop_handlers, now_stopping

log = logging.getLogger(__name__)

#: How long a named cluster may take to accept a connection before it counts as down.
CONNECT_TIMEOUT_S = 5.0

#: Whether :func:`init_ray` started the local Ray this process uses (then this process
#: owns its processes, and :func:`stop_local_ray` may end them early).
_started_here = False


def cluster_address() -> str | None:
    """The cluster this process must join (``RAY_ADDRESS``), or None: start a local Ray
    (also for Ray's own ``local``)."""
    address = os.environ.get("RAY_ADDRESS")
    return None if address in (None, "", "local") else address


def add_address_option(parser: argparse.ArgumentParser) -> None:
    """The command lines' ``--address``: which Ray cluster to join."""
    parser.add_argument(
        "--address",
        default=None,
        metavar="HOST:PORT",
        help="join this Ray cluster (its GCS address, or 'auto' for the one `ray start` "
        "recorded on this machine); default: RAY_ADDRESS if set (ray job submit sets it), "
        "else start a local Ray",
    )


def use_address_option(args: argparse.Namespace) -> None:
    """``--address`` wins over ``RAY_ADDRESS``; set in the environment, every part of the
    process (and Ray's own tools) sees the same choice."""
    if args.address:
        os.environ["RAY_ADDRESS"] = args.address


#: The longest path Ray makes under its temp folder for a Unix socket
#: (``/ray/session_<date>_<time>_<us>_<pid>/sockets/plasma_store``), and the limit on such
#: paths (``sun_path``: 108 bytes with the final NUL).
RAY_SOCKET_SUFFIX = 70
UNIX_SOCKET_PATH_MAX = 107


def check_local_ray_temp_dir() -> None:
    """Before a local Ray starts: its temp folder (``RAY_TMPDIR``, else the system's) must
    be short enough for the Unix socket paths Ray makes there, else Ray fails after its
    start with a traceback."""
    if cluster_address() is not None:
        return
    import tempfile

    temp = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    room = UNIX_SOCKET_PATH_MAX - RAY_SOCKET_SUFFIX
    if len(os.fsencode(temp)) > room:
        which = "RAY_TMPDIR" if os.environ.get("RAY_TMPDIR") else "TMPDIR"
        raise ConfigError(
            f"config error: {which}: {temp} is {len(os.fsencode(temp))} bytes long; Ray's "
            f"socket paths under it would pass the {UNIX_SOCKET_PATH_MAX}-byte limit of Unix "
            f"sockets: name a folder of at most {room} bytes"
        )


def init_ray() -> None:
    """Join the cluster of :func:`cluster_address`, or start Ray locally; say which."""
    import ray

    global _started_here
    if ray.is_initialized():
        return
    address = cluster_address()
    if address is None:
        _choose_auth_mode()
        with _ray_processes_in_sessions_of_their_own():
            ray.init(address="local", include_dashboard=False)
        _started_here = True
        _remove_session_folder_at_exit()
        cpus = ray.cluster_resources().get("CPU", 0)
        print(f"Ray: started a local instance ({cpus:g} CPUs)", flush=True)
    else:
        gcs = _reachable_gcs(address)
        ray.init(address=gcs)
        total = ray.cluster_resources()
        alive = sum(1 for n in ray.nodes() if n.get("Alive"))
        print(
            f"Ray: joined the cluster at {gcs} ({alive} nodes, {total.get('CPU', 0):g} CPUs, "
            f"{total.get('GPU', 0):g} GPUs)",
            flush=True,
        )
    install_stop_handlers()  # ray.init replaces the SIGTERM handler with one that exits


def _choose_auth_mode() -> None:
    """Ray 2.60 turns token authentication on for a new local instance when
    ``RAY_AUTH_MODE`` is unset, and warns that it did. The mode is chosen here instead (token,
    Ray's own secure default, unless the user set one), so a run prints nothing the user
    caused nothing for; Ray's configuration, read when Ray was imported, is read again as
    Ray itself does when it makes that choice."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    from ray._raylet import Config  # type: ignore[attr-defined]

    Config.initialize("")


#: Set (to anything) to keep the session folder of the local Ray (its logs) after the exit.
KEEP_RAY_SESSION_ENV = "FPZO_KEEP_RAY_SESSION"


def _remove_session_folder_at_exit() -> None:
    """At exit, after Ray's shutdown, remove the session folder the local Ray made in the
    temp folder (``<temp>/ray/session_*``: its sockets and logs, tens of MB a day of runs):
    a run leaves nothing behind. What went wrong is in the run's own ``error.log`` and MLflow;
    ``FPZO_KEEP_RAY_SESSION=1`` keeps Ray's logs."""
    folder = session_folder()
    if folder is not None and not os.environ.get(KEEP_RAY_SESSION_ENV):
        atexit.register(remove_session_folder, folder)


def session_folder() -> Path | None:
    """The session folder of the Ray this process started or joined (None where Ray's
    private layout changed: the folder is then left in place)."""
    try:
        from ray._private import worker

        node: Any = worker._global_node
        return Path(node.get_session_dir_path())
    except Exception as exc:  # noqa: BLE001 - Ray's private layout changed: keep the folder
        log.debug("the Ray session folder is left in place (%s)", exc)
        return None


def remove_session_folder(folder: Path) -> None:
    """Shut this process's Ray down and remove the session folder its local Ray made."""
    import ray

    now_stopping()  # exiting: a stop signal now must not cut Ray's shutdown (or Ray's own) short
    ray.shutdown()  # idempotent; the processes must be gone before their folder
    shutil.rmtree(folder, ignore_errors=True)
    latest = folder.parent / "session_latest"
    if latest.is_symlink() and not latest.exists():  # it pointed to the folder just removed
        latest.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # the temp folder's ray/, when no other Ray uses it
        folder.parent.rmdir()


@contextlib.contextmanager
def _ray_processes_in_sessions_of_their_own() -> Iterator[None]:
    """Start the local Ray's processes (GCS, raylet, monitors) each in a session, hence a
    process group, of its own, not in the driver's.

    A stop sent to a process group (``timeout``, ``kill -- -PGID``, Slurm, systemd) then
    reaches the driver alone, which stops as on a single SIGTERM (runs KILLED, the table, the
    resume command) and shuts its Ray down itself; in the driver's group, the GCS and the
    raylet died with it, and the driver could only hang on a dead Ray and fail. They still
    die with the driver if it is killed outright (Ray's fate sharing on Linux). Ray starts
    them with its ``ConsolePopen``, a ``subprocess.Popen``: that private name is wrapped while
    ``ray.init`` runs; if it is not there, Ray starts as before."""
    from ray._private import services

    original = getattr(services, "ConsolePopen", None)
    if original is None:
        yield
        return

    class OwnSession(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnSession  # type: ignore[misc]
    try:
        yield
    finally:
        services.ConsolePopen = original  # type: ignore[misc]


def stop_local_ray() -> threading.Thread | None:
    """Shut down the local Ray that :func:`init_ray` started, on a thread of its own (returned:
    join it before the process exits), so that what the caller still has to do (files,
    figures, MLflow) overlaps Ray's 1-2 s of shutdown instead of following it. Nothing for a
    joined cluster (the process only disconnects from it, at exit, as before) or a Ray
    someone else started; the caller must have no use for Ray after this."""
    global _started_here
    if not _started_here:
        return None
    _started_here = False
    thread = threading.Thread(target=_shut_down, name="ray-shutdown", daemon=True)
    thread.start()
    return thread


def _shut_down() -> None:
    import ray

    try:
        _end_autoscaler_monitor()
        ray.shutdown()
    except Exception as exc:  # noqa: BLE001 - the exit's own ray.shutdown tries again
        log.warning("Ray did not shut down cleanly (%s: %s)", type(exc).__name__, exc)


def _end_autoscaler_monitor() -> None:
    """End the autoscaler's monitor process of the local Ray this process started, before
    ``ray.shutdown``. A local instance has nothing to scale; ``ray.shutdown`` ends its
    processes one by one with SIGTERM, and the monitor answers SIGTERM by trying to report
    its death to the GCS, which ``ray.shutdown`` has already stopped, so Ray waits its full
    second for it and then sends SIGKILL. Sending SIGKILL first ends it the same way, without
    the wait. Ray's process table is private: if it is not as expected, nothing is done and
    the shutdown takes its usual time."""
    try:
        from ray._private import ray_constants, worker

        node = worker._global_node
        if node is None or not node.head:
            return
        for info in node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
            info.process.kill()
            info.process.wait(timeout=1)
    except Exception as exc:  # noqa: BLE001 - only a faster shutdown is at stake
        log.debug("the autoscaler monitor was left to ray.shutdown (%s)", exc)


def _named(address: str) -> str:
    return f"Ray address {address} (--address or RAY_ADDRESS)"


def _reachable_gcs(address: str) -> str:
    """``address`` as the ``host:port`` of a cluster's GCS that accepts connections, or a
    :class:`ConfigError` naming it. ``auto`` is the cluster Ray recorded on this machine."""
    from ray._private.services import canonicalize_bootstrap_address

    if "://" in address:
        raise ConfigError(
            f"config error: {_named(address)}: Ray Client addresses are not supported; "
            "name the cluster's GCS as host:port (ray job submit sets it so)"
        )
    try:
        gcs = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as exc:
        raise ConfigError(f"config error: {_named(address)}: {exc}") from None
    assert gcs is not None  # None only for "local", which cluster_address() never returns
    host, _, port = gcs.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"config error: {_named(address)}: no Ray cluster answers at {gcs} ({reason} "
            f"within {CONNECT_TIMEOUT_S:g} s); start it, or name none to run on a local Ray"
        ) from None
    if not _speaks_grpc(gcs):
        raise ConfigError(
            f"config error: {_named(address)}: something other than a Ray cluster answers at "
            f"{gcs} (no gRPC handshake within {CONNECT_TIMEOUT_S:g} s, as Ray's GCS gives); "
            "name the cluster's GCS address (host:port, port 6379 by default)"
        )
    return gcs


def _speaks_grpc(address: str) -> bool:
    """Whether a gRPC server (as a Ray cluster's GCS is) completes the handshake at
    ``address`` within ``CONNECT_TIMEOUT_S``: an HTTP server or any other service there
    accepts the connection, then leaves ``ray.init`` waiting for minutes."""
    import grpc

    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()
