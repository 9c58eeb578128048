"""The process's Ray session: joined or started once, stopped like Ctrl-C on SIGTERM."""

from __future__ import annotations

import os
import signal
import threading


def init_ray() -> None:
    """Join the cluster of ``RAY_ADDRESS`` (set by ``ray job submit``), or start Ray locally."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        ray.init(include_dashboard=False)
    stop_like_ctrl_c_on_sigterm()


def stop_like_ctrl_c_on_sigterm() -> None:
    """SIGTERM (``ray job stop``, a batch scheduler, ``kill``) stops the way Ctrl-C does:
    Tune checkpoints its experiment, runs end KILLED, the resume command is printed. Installed
    after ``ray.init``, whose own handler would otherwise end the process on the spot."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
