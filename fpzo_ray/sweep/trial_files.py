"""A finished trial's last writes to its MLflow run, off Tune's loop.

When a trial ends, its run gets its tags, its files (``config.yaml``, ``model.pt``,
``clients.csv``, read from the trial's folder in the sweep's storage), its figures and its
end status. That takes 1-3 s a trial (most of it drawing the figures), so a
:class:`TrialFinisher` does it on a thread of its own, in order, after the trial's rounds are
in the store; the figures are drawn in a process of its own, because matplotlib holds the
interpreter lock for long stretches and the Tune driver's loop shares the interpreter with
this thread. So neither a checkpoint (which waits for the rounds logged so far) nor a result
waits behind another trial's figures.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from fpzo_ray.config import RunConfig, config_to_dict
from fpzo_ray.mlflow_writer import StoreWriter
from fpzo_ray.storage import Storage, folder_on
from fpzo_ray.tracking import RUN_ARTIFACTS, MLflowTracker

log = logging.getLogger(__name__)


def trial_storage(trial: Any) -> Storage:
    """A Tune trial's folder in the sweep's storage (its checkpoints, results, artifacts)."""
    return folder_on(trial.storage.storage_filesystem, trial.path)


def _quiet_child() -> None:
    """A figure process leaves Ctrl-C to the sweep, which shuts it down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


_FIGURE_PROCESS: ProcessPoolExecutor | None = None


def _figure_process() -> ProcessPoolExecutor:
    """The process that draws figures: started on first use (its imports take about 3 s)
    and kept for the life of this one, every phase and sweep of it; Python's exit joins it,
    and it ends with this process."""
    global _FIGURE_PROCESS
    if _FIGURE_PROCESS is None:
        _FIGURE_PROCESS = ProcessPoolExecutor(
            1, multiprocessing.get_context("spawn"), initializer=_quiet_child
        )
    return _FIGURE_PROCESS


def _draw_figures(tracking_uri: str, run_id: str, raw: dict[str, Any], folder: str) -> None:
    """In the figure process: the run's figures into ``folder/figures`` and onto the run.
    The configuration is read as a record (no researcher's module imported)."""
    from mlflow.tracking import MlflowClient

    from fpzo_ray.config import config_from_dict, records_only
    from fpzo_ray.report.publish import write_run_figures

    with records_only():
        cfg = config_from_dict(raw)
    write_run_figures(MlflowClient(tracking_uri=tracking_uri), run_id, cfg, Path(folder))


class TrialFinisher:
    """Trials' last writes in order on a thread of their own (see the module docstring)."""

    def __init__(self, tracker: MLflowTracker) -> None:
        self.tracker = tracker
        self.calls = StoreWriter(tracker.client)  # an ordered queue of calls, its own thread

    def __reduce__(self) -> tuple[Any, ...]:
        """Tune pickles the callbacks: a thread cannot be; a new finisher for the same
        tracker can."""
        return (TrialFinisher, (self.tracker,))

    def finish(
        self,
        run_id: str,
        cfg: RunConfig,
        folder: Storage | None,
        tags: dict[str, str],
        status: str,
        message: str | None,
    ) -> None:
        """Queue the trial's tags, files, figures and end (``folder``: None when it has
        none)."""
        self.calls.call(self._finish, run_id, cfg, folder, tags, status, message)

    def _finish(
        self,
        run_id: str,
        cfg: RunConfig,
        folder: Storage | None,
        tags: dict[str, str],
        status: str,
        message: str | None,
    ) -> None:
        self.tracker.flush()  # the trial's rounds are in the store before its end
        if tags:
            self.tracker.set_tags(run_id, tags)
        if folder is not None:
            self._log_files(run_id, cfg, folder)
        self.tracker.end_run(run_id, status, message)

    def _log_files(self, run_id: str, cfg: RunConfig, folder: Storage) -> None:
        """The files onto the run, and the figures; a folder elsewhere (a bucket) through a
        local temporary copy, the figures drawn there copied back beside the files."""
        if folder.is_local:
            self._log_local(run_id, cfg, folder.local_path)
            return
        with tempfile.TemporaryDirectory(prefix="fpzo_trial_") as local:
            folder.download(Path(local), RUN_ARTIFACTS)
            self._log_local(run_id, cfg, Path(local))
            if (Path(local) / "figures").is_dir():
                folder.upload(Path(local) / "figures", "figures")

    def _log_local(self, run_id: str, cfg: RunConfig, local: Path) -> None:
        from fpzo_ray.failure import root_cause

        for name in RUN_ARTIFACTS:
            if (local / name).is_file():
                self.tracker.log_artifact(run_id, local / name)
        drawing = _figure_process().submit(
            _draw_figures, self.tracker.tracking_uri, run_id, config_to_dict(cfg), str(local)
        )
        try:
            drawing.result()
        except Exception as exc:  # noqa: BLE001 - a figure must not end a run
            log.warning("the figures of run %s could not be made (%s)", run_id, root_cause(exc))

    def flush(self) -> None:
        """Wait until every queued trial is finished (raising the first write that failed)."""
        self.calls.flush()

    def close(self) -> None:
        """Finish what is queued."""
        self.flush()
