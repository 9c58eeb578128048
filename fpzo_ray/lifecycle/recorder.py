"""A run's record in MLflow: parameters, a metric row per round, artifacts, figures, its end.

:class:`RoundRecorder` holds the one rule both entry points follow: a round is logged once,
even when a resumed run (or a restarted trial) reports it again. ``python -m fpzo_ray.run``
records through :class:`MLflowRecorder` in its own process; a sweep records in its driver,
from Tune's results (``sweep.callbacks.TrialMirror``), with a ``RoundRecorder`` per trial.
Writes are queued on the tracker's writer thread (``mlflow_writer``), off the round loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fpzo_ray.artifacts import CLIENTS_FILE, CONFIG_FILE, MODEL_FILE
from fpzo_ray.sim.callbacks import RunCallback

if TYPE_CHECKING:
    from pathlib import Path

    from fpzo_ray.config import RunConfig
    from fpzo_ray.sim.ray.federation import FederatedResult
    from fpzo_ray.tracking import MLflowTracker


class RoundRecorder:
    """One MLflow run's rounds: ``logged`` is the last round it holds (a resumed run's, read
    from the store; 0 for a new run)."""

    def __init__(self, tracker: MLflowTracker, run_id: str, logged: int = 0) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.logged = logged

    def record(self, metrics: dict[str, Any], step: int | None = None) -> bool:
        """Queue a round's metrics (and the pruning summary the first round carries) unless
        the run holds that round already; whether it was queued. ``step``: the round
        (default ``metrics["round"]``)."""
        from fpzo_ray.tracking import SETUP_KEY, round_metrics

        step = int(metrics["round"]) if step is None else step
        if step <= self.logged:
            return False  # logged before an interruption: the same numbers again
        if SETUP_KEY in metrics:
            self.tracker.queue(
                self.tracker.log_params, self.run_id, {SETUP_KEY: metrics[SETUP_KEY]}
            )
        self.tracker.queue_metrics(self.run_id, round_metrics(metrics), step)
        self.logged = step
        return True

    def flush(self) -> None:
        """Wait until every queued write is in the store (raising what failed)."""
        self.tracker.flush()


class MLflowRecorder(RunCallback):
    """``python -m fpzo_ray.run``'s record: every round; before each checkpoint, every write
    so far (a resumed run restarts from its newest checkpoint and must find every round
    before it in the store); at the end the run folder's files, the figures and the run's
    end. ``store()`` returns the run's :class:`RoundRecorder`, waiting for the store to open
    (it opens on a thread of its own while the run starts)."""

    def __init__(self, store: Callable[[], RoundRecorder], cfg: RunConfig, folder: Path) -> None:
        self.store = store
        self.cfg = cfg
        self.folder = folder

    def after_round(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        recorder = self.store()
        recorder.record(metrics)
        if state is not None:
            recorder.flush()

    def on_end(self, result: FederatedResult) -> None:
        from fpzo_ray.tracking import log_run_figures

        recorder = self.store()
        tracker, run_id = recorder.tracker, recorder.run_id
        tracker.flush()
        for name in (CLIENTS_FILE, CONFIG_FILE, MODEL_FILE):
            tracker.log_artifact(run_id, self.folder / name)
        log_run_figures(tracker, run_id, self.cfg, self.folder)
        planned = self.cfg.training.rounds
        if result.rounds_done < planned:
            tracker.set_tags(
                run_id, {"stopped_early": f"after round {result.rounds_done} of {planned}"}
            )
        tracker.end_run(run_id)
