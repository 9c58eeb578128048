"""MLflow logging: one MLflow run per federated run (per Tune trial in a sweep).

All writes go through :class:`MLflowTracker`, which addresses runs by id (no global "active
run"), so one process can keep several runs open. ``python -m fpzo_ray.run`` records through
``lifecycle.recorder``; a sweep's tracker lives in the Tune driver, inside
``sweep.callbacks.MLflowTrialCallback`` (a single writer to the store).

A sweep is one *parent* run (the sweep file, the resolved search space, the trial tables and
the per-cell summary) and one *child* run per trial (MLflow's nested runs: the
``mlflow.parentRunId`` tag), tagged with its ``cell``, ``phase`` (grid / search / repeat),
``sample`` and ``seed`` and with one tag per grid axis, so the UI groups and compares them.

Store: ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<results>/mlflow.db`` with
artifacts under ``<results>/mlartifacts``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fpzo_ray.artifacts import CLIENTS_FILE, CONFIG_FILE, MODEL_FILE
from fpzo_ray.config import ConfigError, RunConfig, flatten
from fpzo_ray.mlflow_writer import StoreWriter
from fpzo_ray.storage import Storage

log = logging.getLogger(__name__)

#: Files a run writes into its trial folder that are logged as artifacts at its end.
RUN_ARTIFACTS = (CLIENTS_FILE, CONFIG_FILE, MODEL_FILE)
#: Key of the one-off setup figures (pruning summary) in the first reported result.
SETUP_KEY = "setup"
#: Reported result keys that are bookkeeping, not metrics.
#: (``time_total_s``, the trial's wall time so far, is logged: reports show it.)
_NOT_METRICS = {
    "round",
    "done",
    "training_iteration",
    "timestamp",
    "time_this_iter_s",
    "time_since_restore",
    "iterations_since_restore",
    "pid",
    "node_ip",
    "timesteps_total",
    "episodes_total",
    "timesteps_since_restore",
}


def default_results_dir() -> Path:
    """``FPZO_RESULTS_DIR``, else ``./results``; under ``ray job submit`` the working directory
    is a temporary upload that Ray deletes, so results go to ``~/fpzo_ray_results`` there."""
    if os.environ.get("FPZO_RESULTS_DIR"):
        return Path(os.environ["FPZO_RESULTS_DIR"])
    if "job_submission_id" in os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", ""):
        return Path.home() / "fpzo_ray_results"
    return Path("results")


def resumed_results_dir(folder: Storage, given: str | None, layout: str) -> Path:
    """Where a resumed sweep or run keeps what stays local: ``--results-dir`` (``given``),
    else the results folder ``folder`` is in (``<results>/<layout>/<name>``), else the
    default."""
    if given:
        return Path(given)
    if folder.is_local and folder.local_path.parent.name == layout:
        return folder.local_path.parent.parent
    return default_results_dir()


#: The SQLite store a results folder holds when MLFLOW_TRACKING_URI names none, and the folder
#: beside it that holds its runs' artifacts.
DEFAULT_STORE = "mlflow.db"
ARTIFACTS_FOLDER = "mlartifacts"


def relocate_artifacts(store: Path, original: Path, copy: Path) -> None:
    """Point the artifact locations of the copied SQLite ``store`` from the ``mlartifacts``
    folder of the ``original`` results folder to that of the ``copy``. MLflow records them as
    absolute URIs and has no API to change them, so they are rewritten in its schema's two
    columns (``experiments.artifact_location``, ``runs.artifact_uri``); nothing else is."""
    import sqlite3

    old = (original.resolve() / ARTIFACTS_FOLDER).as_uri()
    new = (copy.resolve() / ARTIFACTS_FOLDER).as_uri()
    with contextlib.closing(sqlite3.connect(store)) as db, db:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            db.execute(
                f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                f"WHERE substr({column}, 1, ?) = ?",
                (new, len(old) + 1, len(old), old),
            )


def resolve_tracking_uri(results_dir: str | Path) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(results_dir).resolve() / DEFAULT_STORE)}"


def tracking_uri_of(results_dir: str | Path, recorded: str | None) -> str:
    """Where a sweep or run logs: ``MLFLOW_TRACKING_URI`` when set; else, resumed, the store
    it logged to before (``recorded`` in its folder), which must still be there (resumed on a
    fresh head, it cannot find its runs in a SQLite file the lost head kept); else the SQLite
    file in ``results_dir``.

    A results folder copied whole (``cp -r results copy``) holds its own store: a folder
    resumed from the copy logs there, and its artifacts go to the copy's ``mlartifacts``,
    never into the original's, whose paths the copy recorded."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    own_store = Path(results_dir).resolve() / DEFAULT_STORE
    if recorded and recorded.startswith("sqlite:///") and own_store.is_file():
        original = Path(recorded[len("sqlite:///") :])
        if original.name == DEFAULT_STORE and original.resolve() != own_store:
            relocate_artifacts(own_store, original.parent, own_store.parent)
            return f"sqlite:///{own_store}"
    if recorded:
        if recorded.startswith("sqlite:///") and not Path(recorded[len("sqlite:///") :]).is_file():
            raise ConfigError(
                f"config error: --resume: the sweep logged to {recorded}, which is not on this "
                "machine; set MLFLOW_TRACKING_URI to the store that holds its runs (its "
                "tracking server, or that file copied here)"
            )
        return recorded
    return resolve_tracking_uri(results_dir)


#: The least free space the results folder's disk must have before a run or sweep starts: its
#: MLflow store (about 1 MB when made), checkpoints and records of a small model. A floor, not
#: an estimate: a full disk then fails here in one line rather than in MLflow's database.
MIN_FREE_MB = 50


def prepare_results_dir(path: Path) -> Path:
    """Create ``path`` and check that it can be written, before any work: a missing parent
    that cannot be created, a file in the way, a read-only disk, no permission, a (nearly)
    full disk are one-line :class:`ConfigError` s naming ``--results-dir``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".fpzo_write_test"
        probe.write_text("ok")
        probe.unlink()
        free_mb = shutil.disk_usage(path).free / 1e6
    except OSError as exc:
        raise ConfigError(
            f"config error: --results-dir: {path}: cannot be written "
            f"({exc.strerror or type(exc).__name__})"
        ) from None
    if free_mb < MIN_FREE_MB:
        raise ConfigError(
            f"config error: --results-dir: {path}: {free_mb:.1f} MB free on its disk, less "
            f"than the {MIN_FREE_MB} MB a run needs at least: free some space or point "
            "--results-dir elsewhere"
        )
    return path


def ui_command(tracking_uri: str, experiment_id: str | None = None) -> str:
    """The command that opens the MLflow UI on ``tracking_uri``, runnable as printed (this
    interpreter's mlflow, whether or not its virtual environment is active), and the page to
    open: the experiment's runs. MLflow 3's UI opens on its GenAI views unless the address
    asks for model training (``workflowType``), whatever the experiment's kind tag says."""
    page = "http://127.0.0.1:5000"
    if experiment_id is not None:
        page += f"/#/experiments/{experiment_id}?workflowType=machine_learning"
    return (
        f"{sys.executable} -m mlflow ui --backend-store-uri {tracking_uri} --port 5000"
        f"   # then open {page}"
    )


def driver_identity() -> str:
    """``host:pid:start time`` of this process, tagged on every run it opens, so that a later
    process can tell whether a run's writer is still alive."""
    import socket

    import psutil

    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time():.0f}"


def _writer_is_gone(identity: str) -> bool:
    """True when the process ``identity`` names ran on this host and is no longer there
    (another host's processes cannot be checked from here)."""
    import socket

    import psutil

    try:
        host, pid, started = identity.rsplit(":", 2)
        if host != socket.gethostname():
            return False
        return f"{psutil.Process(int(pid)).create_time():.0f}" != started
    except psutil.NoSuchProcess:
        return True
    except (ValueError, psutil.Error):
        return False


def _cannot_close(what: str, exc: Exception) -> None:
    from fpzo_ray.failure import root_cause

    log.warning(
        "could not close %s in MLflow (%s); the next sweep or run on this experiment "
        "marks it KILLED",
        what,
        root_cause(exc),
    )


# MLflow 3's UI opens an experiment whose kind it cannot tell on its GenAI overview (traces,
# tokens, latency); this tag says the experiment is model training, so it opens on the runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


class MLflowTracker:
    """Writes runs by id. Every run it opens is tagged with this process's identity
    (``fpzo_driver``): runs whose process died without closing them (SIGKILL, a lost node,
    ``ray job stop`` past its grace period) are marked KILLED by the next tracker that opens
    the same experiment."""

    def __init__(self, tracking_uri: str, experiment: str, results_dir: str | Path) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
            if EXPERIMENT_KIND_TAG not in found.tags:  # made by an older fpzo_ray, or by hand
                self.client.set_experiment_tag(
                    self.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING
                )
        else:
            location = None
            if tracking_uri.startswith("sqlite:"):
                location = (Path(results_dir).resolve() / ARTIFACTS_FOLDER).as_uri()
            self.experiment_id = self.client.create_experiment(
                experiment,
                artifact_location=location,
                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING},
            )
        # MLflow logs a store error's whole traceback before raising it; the entry points
        # report it in one line and save the traceback (``failure``).
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.identity = driver_identity()
        self.writer = StoreWriter(self.client)
        self.close_orphans()

    def close_orphans(self) -> int:
        """Mark KILLED the RUNNING runs whose writing process is gone; returns how many."""
        closed = 0
        for run in self.client.search_runs(
            [self.experiment_id], "attributes.status = 'RUNNING'", max_results=10000
        ):
            writer = run.data.tags.get("fpzo_driver", "")
            if writer and _writer_is_gone(writer):
                self.client.set_tag(
                    run.info.run_id, "killed", f"its process ({writer}) ended without closing it"
                )
                self.client.set_terminated(run.info.run_id, "KILLED")
                closed += 1
        return closed

    def reopen(self, run_id: str) -> int:
        """Continue a run (a resumed trial or sweep): RUNNING again, written by this process.
        Returns the last round it logged, so that resumed rounds are not logged twice."""
        self.client.update_run(run_id, status="RUNNING")
        self.client.set_tag(run_id, "fpzo_driver", self.identity)
        history = self.client.get_metric_history(run_id, "participants")
        return max((m.step for m in history), default=0)

    def end_open_runs(self, status: str, message: str) -> None:
        """End every run this process still has open (a sweep that stops abnormally)."""
        try:
            runs = self.client.search_runs(
                [self.experiment_id],
                f"attributes.status = 'RUNNING' and tags.fpzo_driver = '{self.identity}'",
                max_results=10000,
            )
        except Exception as exc:  # noqa: BLE001 - the store itself may be what failed
            _cannot_close("this process's runs", exc)
            return
        for run in runs:
            self.end_run_if_possible(run.info.run_id, status, message)

    def end_run_if_possible(self, run_id: str, status: str, message: str) -> None:
        """End a run on the way out of a failure, which may be the store's own (a full disk):
        then say so; the run's process being gone, the next start marks it KILLED. The
        writes queued before it go first."""
        try:
            self.flush()
            self.end_run(run_id, status, message)
        except Exception as exc:  # noqa: BLE001 - on the way out of a failure, never raise
            _cannot_close(f"run {run_id}", exc)

    def start_run(
        self,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        tags = {**(tags or {}), "fpzo_driver": self.identity}
        if parent_run_id is not None:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def find_run(self, tag: str, value: str) -> str | None:
        """The id of an existing run carrying ``tag=value`` (to continue it on resume)."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.{tag} = '{value}'", max_results=1
        )
        return runs[0].info.run_id if runs else None

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(dict(params)).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
        items = _metric_entities(metrics, step)
        if items:
            self.client.log_batch(run_id, metrics=items)

    def queue_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
        """:meth:`log_metrics` off the caller's thread, coalesced with the rounds queued
        before it (``mlflow_writer``); :meth:`flush` waits for them."""
        self.writer.metrics(run_id, _metric_entities(metrics, step))

    def queue(self, fn: Callable[..., Any], *args: Any) -> None:
        """Any other write (``self.log_params``, ``self.end_run``, ...), after the queued ones."""
        self.writer.call(fn, *args)

    def flush(self) -> None:
        """Wait for every queued write (raising the first that failed)."""
        self.writer.flush()

    def log_artifact(self, run_id: str, path: str | Path) -> None:
        self.client.log_artifact(run_id, str(path))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, str(value)[:5000])

    def end_run(self, run_id: str, status: str = "FINISHED", error: str | None = None) -> None:
        """``status``: FINISHED, FAILED (an error, named by ``error``) or KILLED (interrupted)."""
        if error:
            self.client.set_tag(run_id, "error" if status == "FAILED" else "killed", error[:5000])
        self.client.set_terminated(run_id, status)


def log_run_figures(tracker: MLflowTracker, run_id: str, cfg: RunConfig, folder: Path) -> None:
    """The run's figures (``report.run_figures``) into ``folder/figures`` and onto the run;
    a figure that cannot be drawn is a warning, never the end of a run."""
    from fpzo_ray.failure import root_cause
    from fpzo_ray.report.publish import write_run_figures

    try:
        write_run_figures(tracker.client, run_id, cfg, folder)
    except Exception as exc:  # noqa: BLE001 - a figure must not end a run
        log.warning("the figures of run %s could not be made (%s)", run_id, root_cause(exc))


def _metric_entities(metrics: Mapping[str, Any], step: int) -> list[Any]:
    """The finite numbers of ``metrics`` as MLflow metrics at ``step``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [
        Metric(k, float(v), now, step)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    ]


def round_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric per-round metrics of a reported result."""
    return {
        k: v
        for k, v in result.items()
        if k not in _NOT_METRICS
        and k != SETUP_KEY
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
    }
