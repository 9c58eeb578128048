"""The sweep driver's Tune callbacks that record: every trial mirrored into MLflow.

:class:`MLflowTrialCallback` keeps one MLflow child run per Tune trial under the sweep's
parent run: the tracker lives in the Tune driver, a single writer to the store (SQLite does
not like concurrent writers), and the driver sees every trial's start, results, end and
errors, so no run is ever left RUNNING. Each trial's rounds go through a
``lifecycle.recorder.RoundRecorder``, the same rule as ``python -m fpzo_ray.run``'s: a round
is logged once, even when a restarted trial reports it again. A trial that ended before its
last round (an early stop by the scheduler or by a run callback) is tagged and marked in its
folder (``artifacts.STOPPED_MARKER``): a report tells it from an interrupted one.

What a running sweep prints is ``sweep.progress`` (output only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback

from fpzo_ray.artifacts import STOPPED_MARKER
from fpzo_ray.config import config_from_dict, params_of
from fpzo_ray.failure import error_summary
from fpzo_ray.lifecycle.recorder import RoundRecorder
from fpzo_ray.sweep.trial_files import TrialFinisher, trial_storage
from fpzo_ray.tracking import MLflowTracker


def lost_to_the_cluster(trial: Any) -> bool:
    """Whether a trial's last failure was the cluster's (a node, a process or an actor
    lost: Ray's actor, node, worker and object-loss errors, also as the cause of another
    error, or named in the trace of one: a cause is not always pickled with it), not an
    error raised by the trial's own code."""
    from ray.exceptions import (
        NodeDiedError,
        ObjectLostError,
        OwnerDiedError,
        RayActorError,
        RayTaskError,
        WorkerCrashedError,
    )

    lost = (RayActorError, NodeDiedError, ObjectLostError, OwnerDiedError, WorkerCrashedError)
    error: BaseException | None = _pickled_error(trial)
    for _ in range(20):  # a cause chain is short; a cycle must not hang the driver
        if error is None:
            return False
        if isinstance(error, lost) or any(name in str(error) for name in _LOST_NAMES):
            return True
        if isinstance(error, RayTaskError):
            cause = error.as_instanceof_cause()
            if isinstance(cause, lost):
                return True
            error = getattr(error, "cause", None) or error.__cause__
        else:
            error = error.__cause__ or error.__context__
    return False


#: Ray's errors for what the cluster lost, as they appear in a trace.
_LOST_NAMES = tuple(
    f"ray.exceptions.{name}"
    for name in (
        "ActorDiedError",
        "ActorUnavailableError",
        "NodeDiedError",
        "OwnerDiedError",
        "ObjectLostError",
        "WorkerCrashedError",
    )
)


def _pickled_error(trial: Any) -> BaseException | None:
    """The exception Tune saved for the trial's last failure (the driver's copy first: the
    one in storage is written later), or None."""
    import cloudpickle

    local = Path(trial.pickled_error_file) if trial.pickled_error_file else None
    try:
        if local is not None and local.is_file():
            with local.open("rb") as saved:
                return cloudpickle.load(saved)
        return trial.get_pickled_error()
    except Exception:  # noqa: BLE001 - an error that cannot be unpickled is not a lost node
        return None


def trial_error_text(trial: Any) -> str:
    """The trial's error trace: Tune writes it locally first, to storage later."""
    local = Path(trial.error_file) if getattr(trial, "error_file", None) else None
    if local is not None and local.is_file():
        return local.read_text()
    return str(trial.get_error() or "")


def child_tags(plan: Mapping[str, Any], sweep_name: str) -> dict[str, str]:
    """Tags of a trial's run: where it sits in the sweep (``sweep.spec.TrialPlan``), and the
    plan itself without its configuration (``fpzo_plan``, JSON: what a report reads)."""
    from fpzo_ray.report.sources import PLAN_TAG

    tags = {
        "sweep": sweep_name,
        "cell": plan["cell"],
        "phase": plan["phase"],
        "sample": str(plan["sample"]),
        "seed": str(plan["seed"]),
        PLAN_TAG: json.dumps({k: v for k, v in plan.items() if k != "run"}),
    }
    tags.update({f"axis.{k}": str(v) for k, v in plan.get("coordinates", {}).items()})
    return tags


def plan_key(plan: dict[str, Any]) -> tuple[str, str, int, int]:
    """What tells one planned trial of a sweep from every other: cell, phase, sample, seed."""
    return plan["cell"], plan["phase"], int(plan["sample"]), int(plan["seed"])


class TrialMirror:
    """What :class:`MLflowTrialCallback` does: mirrors every Tune trial into one MLflow child
    run of the sweep's parent run.

    A trial's config is ``{"trial": TrialPlan.as_dict()}``; its run records the resolved
    configuration (every field, defaults included) as parameters. A resumed trial continues
    its run without logging again the rounds it had logged; a trial the sweep leaves
    unfinished (interrupted) ends KILLED.

    Every trial's next round waits until the driver has taken its last result, so the writes
    are queued: the rounds (metrics, the pruning summary) in order on the tracker's writer
    thread (``mlflow_writer``), and a finished trial's files, figures and end on a
    ``trial_files.TrialFinisher`` of their own. The driver's loop never waits on the store,
    except at a checkpoint, when it waits for the rounds queued so far (a resumed trial
    restarts from its checkpoint and must find every round before it logged). A write that
    fails is raised at the next result, and at the end of the experiment, which waits for
    every write.
    """

    def __init__(self, tracker: MLflowTracker, sweep_name: str, parent_run_id: str) -> None:
        self.tracker = tracker
        self.sweep_name = sweep_name
        self.parent_run_id = parent_run_id
        self.run_ids: dict[str, str] = {}
        self.recorders: dict[str, RoundRecorder] = {}  # run id -> its rounds
        self.closed: set[str] = set()
        self.plan_runs: dict[tuple, str] = {}  # plan_key -> run id, for every trial started
        self.finisher = TrialFinisher(tracker)  # each trial's last writes, off Tune's loop

    def progress_of(self, plan: dict[str, Any]) -> tuple[int, bool] | None:
        """For the trial of ``plan``, if it started in this session: the last round logged
        for it (0: none yet) and whether Tune ended it (completed or failed; a trial that
        reported its last round just before an interruption was not). Else None."""
        run_id = self.plan_runs.get(plan_key(plan))
        if run_id is None:
            return None
        return self.recorders[run_id].logged, run_id in self.closed

    def _run_id(self, trial: Any) -> str:
        if trial.trial_id not in self.run_ids:
            existing = self.tracker.find_run("tune_trial_id", trial.trial_id)
            if existing is None:
                plan = trial.config["trial"]
                existing = self.tracker.start_run(
                    str(trial),
                    params_of(config_from_dict(plan["run"])),
                    tags={"tune_trial_id": trial.trial_id, **child_tags(plan, self.sweep_name)},
                    parent_run_id=self.parent_run_id,
                )
                self.recorders[existing] = RoundRecorder(self.tracker, existing)
            else:
                logged = self.tracker.reopen(existing)
                self.recorders[existing] = RoundRecorder(self.tracker, existing, logged)
            self.run_ids[trial.trial_id] = existing
            self.plan_runs[plan_key(trial.config["trial"])] = existing
        return self.run_ids[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run_id(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        recorder = self.recorders[self._run_id(trial)]
        recorder.record(result, int(result.get("round", result.get("training_iteration", 0))))

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        """Every round up to the checkpoint is in the store before Tune records it (the
        rounds only: a finished trial's files and figures are another queue's)."""
        self.tracker.flush()

    def _finish(
        self, run_id: str, trial: Any, status: str, tags: dict[str, str], message: str | None = None
    ) -> None:
        """Queue a trial's last writes: its tags, artifacts and figures, then its end."""
        cfg = config_from_dict(trial.config["trial"]["run"])
        folder = trial_storage(trial) if trial.path else None
        self.finisher.finish(run_id, cfg, folder, tags, status, message)
        self.closed.add(run_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run_id(trial)
        planned = config_from_dict(trial.config["trial"]["run"]).training.rounds
        done = int((trial.last_result or {}).get("round", 0))
        tags = {}
        if done < planned:  # a scheduler or a run callback stopped it: not an interruption
            tags = {"stopped_early": f"after round {done} of {planned}"}
            if trial.path:
                trial_storage(trial).write_text(STOPPED_MARKER, str(done))
        self._finish(run_id, trial, "FINISHED", tags)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run_id(trial)
        self._finish(run_id, trial, "FAILED", {}, error_summary(trial_error_text(trial)))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Tune restarts a failed trial from its last checkpoint (``max_failures``). That is
        what a lost node, process or actor needs; an error of the trial's own code would only
        come back (a run is a function of its configuration and seed), so such a trial gets
        this one restart and no more. Its run stays open; rounds it reports again after the
        restart are not logged twice (``on_trial_result``)."""
        lost = lost_to_the_cluster(trial)
        if not lost:
            trial.max_failures = min(trial.max_failures, trial.num_failures)
        self.tracker.queue(
            self.tracker.set_tags,
            self._run_id(trial),
            {
                "restarts": trial.num_failures,
                "last_restart": "lost node, process or actor" if lost else "error in the trial",
            },
        )

    def _settle_restored(self, trials: list) -> None:
        """Trials a resumed sweep restored as ended, whose run the interrupted driver did not
        close (it was killed after Tune recorded the trial's end, before the store did):
        Tune runs them no more, so their missing rounds and their end are written now, from
        the results the trial saved (``result.json``)."""
        for trial in trials:
            if trial.trial_id in self.run_ids or trial.status not in ("TERMINATED", "ERROR"):
                continue
            run_id = self.tracker.find_run("tune_trial_id", trial.trial_id)
            if run_id is None or self.tracker.client.get_run(run_id).info.status in (
                "FINISHED",
                "FAILED",
            ):
                continue
            self._run_id(trial)  # reopens it, knowing the rounds it logged
            folder = trial_storage(trial)
            if folder.exists("result.json"):
                for line in folder.read_text("result.json").splitlines():
                    if line.strip():
                        self.on_trial_result(0, trials, trial, json.loads(line))
            if trial.status == "TERMINATED":
                self.on_trial_complete(0, trials, trial)
            else:
                self.on_trial_error(0, trials, trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Every write is done; runs still open belong to interrupted trials."""
        self._settle_restored(trials)
        self.finisher.close()
        self.tracker.flush()
        for run_id in set(self.run_ids.values()) - self.closed:
            self.tracker.end_run(
                run_id, "KILLED", f"interrupted after round {self.recorders[run_id].logged}"
            )
            self.closed.add(run_id)


class MLflowTrialCallback(TrialMirror, Callback):
    __doc__ = TrialMirror.__doc__
