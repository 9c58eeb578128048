"""A Ray cluster of several nodes on this machine that behaves like separate machines.

Each node has its own ports and temp folder. The worker nodes run in private mount namespaces
(``unshare --mount``, as root) in which every *hidden* path is covered by an empty tmpfs: the
head's temp folder and its local results folder are then no more visible from a worker node
than from a second machine without NFS. What the cluster shares is what is left visible: the
code and its virtual environment (as a machine image would), and a shared folder (as an NFS
mount would).

Nodes are stopped by their process ids (the ``ray start --block`` process of each node and
everything under it); ``ray stop`` would end every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from studies import command_env, free_port, kill_session, ray_cli

RAY = str(Path(sys.executable).parent / "ray")
#: GCS health checks every 0.5 s, a node dead after 3 missed: a lost node is noticed in ~2 s
#: instead of Ray's default ~30 s.
FAST_FAILURE_DETECTION = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}


def namespaces_unavailable() -> str | None:
    """Why worker nodes cannot get private mount namespaces here, or None when they can."""
    if shutil.which("unshare") is None:
        return "no unshare command (util-linux)"
    if os.geteuid() != 0:
        return "private mount namespaces need root (unshare --mount)"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
         "mount -t tmpfs fpzo_probe /mnt && umount /mnt"],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"mount namespaces are not permitted here ({probe.stderr.strip()[:200]})"
    return None


@dataclass
class Node:
    process: subprocess.Popen
    temp_dir: Path
    name: str

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class LocalCluster:
    """See the module docstring. ``hidden``: paths the worker nodes must not see."""

    root: Path
    hidden: list[Path]
    env: dict[str, str] = field(default_factory=dict)
    head: Node | None = None
    workers: list[Node] = field(default_factory=list)
    gcs: str = ""
    dashboard: str = ""

    def __post_init__(self) -> None:
        self.env = {
            **command_env(),
            **FAST_FAILURE_DETECTION,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            **self.env,
        }
        self.env.pop("RAY_ADDRESS", None)

    # -- nodes --------------------------------------------------------------------------
    def start_head(self, num_cpus: int = 0) -> None:
        """A head with ``num_cpus`` logical CPUs (0: drivers only, every trial on workers)."""
        temp_dir = Path(tempfile.mkdtemp(prefix="fh", dir="/tmp"))  # socket paths are short
        ports = {
            "--port": free_port(),
            "--dashboard-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--ray-client-server-port": free_port(),
            "--metrics-export-port": free_port(),
            "--runtime-env-agent-port": free_port(),
        }
        process = subprocess.Popen(
            [RAY, "start", "--head", "--block", f"--num-cpus={num_cpus}", "--num-gpus=0"]
            + [f"{flag}={port}" for flag, port in ports.items()]
            + [f"--temp-dir={temp_dir}", "--disable-usage-stats", "--include-dashboard=true"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.head = Node(process, temp_dir, "head")
        self.gcs = f"127.0.0.1:{ports['--port']}"
        self.dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
        deadline = time.time() + 120
        while True:
            assert process.poll() is None, "ray start --head failed"
            try:
                ray_cli("job", "list", "--address", self.dashboard, env=self.env, timeout=30)
                return
            except AssertionError:
                assert time.time() < deadline, "the Ray head did not answer in 120 s"
                time.sleep(1)

    def add_worker(self, num_cpus: int = 2) -> Node:
        """A worker node in a private mount namespace (see the module docstring)."""
        assert self.head is not None
        temp_dir = Path(tempfile.mkdtemp(prefix="fw", dir="/tmp"))
        masks = " && ".join(
            f"mkdir -p {path} && mount -t tmpfs fpzo_hidden {path}"
            for path in [*self.hidden, self.head.temp_dir]
        )
        ports = " ".join(
            f"{flag}={free_port()}"
            for flag in (
                "--node-manager-port",
                "--object-manager-port",
                "--metrics-export-port",
                "--dashboard-agent-listen-port",
                "--dashboard-agent-grpc-port",
                "--runtime-env-agent-port",
            )
        )
        start = (
            f"{RAY} start --address={self.gcs} --block --num-cpus={num_cpus} --num-gpus=0 "
            f"--temp-dir={temp_dir} --disable-usage-stats {ports}"
        )
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             f"{masks} && exec {start}"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        node = Node(process, temp_dir, f"worker{len(self.workers) + 1}")
        self.workers.append(node)
        self.wait_for_nodes(1 + sum(w.alive() for w in self.workers))
        return node

    def alive_nodes(self) -> int:
        """How many nodes the cluster counts alive (Ray's state API, on the dashboard)."""
        request = urllib.request.Request(
            f"{self.dashboard}/api/v0/nodes?limit=100",
            headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                nodes = json.load(answer)["data"]["result"]["result"]
        except (OSError, KeyError, ValueError):
            return -1
        return sum(node["state"] == "ALIVE" for node in nodes)

    def wait_for_nodes(self, count: int, timeout_s: float = 120) -> None:
        deadline = time.time() + timeout_s
        while self.alive_nodes() != count:
            assert time.time() < deadline, f"the cluster did not reach {count} alive nodes"
            time.sleep(1)

    def worker_running(self, title: str) -> Node | None:
        """The worker node one of whose processes has ``title`` in its command line (Ray
        titles a worker process after the actor it runs, e.g. ``ray::ImplicitFunc`` for a
        Tune trial), or None."""
        for node in self.workers:
            with contextlib.suppress(psutil.Error):
                for process in psutil.Process(node.process.pid).children(recursive=True):
                    if title in " ".join(process.cmdline()):
                        return node
        return None

    def kill(self, node: Node) -> None:
        """Lose a node: SIGKILL to its raylet, as when its machine dies; once the head has
        seen it dead, whatever of it is left is removed (Ray's workers end with their raylet
        by themselves)."""
        alive = 1 + sum(w.alive() for w in self.workers) if self.head else 0
        for process in psutil.Process(node.process.pid).children(recursive=True):
            if process.name() == "raylet":
                process.kill()
        self.wait_for_nodes(alive - 1)
        kill_session(node.process.pid)
        node.process.wait(timeout=30)
        shutil.rmtree(node.temp_dir, ignore_errors=True)

    def shutdown(self) -> None:
        """Stop every node this cluster started (by process id) and remove its temp folders."""
        nodes = [*self.workers, *([self.head] if self.head else [])]
        for node in nodes:
            if node.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGTERM)
        deadline = time.time() + 5  # for all of them: Ray's own shutdown, then SIGKILL
        for node in nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=max(0.1, deadline - time.time()))
            kill_session(node.process.pid)  # what SIGTERM left (a worker's raylet, a job driver)
            shutil.rmtree(node.temp_dir, ignore_errors=True)
        self.workers, self.head = [], None
