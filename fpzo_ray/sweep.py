"""``python -m fpzo_ray.sweep [SWEEP.yaml]``: a grid, a search or a study of federated runs.

The sweep file (``sweep_spec``) says which cells to run, what to search in each and whether to
repeat each cell's choice on fresh seeds. Every trial configuration is validated before Ray
starts. The phases run one after the other, each as one Ray Tune experiment (trials of all
cells share the cluster, at most ``max_concurrent_trials`` at a time); each trial is one whole
federated run (``trial``) inside a placement group holding its driver, server and workers:

1. ``grid`` or ``search``: every cell's candidates; a search picks each cell's best candidate
   on its validation metric (``selection.json``), optionally stopping weak ones early (ASHA);
2. ``repeat`` (a study): each cell's choice on fresh seeds; the per-cell summary gives means
   and 95 % Student-t intervals.

The driver mirrors everything into MLflow (one parent run per sweep, one child run per trial)
and ends by printing the trial and summary tables (also saved as CSV and JSON beside the
Tune experiments, and logged to the parent run). Locally it starts Ray itself; under
``ray job submit`` it joins the job's cluster.

``--resume FOLDER`` continues an interrupted sweep (its experiment folder, printed at the
start): finished trials are kept, unfinished ones restart from their last checkpoint, a
finished search keeps its choices, and the summary is the one an uninterrupted sweep gives.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from fpzo_ray.config import ConfigError, config_from_dict, merge
from fpzo_ray.preflight import preflight
from fpzo_ray.study.summary import (
    Selection,
    TrialFigures,
    cell_summary,
    default_budgets,
    json_ready,
    select,
    trial_figures,
)
from fpzo_ray.sweep_spec import (
    DEFAULT_SWEEP,
    SELECTION_METRICS,
    SweepSpec,
    TrialPlan,
    find_sweep_file,
    load_saved_spec,
    load_sweep,
    save_spec,
    short_name,
)

__all__ = ["SweepOutcome", "find_sweep_file", "load_sweep", "run_sweep", "main"]
SELECTION_FILE = "selection.json"


@dataclass(frozen=True)
class SweepOutcome:
    experiment_dir: Path
    parent_run_id: str
    trials: pd.DataFrame  # one row per trial, every phase
    summary: pd.DataFrame  # one row per cell
    selections: dict[str, Selection]
    figures: list[TrialFigures]


def init_ray() -> None:
    """Join the cluster of ``RAY_ADDRESS`` (set by ``ray job submit``), or start Ray locally."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        ray.init(include_dashboard=False)


# -- one phase: a Tune experiment ----------------------------------------------------------
def _trial_name(trial: Any) -> str:
    plan = trial.config["trial"]
    where = (f"seed{plan['seed']}" if plan["phase"] == "repeat"
             else f"{plan['phase']}{plan['sample']}")
    return f"{plan['cell']}_{where}_{trial.trial_id[-5:]}"


def _progress_printer(started: float) -> Any:
    """A Tune callback printing one line per trial event instead of Tune's status tables."""
    from ray.tune import Callback

    from fpzo_ray.tracking import error_summary, trial_error_text

    class ProgressPrinter(Callback):
        def _say(self, trial: Any, text: str) -> None:
            print(f"[{time.time() - started:6.0f} s] {trial}: {text}", flush=True)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._say(trial, "started")

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            rounds = config_from_dict(trial.config["trial"]["run"]).training.rounds
            r = int(result.get("round", 0))
            if "test_accuracy" in result and (r % max(1, rounds // 4) == 0 or r == rounds):
                val = (f"val accuracy {result['val_accuracy']:.4f}, "
                       if "val_accuracy" in result else "")
                self._say(trial, f"round {r}/{rounds}, {val}test accuracy "
                                 f"{result['test_accuracy']:.4f}")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            rounds = config_from_dict(trial.config["trial"]["run"]).training.rounds
            done = int((trial.last_result or {}).get("round", 0))
            self._say(trial, "finished" if done >= rounds else f"stopped early at round {done}")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._say(trial, "FAILED: " + error_summary(trial_error_text(trial)))

    return ProgressPrinter()


def _pin_workers(plans: list[TrialPlan], concurrent: int) -> list[TrialPlan]:
    """Resolve ``simulation.num_workers: 0`` (auto) once, in the driver, for every trial."""
    from fpzo_ray.sim.federation import resolve_num_workers

    configs = [config_from_dict(p.run) for p in plans]
    if all(c.simulation.num_workers > 0 for c in configs):
        return plans
    count = min(resolve_num_workers(c, concurrent_runs=concurrent) for c in configs)
    return [replace(p, run=merge(p.run, {"simulation": {"num_workers": count}}))
            if c.simulation.num_workers == 0 else p for p, c in zip(plans, configs)]


def _run_phase(phase: str, plans: list[TrialPlan], spec: SweepSpec, experiment_dir: Path,
               callbacks: list[Any]) -> Any:
    """Fit (or, when its folder holds one, restore and finish) one phase's Tune experiment."""
    from ray import tune

    from fpzo_ray.sim.federation import bundles
    from fpzo_ray.study.scheduler import PerCellASHA
    from fpzo_ray.trial import federated_trial

    # Every trial reserves what its own configuration asks for; trials whose simulation.*
    # fields differ would need different requests, which Tune's single resource request
    # cannot express, so the largest request is used.
    configs = [config_from_dict(p.run) for p in plans]
    largest = max(configs, key=lambda c: sum(b["CPU"] for b in bundles(c)))
    strategy = "SPREAD" if largest.simulation.placement == "spread" else "PACK"
    trainable = tune.with_resources(
        federated_trial, tune.PlacementGroupFactory(bundles(largest), strategy=strategy))
    folder = experiment_dir / phase
    if tune.Tuner.can_restore(folder):
        # The run config, callbacks included, is restored from the folder; the MLflow
        # callback finds each trial's run again by its trial-id tag.
        tuner = tune.Tuner.restore(str(folder), trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        search = spec.search if phase == "search" else None
        scheduler = None
        if search is not None and search.scheduler is not None:
            scheduler = PerCellASHA(search.metric, search.mode, search.scheduler.grace_period,
                                    search.scheduler.reduction_factor)
        tuner = tune.Tuner(
            trainable, param_space={"trial": tune.grid_search([p.as_dict() for p in plans])},
            tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent_trials,
                                        scheduler=scheduler, trial_name_creator=_trial_name,
                                        trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(name=phase, storage_path=str(experiment_dir), verbose=0,
                                      callbacks=callbacks))
    return tuner.fit()


def _figures(result_grid: Any, spec: SweepSpec) -> list[TrialFigures]:
    """Each trial's figures, in cell order, then by sample and seed."""
    from fpzo_ray.tracking import error_summary

    out = []
    for result in result_grid:
        plan = result.config["trial"]
        planned = config_from_dict(plan["run"]).training.rounds
        error = error_summary(str(result.error)) if result.error else ""
        out.append(trial_figures(plan, planned, result.metrics_dataframe, error))
    position = {cell.label: i for i, cell in enumerate(spec.cells())}
    return sorted(out, key=lambda f: (position.get(f.cell, len(position)), f.sample, f.seed))


def trial_table(figures: list[TrialFigures], spec: SweepSpec) -> pd.DataFrame:
    """One row per trial: its cell, phase, seed, hyperparameters, status and final figures.

    ``test_accuracy_at_best_val`` is the test accuracy of the round whose validation score
    was best: the "best round" read the only honest way.
    """
    cells = {c.label: c for c in spec.cells()}
    metric = spec.search.metric if spec.search else "val_accuracy"
    mode = SELECTION_METRICS[metric]
    rows = []
    for f in figures:
        row: dict[str, Any] = dict(cells[f.cell].coordinates) if f.cell in cells else {}
        row.update(phase=f.phase, sample=f.sample, seed=f.seed)
        row.update({short_name(k): v for k, v in f.hyperparameters.items()})
        at_best = math.nan
        scores = (f.evaluations[metric].dropna() if metric in f.evaluations
                  else pd.Series(dtype=float))
        if len(scores):
            best = scores.idxmax() if mode == "max" else scores.idxmin()
            at_best = float(f.evaluations.loc[best, "test_accuracy"])
        row.update(status=f.status, rounds=f.rounds, val_accuracy=f.final("val_accuracy"),
                   test_accuracy=f.final("test_accuracy"),
                   **{f"best_{metric}": f.score(metric, mode, "best")},
                   test_accuracy_at_best_val=at_best, kept_fraction=f.kept_fraction,
                   client_gflops=f.client_flops / 1e9, upload_kib=f.upload_bytes / 1024,
                   wall_s=f.wall_s)
        if f.error:
            row["error"] = f.error[:200]
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(spec: SweepSpec, selections: dict[str, Selection],
                  figures: list[TrialFigures]) -> pd.DataFrame:
    """One row per cell: the choice and what it measured (the repeats, in a study; else the
    chosen trial, or the cell's only trial)."""
    final_phase = spec.phases[-1]
    by_cell: dict[str, list[TrialFigures]] = {}
    for f in figures:
        if f.phase != final_phase:
            continue
        if final_phase == "search" and (f.cell not in selections
                                        or f.sample != selections[f.cell].sample):
            continue
        by_cell.setdefault(f.cell, []).append(f)
    study = spec.study
    budgets = list(study.flops_budgets) if study and study.flops_budgets else (
        default_budgets(by_cell) if study else [])
    metric = spec.search.metric if spec.search else "val_accuracy"
    rows = []
    for cell in spec.cells():
        trials = by_cell.get(cell.label, [])
        planned = study.seeds if study else 1
        rows.append(cell_summary(cell.label, cell.coordinates, selections.get(cell.label),
                                 trials, planned, budgets,
                                 study.target_accuracy if study else 0.0, metric))
    return pd.DataFrame(rows)


def summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's headline columns, formatted for a terminal."""

    def pm(row: pd.Series, prefix: str) -> str:
        mean, ci = row.get(f"{prefix}_mean"), row.get(f"{prefix}_ci95")
        if mean is None or not math.isfinite(mean):
            return "-"
        return f"{mean:.4f}" + (f" +- {ci:.4f}" if ci is not None and math.isfinite(ci) else "")

    view = pd.DataFrame(index=summary.index)
    skip = {"cell", "seeds", "candidates", "reached_target"}
    for column in summary.columns:
        if column in skip or column.endswith(("_mean", "_std", "_ci95")) \
                or column.startswith(("peak_", "selected_")):
            continue
        view[short_name(column.removeprefix("chosen."))] = summary[column].map(
            lambda v: f"{v:.4g}" if isinstance(v, float) else v)
    view["seeds"] = summary["seeds"]
    view["test accuracy (95% CI)"] = [pm(row, "test_accuracy") for _, row in summary.iterrows()]
    view["client GFLOPs"] = (summary["client_flops_mean"] / 1e9).map(lambda v: f"{v:.4g}")
    view["upload KiB"] = (summary["upload_bytes_mean"] / 1024).map(lambda v: f"{v:.4g}")
    view["peak client MB"] = (summary["peak_client_memory_bytes"] / 1e6).map(
        lambda v: f"{v:.3g}")
    return view


def _selections(spec: SweepSpec, figures: list[TrialFigures],
                experiment_dir: Path) -> dict[str, Selection]:
    """Each cell's choice: decided once, when the search phase ends, and kept in
    ``selection.json`` so that a resumed study repeats exactly what was chosen."""
    path = experiment_dir / SELECTION_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        return {c: Selection(c, s["sample"], s["hyperparameters"],
                             s["value"] if s["value"] is not None else math.nan, s["candidates"])
                for c, s in saved.items()}
    assert spec.search is not None
    chosen = select([f for f in figures if f.phase == "search"], spec.search.metric,
                    spec.search.mode, spec.search.scope)
    path.write_text(json.dumps(json_ready({c: s.as_dict() for c, s in chosen.items()}),
                               indent=2))
    return chosen


# -- the whole sweep -----------------------------------------------------------------------
def run_sweep(spec: SweepSpec, results_dir: Path, resume: Path | None = None) -> SweepOutcome:
    """Run (or resume) every phase of the sweep; returns the trial and summary tables."""
    from fpzo_ray.tracking import (
        MLflowTracker,
        MLflowTrialCallback,
        resolve_tracking_uri,
        ui_command,
    )

    results_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri = resolve_tracking_uri(results_dir)
    init_ray()
    storage = (results_dir / "ray_results").resolve()
    experiment = resume.name if resume else f"{spec.name}_{time.strftime('%Y%m%d-%H%M%S')}"
    experiment_dir = storage / experiment
    if resume is None:
        save_spec(spec, experiment_dir)
    mlflow_experiment = config_from_dict(spec.run_config(spec.cells()[0], {})).tracking.experiment
    tracker = MLflowTracker(tracking_uri, mlflow_experiment, results_dir)
    parent = tracker.find_run("fpzo_experiment", experiment) or _start_parent(
        tracker, spec, experiment)
    started = time.time()
    print(f"Sweep {spec.name!r} ({spec.kind}: {' then '.join(spec.phases)}), "
          f"{len(spec.cells())} cells, at most {spec.max_concurrent_trials} trials at a time; "
          f"experiment folder {experiment_dir}; MLflow store {tracking_uri}", flush=True)
    try:
        figures: list[TrialFigures] = []
        selections: dict[str, Selection] = {}
        for phase in spec.phases:
            if phase == "repeat":
                plans = spec.repeat_plans({c: (s.sample, s.hyperparameters)
                                           for c, s in selections.items()})
            else:
                plans = spec.first_phase_plans()
            plans = _pin_workers(plans, spec.max_concurrent_trials)
            print(f"Phase {phase!r}: {len(plans)} trials", flush=True)
            callbacks = [MLflowTrialCallback(tracker, spec.name, parent),
                         _progress_printer(started)]
            figures += _figures(_run_phase(phase, plans, spec, experiment_dir, callbacks), spec)
            if phase == "search":
                selections = _selections(spec, figures, experiment_dir)
        trials = trial_table(figures, spec)
        summary = summary_table(spec, selections, figures)
    except BaseException as exc:
        tracker.end_run(parent, failed=True, error=f"{type(exc).__name__}: {exc}")
        raise
    _record(tracker, parent, experiment_dir, trials, summary)
    tracker.end_run(parent)
    print(f"\nSweep {spec.name!r}: {len(trials)} trials in {time.time() - started:.0f} s")
    print(trials.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if spec.kind != "grid":
        print(f"\nSummary per cell ({spec.kind}; every column in summary.csv):")
        print(summary_view(summary).to_string(index=False))
    print(f"\nTables: {experiment_dir / 'trials.csv'}, {experiment_dir / 'summary.csv'}")
    print(f"MLflow store: {tracking_uri} (experiment {mlflow_experiment!r}, parent run {parent})")
    print(f"Open the MLflow UI:  {ui_command(tracking_uri)}")
    return SweepOutcome(experiment_dir, parent, trials, summary, selections, figures)


def _start_parent(tracker: Any, spec: SweepSpec, experiment: str) -> str:
    import yaml

    parent = tracker.start_run(
        experiment, {"sweep": {"name": spec.name, "kind": spec.kind,
                               "phases": ",".join(spec.phases), "cells": len(spec.cells()),
                               "max_concurrent_trials": spec.max_concurrent_trials}},
        tags={"fpzo_experiment": experiment, "sweep": spec.name, "kind": spec.kind})
    tracker.log_text(parent, yaml.safe_dump(spec.raw, sort_keys=False), "sweep.yaml")
    tracker.log_text(parent, json.dumps(json_ready(spec.search_space_description()), indent=2),
                     "search_space.json")
    return parent


def _record(tracker: Any, parent: str, experiment_dir: Path, trials: pd.DataFrame,
            summary: pd.DataFrame) -> None:
    """The tables beside the experiments, and on the parent run."""
    trials.to_csv(experiment_dir / "trials.csv", index=False)
    summary.to_csv(experiment_dir / "summary.csv", index=False)
    (experiment_dir / "summary.json").write_text(json.dumps(
        json_ready(summary.to_dict(orient="records")), indent=2))
    for name in ("trials.csv", "summary.csv", "summary.json", SELECTION_FILE):
        if (experiment_dir / name).is_file():
            tracker.log_artifact(parent, experiment_dir / name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpzo_ray.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", nargs="?", default=DEFAULT_SWEEP, help="sweep YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value for every trial (pins a grid axis or "
                             "search dimension over it), e.g. training.rounds=50; or a "
                             "sweep setting, e.g. study.seeds=5, search.num_samples=8")
    parser.add_argument("--results-dir", default=None,
                        help="where the MLflow store, Tune results and tables go")
    parser.add_argument("--resume", metavar="FOLDER", default=None,
                        help="continue an interrupted sweep: its experiment folder")
    args = parser.parse_args(argv)
    from fpzo_ray.tracking import default_results_dir

    results_dir = Path(args.results_dir) if args.results_dir else default_results_dir()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    resume = Path(args.resume).resolve() if args.resume else None
    try:
        if resume is not None:
            spec = load_saved_spec(resume)
            results_dir = resume.parent.parent  # <results>/ray_results/<experiment>
        else:
            spec = load_sweep(find_sweep_file(args.sweep), args.set)
        preflight(spec.validated_configs())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    outcome = run_sweep(spec, results_dir, resume)
    return 1 if (outcome.trials["status"] == "ERROR").any() else 0


if __name__ == "__main__":
    sys.exit(main())
