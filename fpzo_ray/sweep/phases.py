"""A sweep's phases on Ray Tune, mirrored into MLflow (``run_sweep``).

The phases run one after the other, each as one Ray Tune experiment (trials of all cells
share the cluster, at most ``max_concurrent_trials`` at a time); each trial is one whole
federated run (``sweep.trial``) inside a placement group holding its driver, server and
workers. The driver mirrors everything into MLflow (one parent run per sweep, one child run
per trial: ``sweep.callbacks``) and ends with the trial and summary tables, saved beside the
Tune experiments and logged to the parent run. The command line is ``sweep.__main__``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from fpzo_ray.artifacts import (
    ENVIRONMENT_FILE,
    PARENT_RUN_FILE,
    SELECTION_FILE,
    TIMING_FILE,
    TRACKING_FILE,
)
from fpzo_ray.config import (
    config_from_dict,
    merge,
)
from fpzo_ray.report.sources import (
    EXPERIMENT_TAG,
    SweepRecord,
    read_json,
    read_selections,
    read_text,
)
from fpzo_ray.sim.ray.ray_session import (
    init_ray,
)
from fpzo_ray.stopping import now_stopping
from fpzo_ray.storage import (
    LocalCopy,
    Storage,
    folder_on,
    open_storage,
    resolve_storage,
)
from fpzo_ray.sweep.spec import (
    SweepSpec,
    TrialPlan,
    save_spec,
)
from fpzo_ray.sweep.study.summary import Selection, TrialFigures, json_ready, select, trial_figures
from fpzo_ray.sweep.study.tables import summary_table, summary_view, trial_table

__all__ = ["SweepOutcome", "run_sweep"]


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep (or one session of it) produced."""

    experiment_dir: Path
    parent_run_id: str
    trials: pd.DataFrame  # one row per trial, every phase run so far
    summary: pd.DataFrame  # one row per cell (empty when interrupted)
    selections: dict[str, Selection]
    figures: list[TrialFigures]
    interrupted: bool = False  # some trial did not run every round: resume with --resume
    #: where the experiment persists (``experiment_dir`` is its local copy when it is a URI)
    experiment_location: str = ""

    @property
    def resume_command(self) -> str:
        return _resume_command(self.experiment_location or str(self.experiment_dir))


def _resume_command(experiment: str | Path) -> str:
    return shlex.join([sys.executable, "-m", "fpzo_ray.sweep", "--resume", str(experiment)])


# -- one phase: a Tune experiment ----------------------------------------------------------
def _trial_name(trial: Any) -> str:
    plan = trial.config["trial"]
    where = (
        f"seed{plan['seed']}" if plan["phase"] == "repeat" else f"{plan['phase']}{plan['sample']}"
    )
    return f"{plan['cell']}_{where}_{trial.trial_id[-5:]}"


def _pin_workers(plans: list[TrialPlan], concurrent: int) -> list[TrialPlan]:
    """Resolve ``simulation.num_workers: 0`` (auto) once, in the driver, for every trial."""
    from fpzo_ray.sim.ray.federation import resolve_num_workers

    configs = [config_from_dict(p.run) for p in plans]
    if all(c.simulation.num_workers > 0 for c in configs):
        return plans
    count = min(resolve_num_workers(c, concurrent_runs=concurrent) for c in configs)
    return [
        replace(p, run=merge(p.run, {"simulation": {"num_workers": count}}))
        if c.simulation.num_workers == 0
        else p
        for p, c in zip(plans, configs)
    ]


def _run_phase(
    phase: str,
    plans: list[TrialPlan],
    spec: SweepSpec,
    experiment: Storage,
    callbacks: list[Any],
) -> Any:
    """Fit (or, when its folder holds one, restore and finish) one phase's Tune experiment."""
    from ray import tune

    from fpzo_ray.signing import sign_tune_state
    from fpzo_ray.sim.ray.federation import bundles
    from fpzo_ray.sweep.study.scheduler import PerCellASHA
    from fpzo_ray.sweep.trial import federated_trial
    from fpzo_ray.sweep.tune_signer import TuneStateSigner

    # Every trial reserves what its own configuration asks for; trials whose simulation.*
    # fields differ would need different requests, which Tune's single resource request
    # cannot express, so the largest request is used.
    configs = [config_from_dict(p.run) for p in plans]
    largest = max(
        configs,
        key=lambda c: tuple(sum(b.get(r, 0.0) for b in bundles(c)) for r in ("CPU", "GPU")),
    )
    strategy = "SPREAD" if largest.simulation.placement == "spread" else "PACK"
    trainable = tune.with_resources(
        federated_trial, tune.PlacementGroupFactory(bundles(largest), strategy=strategy)
    )
    # a local path as before; anything else through the filesystem the storage resolved
    filesystem = {} if experiment.is_local else {"storage_filesystem": experiment.filesystem}
    state = experiment.child(phase)
    if tune.Tuner.can_restore(experiment.path_of(phase), **filesystem):
        tuner = tune.Tuner.restore(
            experiment.path_of(phase),
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            **filesystem,
        )
        # Tune restores the callbacks the interrupted session pickled (its process identity,
        # clock and give-up timer): this session's own replace them. The MLflow callback
        # finds each trial's run again by its trial-id tag.
        internal = tuner._local_tuner
        assert internal is not None  # None only under Ray Client, which sweeps do not use
        internal._run_config.callbacks = [*callbacks, TuneStateSigner(state)]
    else:
        search = spec.search if phase == "search" else None
        scheduler = None
        if search is not None and search.scheduler is not None:
            scheduler = PerCellASHA(
                search.metric,
                search.mode,
                search.scheduler.grace_period,
                search.scheduler.reduction_factor,
            )
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([p.as_dict() for p in plans])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=spec.max_concurrent_trials,
                scheduler=scheduler,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=phase,
                storage_path=experiment.root,
                verbose=0,
                callbacks=[*callbacks, TuneStateSigner(state)],
                # two, so that a corrupt newest one has a fallback
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                # a trial whose node, process or actors were lost restarts from its last
                # checkpoint on the nodes left (sweep.callbacks.TrialMirror.on_trial_recover)
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                **filesystem,
            ),
        )
    try:
        return tuner.fit()
    finally:
        sign_tune_state(state)  # as Tune left it, whatever ended the phase


def _trial_state(
    result: Any, history: pd.DataFrame | None, planned: int, seen: tuple[int, bool] | None
) -> str:
    """What became of a trial: OK (it reported every round and Tune ended it), STOPPED (by the
    scheduler), ERROR, INTERRUPTED (it started, then the sweep stopped) or NOT_STARTED.
    ``seen``: what the MLflow callback saw of it in this session (the rounds it logged,
    whether Tune ended it), None when it did not start here."""
    from fpzo_ray.artifacts import STOPPED_MARKER

    if result is not None and result.error:
        return "ERROR"
    logged, ended = seen if seen is not None else (0, True)
    done = logged
    if history is not None and not history.empty and "round" in history:
        done = max(done, int(history["round"].max()))
    if done >= planned and ended:
        return "OK"
    if result is not None and result.path and _result_folder(result).exists(STOPPED_MARKER):
        return "STOPPED"
    return "INTERRUPTED" if done > 0 or seen is not None else "NOT_STARTED"


def _plan_of(result: Any) -> dict[str, Any] | None:
    """A result's trial plan: from its config, or (a trial Tune had not started when the
    experiment stopped comes back without one) from the ``params.json`` in its folder."""
    if result.config:
        return result.config["trial"]
    if result.path and _result_folder(result).exists("params.json"):
        return json.loads(_result_folder(result).read_text("params.json"))["trial"]
    return None


def _result_folder(result: Any) -> Storage:
    """A Tune result's trial folder, in the sweep's storage."""
    return folder_on(result.filesystem, result.path)


def _figures(
    result_grid: Any,
    plans: list[TrialPlan],
    spec: SweepSpec,
    progress_of: Callable[[dict[str, Any]], tuple[int, bool] | None],
) -> list[TrialFigures]:
    """Each planned trial's figures, in cell order, then by sample and seed; a plan without
    a result (the phase stopped before Tune created or started it) is NOT_STARTED unless
    MLflow saw it start."""
    from fpzo_ray.failure import error_summary
    from fpzo_ray.sweep.callbacks import plan_key

    def figures_of(plan: dict[str, Any], result: Any) -> TrialFigures:
        planned = config_from_dict(plan["run"]).training.rounds
        history = result.metrics_dataframe if result is not None else None
        error = error_summary(str(result.error)) if result is not None and result.error else ""
        seen = progress_of(plan)
        status = _trial_state(result, history, planned, seen)
        figures = trial_figures(plan, planned, history, error, status=status)
        if seen is not None:  # the rounds it reached, as logged
            figures.rounds = max(figures.rounds, seen[0])
        return figures

    out, placed = [], set()
    for result in result_grid:
        plan = _plan_of(result)
        if plan is not None:  # else listed from the plans below
            placed.add(plan_key(plan))
            out.append(figures_of(plan, result))
    out += [figures_of(p, None) for p in (p.as_dict() for p in plans) if plan_key(p) not in placed]
    position = {cell.label: i for i, cell in enumerate(spec.cells())}
    return sorted(out, key=lambda f: (position.get(f.cell, len(position)), f.sample, f.seed))


def _selections(
    spec: SweepSpec, figures: list[TrialFigures], experiment_dir: Path
) -> dict[str, Selection]:
    """Each cell's choice: decided once, when the search phase ends, and kept in
    ``selection.json`` so that a resumed study repeats exactly what was chosen."""
    path = experiment_dir / SELECTION_FILE
    if path.is_file():
        return read_selections(path.read_text())
    assert spec.search is not None
    chosen = select(
        [f for f in figures if f.phase == "search"],
        spec.search.metric,
        spec.search.mode,
        spec.search.scope,
    )
    path.write_text(json.dumps(json_ready({c: s.as_dict() for c, s in chosen.items()}), indent=2))
    return chosen


# -- the whole sweep -----------------------------------------------------------------------
def run_sweep(
    spec: SweepSpec,
    results_dir: Path,
    resume: str | Path | None = None,
    give_up_after_s: float = 1800.0,
    storage: Storage | None = None,
) -> SweepOutcome:
    """Run (or resume) every phase of the sweep; returns the trial and summary tables.

    ``resume``: the experiment folder of an interrupted sweep (a path or a storage URI).
    ``storage``: where a new sweep's experiment persists (default: the sweep file's
    ``storage``, else ``FPZO_STORAGE``, else ``<results_dir>/ray_results``); the driver keeps
    a local copy of its own files (sweep file, tables, report) in
    ``<results_dir>/ray_results/<experiment>`` when that is elsewhere.
    ``give_up_after_s``: how long to wait while no trial can start for want of free
    resources before stopping (resumable) with :class:`ResourceWaitTimeout`; 0 = forever.
    """
    from fpzo_ray.failure import root_cause, stopped_on_error
    from fpzo_ray.signing import sign, verify
    from fpzo_ray.sweep.callbacks import MLflowTrialCallback
    from fpzo_ray.sweep.progress import TrialProgress
    from fpzo_ray.sweep.resources import ResourceWaitTimeout, resource_watch
    from fpzo_ray.tracking import MLflowTracker, tracking_uri_of, ui_command

    results_dir.mkdir(parents=True, exist_ok=True)
    if resume is not None:
        location = open_storage(resume, "--resume")
    else:
        storage = storage or resolve_storage(None, spec.storage, results_dir / "ray_results")
        location = storage.child(f"{spec.name}_{time.strftime('%Y%m%d-%H%M%S')}")
    experiment = location.name
    folder = LocalCopy(location, results_dir / "ray_results" / experiment)
    experiment_dir = folder.path
    if resume is None:
        save_spec(spec, experiment_dir)
        tracking_uri = tracking_uri_of(results_dir, None)
        (experiment_dir / TRACKING_FILE).write_text(tracking_uri)
        sign(experiment_dir, [TRACKING_FILE])
    else:
        folder.pull()
        verify(experiment_dir, [TRACKING_FILE])
        tracking_uri = tracking_uri_of(results_dir, read_text(experiment_dir / TRACKING_FILE))
    init_ray()
    mlflow_experiment = config_from_dict(spec.run_config(spec.cells()[0], {})).tracking.experiment
    tracker = MLflowTracker(tracking_uri, mlflow_experiment, results_dir)
    parent = tracker.find_run(EXPERIMENT_TAG, experiment)
    if parent is not None:
        tracker.reopen(parent)
    else:
        parent = _start_parent(tracker, spec, experiment, experiment_dir)
    folder.push()
    _hide_tunes_own_resume_hint()
    # With checkpoints every few rounds Tune snapshots its experiment state every two of them
    # (so that it never points at a deleted one) and warns each time: bench checkpoint
    # measures what it costs; the warning says nothing a user can act on.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = time.time()
    print(
        f"Sweep {spec.name!r} ({spec.kind}: {' then '.join(spec.phases)}), "
        f"{spec.cell_count} cells, at most {spec.max_concurrent_trials} trials at a time; "
        f"experiment folder {location.location}; MLflow store {tracking_uri}",
        flush=True,
    )
    figures: list[TrialFigures] = []
    selections: dict[str, Selection] = {}
    try:
        for phase in spec.phases:
            if phase == "repeat":
                plans = spec.repeat_plans(
                    {c: (s.sample, s.hyperparameters) for c, s in selections.items()}
                )
            else:
                plans = spec.first_phase_plans()
            plans = _pin_workers(plans, spec.max_concurrent_trials)
            print(f"Phase {phase!r}: {len(plans)} trials", flush=True)
            mirror = MLflowTrialCallback(tracker, spec.name, parent)
            callbacks = [
                mirror,
                TrialProgress(
                    started, phase, plans, lambda line: tracker.set_tags(parent, {"progress": line})
                ),
                resource_watch(give_up_after_s),
            ]
            results = _run_phase(phase, plans, spec, location, callbacks)
            figures += _figures(results, plans, spec, mirror.progress_of)
            if any(f.status in UNFINISHED for f in figures):  # Tune took the stop signal
                now_stopping()
                _add_wall_time(experiment_dir, time.time() - started)
                folder.push()
                return _interrupted(tracker, parent, spec, folder, figures, selections)
            if phase == "search":
                selections = _selections(spec, figures, experiment_dir)
                folder.push(SELECTION_FILE)
        trials = trial_table(figures, spec)
        summary = summary_table(spec, selections, figures)
        _record(tracker, parent, experiment_dir, trials, summary)
        wall_s = _add_wall_time(experiment_dir, time.time() - started)
        tracker.log_metrics(parent, {"sweep_wall_s": wall_s}, 0)
        record = SweepRecord(
            spec,
            figures,
            selections,
            read_json(experiment_dir / ENVIRONMENT_FILE),
            wall_s,
            experiment,
            parent,
        )
        report = _report(record, experiment_dir, tracking_uri)
        folder.push()
    except (KeyboardInterrupt, ResourceWaitTimeout) as exc:  # resumable stops
        now_stopping()
        _add_wall_time(experiment_dir, time.time() - started)
        folder.push()
        tracker.end_open_runs("KILLED", str(exc) or "interrupted")
        if isinstance(exc, ResourceWaitTimeout):
            raise ResourceWaitTimeout(
                f"{exc}\nResume with:\n  {_resume_command(location.location)}"
            ) from None
        print(
            f"\nInterrupted. Resume with:\n  {_resume_command(location.location)}",
            file=sys.stderr,
        )
        raise
    except Exception as exc:
        tracker.end_open_runs("FAILED", root_cause(exc))
        raise stopped_on_error(exc, experiment_dir, _resume_command(location.location)) from exc
    tracker.set_tags(parent, {"progress": f"ended: {_status_counts(figures)}"})
    tracker.end_run(parent)
    print(f"\nSweep {spec.name!r}: {len(trials)} trials in {time.time() - started:.0f} s")
    print(trials.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if spec.kind != "grid":
        print(f"\nSummary per cell ({spec.kind}; every column in summary.csv):")
        print(summary_view(summary).to_string(index=False))
    print(f"\nTables: {experiment_dir / 'trials.csv'}, {experiment_dir / 'summary.csv'}")
    if report is not None:
        print(f"Report: {report}")
    print(f"MLflow store: {tracking_uri} (experiment {mlflow_experiment!r}, parent run {parent})")
    print(f"Open the MLflow UI:  {ui_command(tracking_uri, tracker.experiment_id)}")
    return SweepOutcome(
        experiment_dir, parent, trials, summary, selections, figures, False, location.location
    )


UNFINISHED = ("INTERRUPTED", "NOT_STARTED")


def _status_counts(figures: list[TrialFigures]) -> str:
    """``8 trials: 6 OK, 2 STOPPED``: what the parent run's progress tag ends with."""
    counts: dict[str, int] = {}
    for f in figures:
        counts[f.status] = counts.get(f.status, 0) + 1
    return f"{len(figures)} trials: " + ", ".join(f"{n} {status}" for status, n in counts.items())


def _interrupted(
    tracker: Any,
    parent: str,
    spec: SweepSpec,
    folder: LocalCopy,
    figures: list[TrialFigures],
    selections: dict[str, Selection],
) -> SweepOutcome:
    """A phase ended with trials that did not run every round: never a success. Every trial
    is listed with its true state, open runs end KILLED, and the way to go on is printed."""
    trials = trial_table(figures, spec)
    tracker.set_tags(parent, {"progress": f"interrupted: {_status_counts(figures)}"})
    tracker.end_open_runs("KILLED", "the sweep was interrupted; continue it with --resume")
    outcome = SweepOutcome(
        folder.path,
        parent,
        trials,
        pd.DataFrame(),
        selections,
        figures,
        interrupted=True,
        experiment_location=folder.storage.location,
    )
    states = {
        s: sum(f.status == s for f in figures)
        for s in ("OK", "STOPPED", "ERROR", "INTERRUPTED", "NOT_STARTED")
    }
    print(
        f"\nSweep {spec.name!r} INTERRUPTED: "
        + ", ".join(f"{n} {s.lower().replace('_', ' ')}" for s, n in states.items() if n),
        flush=True,
    )
    print(
        trials[
            [c for c in trials.columns if c not in ("kept_fraction", "upload_kib", "download_kib")]
        ].to_string(index=False, float_format=lambda v: f"{v:.4g}")
    )
    print(
        f"\nNothing is lost: finished trials are kept, interrupted ones continue from their "
        f"last checkpoint. Resume with:\n  {outcome.resume_command}",
        flush=True,
    )
    return outcome


def _hide_tunes_own_resume_hint() -> None:
    """Tune ends an interrupted experiment with "Resume experiment with: Tuner.restore(...)";
    a sweep is resumed with ``--resume``, which the sweep prints itself."""
    import logging

    class Hint(logging.Filter):
        """Drops Tune's own resume hint (the sweep prints its ``--resume`` command)."""

        def filter(self, record: logging.LogRecord) -> bool:
            text = record.getMessage()
            return "Tuner.restore(" not in text and "Trials did not complete" not in text

    logger = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, Hint) for f in logger.filters):
        logger.addFilter(Hint())


def parent_params(spec: SweepSpec) -> dict[str, Any]:
    """The parent run's parameters: the sweep's settings (``sweep.*``) and the resolved
    configuration its trials share, every field with defaults included; a field that differs
    between trials (a grid axis, a searched field, a study's seed) reads ``varies: ...``."""
    from fpzo_ray.config import flatten, params_of

    def resolved(overrides: dict[str, Any]) -> dict[str, Any]:
        return flatten(params_of(config_from_dict(merge(spec.base, overrides))))

    cells = spec.cells()
    params = resolved(cells[0].overrides)
    varied: dict[str, list[str]] = {}
    for axis in spec.axes:
        # each value in the first cell that holds it: on the base alone, a value may not
        # resolve (a model.target for another axis's data.target)
        seen = [
            resolved(next(c for c in cells if c.coordinates[axis.column] == value.value).overrides)
            for value in axis.values
        ]
        # keys may differ between values: a component's ``args`` flatten to their own keys
        for key in dict.fromkeys(k for s in seen for k in s):
            values = list(dict.fromkeys(str(s.get(key, "(not set)")) for s in seen))
            if len(values) > 1:
                varied.setdefault(key, []).extend(values)
    spaces = [spec.search.space if spec.search else None]
    spaces += [v.space for a in spec.axes for v in a.values]
    for space in filter(None, spaces):
        for key in space.keys:
            varied.setdefault(key, []).append("searched")
    if spec.study is not None:
        varied.setdefault("seed", []).append("a study's repeat seeds")
    for key, values in varied.items():
        params[key] = "varies: " + ", ".join(dict.fromkeys(values))
    params.update(
        {
            f"sweep.{k}": v
            for k, v in {
                "name": spec.name,
                "kind": spec.kind,
                "phases": ",".join(spec.phases),
                "cells": spec.cell_count,
                "trials": spec.trial_count,
                "max_concurrent_trials": spec.max_concurrent_trials,
            }.items()
        }
    )
    return params


def _start_parent(tracker: Any, spec: SweepSpec, experiment: str, experiment_dir: Path) -> str:
    """The sweep's parent run: the resolved shared configuration as parameters, the sweep
    file, its search space and the software it runs on as artifacts."""
    import yaml

    from fpzo_ray.report.environment import environment
    from fpzo_ray.report.sources import SPEC_ARTIFACT

    parent = tracker.start_run(
        experiment,
        parent_params(spec),
        tags={EXPERIMENT_TAG: experiment, "sweep": spec.name, "kind": spec.kind},
    )
    tracker.log_text(parent, yaml.safe_dump(spec.raw, sort_keys=False), SPEC_ARTIFACT)
    recorded = json.dumps(environment(), indent=2)
    (experiment_dir / ENVIRONMENT_FILE).write_text(recorded)
    tracker.log_text(parent, recorded, ENVIRONMENT_FILE)
    (experiment_dir / PARENT_RUN_FILE).write_text(parent)
    tracker.log_text(
        parent,
        json.dumps(json_ready(spec.search_space_description()), indent=2),
        "search_space.json",
    )
    return parent


def _add_wall_time(experiment_dir: Path, seconds: float) -> float:
    """Add a session's elapsed time to the sweep's (``timing.json``); returns the total over
    every session so far (a resumed sweep adds up)."""
    path = experiment_dir / TIMING_FILE
    saved = json.loads(path.read_text()) if path.is_file() else {}
    total = float(saved.get("wall_s", 0.0)) + seconds
    path.write_text(json.dumps({"wall_s": total, "sessions": int(saved.get("sessions", 0)) + 1}))
    return total


def _report(record: SweepRecord, experiment_dir: Path, tracking_uri: str) -> Path | None:
    """The sweep's report (``python -m fpzo_ray.report``) in ``<experiment>/report``, logged
    to the parent run. A report that cannot be made is a warning: the sweep's results are
    kept, and the command to try again is printed."""
    from fpzo_ray.failure import root_cause
    from fpzo_ray.report.document import write_report
    from fpzo_ray.report.publish import log_report

    try:
        files = write_report(record, experiment_dir / "report")
        log_report(tracking_uri, record.parent_run_id or "", files)
        return files.html
    except Exception as exc:  # noqa: BLE001 - a report must not lose a finished sweep
        print(
            f"warning: the report could not be made ({root_cause(exc)}); try again with\n"
            f"  {sys.executable} -m fpzo_ray.report {experiment_dir}",
            file=sys.stderr,
        )
        return None


def _record(
    tracker: Any, parent: str, experiment_dir: Path, trials: pd.DataFrame, summary: pd.DataFrame
) -> None:
    """The tables beside the experiments, and on the parent run."""
    trials.to_csv(experiment_dir / "trials.csv", index=False)
    summary.to_csv(experiment_dir / "summary.csv", index=False)
    (experiment_dir / "summary.json").write_text(
        json.dumps(json_ready(summary.to_dict(orient="records")), indent=2)
    )
    for name in ("trials.csv", "summary.csv", "summary.json", SELECTION_FILE):
        if (experiment_dir / name).is_file():
            tracker.log_artifact(parent, experiment_dir / name)
