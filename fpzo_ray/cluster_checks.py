"""Before any trial starts: can every node reach the storage, and the driver the tracking store?

On a cluster of several nodes a local path that only the head has (its disk, not a shared
mount) makes every trial fail at its first checkpoint, minutes in. So before any work, the
driver writes a file into the storage, a probe task pinned to each alive node reads it back
and writes one of its own, and the driver reads those: a node that cannot see the driver's
file, or whose file the driver cannot see, stops the sweep with one line naming the option,
the node and what to do. A tracking server that does not answer is refused the same way.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import urlsplit

from fpzo_ray.config import ConfigError
from fpzo_ray.storage import Storage

#: How long the probe tasks may take (a fresh node sets up the job's runtime environment
#: before its first task runs).
PROBE_TIMEOUT_S = 120.0
#: How long a tracking server may take to answer its health check.
TRACKING_TIMEOUT_S = 5.0
#: The tracking URI schemes MLflow stores runs in ("": a bare path, a folder of files).
TRACKING_SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https")
#: The database servers among them, and their default ports.
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}

_WHAT_TO_DO = (
    "name a path every node mounts (NFS, EFS, a Kubernetes volume) or a bucket every node "
    "reaches (s3://bucket/prefix, gs://bucket/prefix)"
)


def _visit(folder: Storage, token: str, node_id: str) -> str:
    """On one node: read the driver's file, write this node's. Returns what went wrong, or
    an empty string."""
    try:
        seen = folder.read_text("driver")
    except (OSError, ValueError) as exc:
        return f"a file the driver wrote there is not there ({_first_line(exc)})"
    if seen != token:
        return "a file the driver wrote there reads back different"
    try:
        folder.write_text(node_id, token)
    except (OSError, ValueError) as exc:
        return f"it cannot be written there ({_first_line(exc)})"
    return ""


def _first_line(exc: BaseException) -> str:
    """The reason of an error in a few words: the system's for an OS error (pyarrow's own
    message repeats the path), else the message's first line."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _named(node: dict[str, Any]) -> str:
    """A node as its address and the start of its Ray id (nodes may share an address)."""
    return f"{node['NodeManagerAddress']} (Ray node {node['NodeID'][:8]})"


def check_storage_on_every_node(storage: Storage, timeout_s: float = PROBE_TIMEOUT_S) -> int:
    """On a Ray cluster of more than one alive node, check that every one of them reads what
    the driver writes into ``storage`` and writes what the driver reads; a :class:`ConfigError`
    names the first node that does not. Returns how many nodes were probed (0: one node, or
    no cluster joined yet, nothing to check)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        return 0
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return 0
    probe = storage.child(f".fpzo_probe_{uuid.uuid4().hex[:12]}")
    token = uuid.uuid4().hex
    visit = ray.remote(num_cpus=0, max_retries=0)(_visit)
    try:
        probe.write_text("driver", token)
        pending: dict[Any, dict[str, Any]] = {
            visit.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(probe, token, n["NodeID"]): n
            for n in nodes
        }
        ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
        if late:
            node = pending[late[0]]
            raise ConfigError(
                f"config error: {storage.option}: could not check {storage.location} from node "
                f"{_named(node)}: its probe task did not run within "
                f"{timeout_s:g} s (is the node overloaded, or leaving?)"
            )
        for ref in ready:
            node = pending[ref]
            problem = ray.get(ref)
            if not problem and probe.exists(node["NodeID"]):
                continue
            problem = problem or "the driver does not see the file that node wrote there"
            raise ConfigError(
                f"config error: {storage.option}: {storage.location} is not visible from node "
                f"{_named(node)} ({problem}); {_WHAT_TO_DO}"
            )
        return len(nodes)
    finally:
        with contextlib.suppress(OSError):  # a storage the driver cannot write: said above
            probe.delete()


def check_tracking_uri(tracking_uri: str, timeout_s: float = TRACKING_TIMEOUT_S) -> None:
    """Before Ray starts: the tracking URI's scheme must be one MLflow stores runs in; a
    tracking server (``http://``, ``https://``) must answer MLflow's health check within
    ``timeout_s``, and a database server (``postgresql://`` ...) accept a connection within
    it (else the driver would wait on it for minutes, Ray started). A SQLite file is opened
    by the driver itself, which says what is wrong when it cannot."""
    parts = urlsplit(tracking_uri)
    scheme = parts.scheme.split("+")[0]  # postgresql+psycopg2: SQLAlchemy's dialect+driver
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(
            f"config error: MLFLOW_TRACKING_URI: got {tracking_uri!r}, its scheme "
            f"{parts.scheme!r} is none MLflow stores runs in (a path, "
            f"{', '.join(TRACKING_SCHEMES[1:])})"
        )
    if scheme in DATABASE_PORTS:
        _check_database(parts.hostname, parts.port or DATABASE_PORTS[scheme], timeout_s)
    if scheme not in ("http", "https"):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            if answer.status == 200:
                return
            reason = f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # refused, unknown host, timed out, bad URL
        reason = getattr(exc, "reason", None) or _first_line(exc)
    raise ConfigError(
        f"config error: MLFLOW_TRACKING_URI: no MLflow tracking server answers at "
        f"{tracking_uri} ({reason}, within {timeout_s:g} s); start it "
        "(clusters/mlflow-server.sh), or unset MLFLOW_TRACKING_URI to log to a local SQLite file"
    )


def _check_database(host: str | None, port: int, timeout_s: float) -> None:
    """A database server must accept a TCP connection at ``host:port`` within ``timeout_s``
    (a Unix socket, no host, is left to the driver)."""
    if not host:
        return
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"config error: MLFLOW_TRACKING_URI: no database server accepts a connection at "
            f"{host}:{port} ({reason}, within {timeout_s:g} s); start it, or unset "
            "MLFLOW_TRACKING_URI to log to a local SQLite file"
        ) from None
