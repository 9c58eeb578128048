"""What a report is made of, read from where a sweep left it: its experiment folder, or an
MLflow tracking server (any URI MLflow takes: ``http://host:5000``, ``sqlite:///...``).

Both sources give the same :class:`SweepRecord`: the sweep's spec, every trial's figures
(``study.summary.TrialFigures``, built from the same per-round history by the same code),
the search's choices, the software the sweep ran on and its wall time. In the folder these
are ``fpzo_sweep.yaml``, each trial's ``params.json`` and ``result.json`` (written by Tune),
``selection.json``, ``environment.json``, ``timing.json`` and ``mlflow_parent_run_id``;
in MLflow they are the parent run's artifacts and the child runs' tags, parameters and
metric histories.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fpzo_ray.artifacts import (
    ENVIRONMENT_FILE,
    PARENT_RUN_FILE,
    SELECTION_FILE,
    SPEC_FILE,
    STOPPED_MARKER,
    TIMING_FILE,
)
from fpzo_ray.config import ConfigError, config_from_dict
from fpzo_ray.sweep.spec import SweepSpec, TrialPlan, load_saved_spec, parse_sweep
from fpzo_ray.sweep.study.summary import Selection, TrialFigures, trial_figures
from fpzo_ray.sweep.study.tables import final_trials, summary_table, trial_table

#: The parent run's artifact holding the sweep file (with ``--set`` applied).
SPEC_ARTIFACT = "sweep.yaml"
#: Tag of a child run: its trial plan without the run configuration (JSON).
PLAN_TAG = "fpzo_plan"
#: Tag of a parent run: its experiment folder's name.
EXPERIMENT_TAG = "fpzo_experiment"
#: Per-round metrics a sweep report reads from each trial.
TRIAL_HISTORY_KEYS = (
    "test_accuracy",
    "val_accuracy",
    "test_loss",
    "val_loss",
    "cumulative_client_flops",
    "cumulative_upload_bytes",
    "cumulative_download_bytes",
    "max_client_peak_memory_bytes",
    "max_client_sparse_memory_bytes",
    "time_total_s",
)
#: ``setup`` entries (the pruning summary) the figures read.
SETUP_KEYS = ("kept_fraction", "pruning_client_flops", "num_trained")


class SourceError(ConfigError):
    """A report source that cannot be read: one line naming it."""


@dataclass
class SweepRecord:
    """A finished (or partly finished) sweep, as its report shows it."""

    spec: SweepSpec
    figures: list[TrialFigures]  # every trial of every phase, in cell order
    selections: dict[str, Selection] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)  # of the machine that ran it
    wall_s: float = math.nan  # the sweep's elapsed time, over all its sessions
    experiment: str = ""  # the experiment folder's name
    parent_run_id: str | None = None

    @cached_property
    def summary(self) -> pd.DataFrame:
        return summary_table(self.spec, self.selections, self.figures)

    @cached_property
    def trials(self) -> pd.DataFrame:
        return trial_table(self.figures, self.spec)

    @property
    def trials_by_cell(self) -> dict[str, list[TrialFigures]]:
        return final_trials(self.spec, self.selections, self.figures)


def read_selections(text: str) -> dict[str, Selection]:
    saved = json.loads(text)
    return {
        c: Selection(
            c,
            s["sample"],
            s["hyperparameters"],
            s["value"] if s["value"] is not None else math.nan,
            s["candidates"],
        )
        for c, s in saved.items()
    }


def planned_trials(spec: SweepSpec, selections: Mapping[str, Selection]) -> list[TrialPlan]:
    """Every trial the sweep plans: its first phase, then (a study) the repeats."""
    plans = spec.first_phase_plans()
    if spec.study is not None:
        plans += spec.repeat_plans(
            {c: (s.sample, s.hyperparameters) for c, s in selections.items()}
        )
    return plans


def _plan_key(plan: Mapping[str, Any]) -> tuple:
    return plan["cell"], plan["phase"], int(plan["sample"]), int(plan["seed"])


def in_cell_order(spec: SweepSpec, figures: Iterable[TrialFigures]) -> list[TrialFigures]:
    position = {cell.label: i for i, cell in enumerate(spec.cells())}
    phases = {phase: i for i, phase in enumerate(spec.phases)}
    return sorted(
        figures,
        key=lambda f: (
            phases.get(f.phase, 0),
            position.get(f.cell, len(position)),
            f.sample,
            f.seed,
        ),
    )


def _with_not_started(
    spec: SweepSpec, selections: Mapping[str, Selection], found: list[TrialFigures]
) -> list[TrialFigures]:
    seen = {(f.cell, f.phase, f.sample, f.seed) for f in found}
    missing = [
        trial_figures(
            p.as_dict(), config_from_dict(p.run).training.rounds, None, status="NOT_STARTED"
        )
        for p in planned_trials(spec, selections)
        if _plan_key(p.as_dict()) not in seen
    ]
    return in_cell_order(spec, [*found, *missing])


def trial_status(rounds_done: int, planned: int, error: str, stopped_early: bool) -> str:
    """OK, STOPPED (by a scheduler), ERROR, INTERRUPTED or NOT_STARTED (``sweep._trial_state``
    says the same of a live trial)."""
    if error:
        return "ERROR"
    if rounds_done >= planned:
        return "OK"
    if stopped_early:
        return "STOPPED"
    return "INTERRUPTED" if rounds_done > 0 else "NOT_STARTED"


# -- an experiment folder ------------------------------------------------------------------
def _read_history(path: Path) -> pd.DataFrame:
    """A trial's ``result.json`` (one JSON object per reported round) as Tune's
    ``metrics_dataframe`` has it: nested keys joined by ``/``."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return pd.json_normalize(rows, sep="/") if rows else pd.DataFrame()


def record_from_folder(folder: str | Path) -> SweepRecord:
    """The record of the sweep whose experiment folder is ``folder``."""
    from fpzo_ray.failure import error_summary

    folder = Path(folder).resolve()
    if not (folder / SPEC_FILE).is_file():
        raise SourceError(
            f"config error: SOURCE: {folder} is not a sweep's experiment folder (no {SPEC_FILE})"
        )
    spec = load_saved_spec(folder, "SOURCE")
    selections = {}
    if (folder / SELECTION_FILE).is_file():
        selections = read_selections((folder / SELECTION_FILE).read_text())
    found = []
    for phase in spec.phases:
        for trial in sorted((folder / phase).glob("*/params.json")):
            plan = json.loads(trial.read_text())["trial"]
            planned = config_from_dict(plan["run"]).training.rounds
            results = trial.parent / "result.json"
            history = _read_history(results) if results.is_file() else pd.DataFrame()
            errors = sorted(trial.parent.glob("error*.txt"))
            error = error_summary(errors[-1].read_text()) if errors else ""
            done = int(history["round"].max()) if "round" in history and len(history) else 0
            status = trial_status(done, planned, error, (trial.parent / STOPPED_MARKER).is_file())
            found.append(trial_figures(plan, planned, history, error, status))
    return SweepRecord(
        spec,
        _with_not_started(spec, selections, found),
        selections,
        read_json(folder / ENVIRONMENT_FILE),
        float(read_json(folder / TIMING_FILE).get("wall_s", math.nan)),
        folder.name,
        _parent_run_id(folder),
    )


#: URI schemes of storage (``fpzo_ray.storage``), not of MLflow tracking stores.
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def fetch_experiment(location: str, into: Path) -> Path:
    """The experiment folder at ``location`` (a storage URI) as a local folder under
    ``into``, holding what a report reads (the sweep's own files; each trial's plan, results,
    error and stop marker), not the checkpoints."""
    from fpzo_ray.storage import LocalCopy, open_storage

    storage = open_storage(location, "SOURCE")
    if not storage.exists(SPEC_FILE):
        raise SourceError(f"config error: SOURCE: {location} is not a sweep's experiment folder")
    local = into / storage.name
    LocalCopy(storage, local).pull()
    for phase in ("grid", "search", "repeat"):
        for trial in storage.child(phase).listdir():
            folder = storage.child(phase, trial)
            wanted = ("params.json", "result.json", STOPPED_MARKER, "error.txt")
            folder.download(local / phase / trial, [n for n in folder.listdir() if n in wanted])
    return local


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def read_text(path: Path) -> str | None:
    """The stripped text of ``path``, or None when there is no such file."""
    return path.read_text().strip() if path.is_file() else None


def _parent_run_id(folder: Path) -> str | None:
    path = folder / PARENT_RUN_FILE
    return path.read_text().strip() if path.is_file() else None


# -- an MLflow tracking server -------------------------------------------------------------
def run_history(client: Any, run_id: str, keys: Iterable[str]) -> pd.DataFrame:
    """One row per logged round (the metric step), a column per key in ``keys`` that the
    run logged (NaN at rounds where it was not)."""
    columns = {}
    for key in keys:
        points = client.get_metric_history(run_id, key)
        if points:
            columns[key] = pd.Series({m.step: m.value for m in points}, dtype=float)
    if not columns:
        return pd.DataFrame(columns=["round"])
    table = pd.DataFrame(columns).sort_index()
    return table.rename_axis("round").reset_index()


def run_setup(params: Mapping[str, str]) -> dict[str, Any]:
    """The pruning summary (``setup``) from a run's ``setup.*`` parameters."""
    setup: dict[str, Any] = {}
    densities = {}
    for key, value in params.items():
        if key.startswith("setup.layer_density."):
            densities[key.removeprefix("setup.layer_density.")] = float(value)
        elif key.startswith("setup."):
            setup[key.removeprefix("setup.")] = yaml.safe_load(value)
    if densities:
        setup["layer_density"] = densities
    return setup


def _download_text(client: Any, run_id: str, path: str) -> str | None:
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as local:
            return Path(client.download_artifacts(run_id, path, local)).read_text()
    except Exception:  # noqa: BLE001 - an absent artifact raises a store-specific error
        return None


def find_parent_run(client: Any, run_id: str | None, experiment: str | None) -> Any:
    """The sweep's parent run: ``run_id``, or the newest parent run of ``experiment``."""
    from mlflow.exceptions import MlflowException

    if run_id:
        try:
            return client.get_run(run_id)
        except MlflowException:
            raise SourceError(f"config error: --run-id: no run {run_id!r} in this store") from None
    found = client.get_experiment_by_name(experiment or "")
    if found is None:
        raise SourceError(f"config error: --experiment: no MLflow experiment {experiment!r}")
    runs = client.search_runs(
        [found.experiment_id],
        f"tags.{EXPERIMENT_TAG} != ''",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise SourceError(
            f"config error: --experiment: {experiment!r} holds no sweep (no run "
            f"tagged {EXPERIMENT_TAG})"
        )
    return runs[0]


def _child_figures(client: Any, run: Any) -> TrialFigures:
    tags, params = run.data.tags, run.data.params
    plan = json.loads(tags[PLAN_TAG])
    planned = int(params["training.rounds"])
    # the task's own metrics (``task.metrics``) besides the ones every run reports
    own = [k for k in run.data.metrics if k.startswith(("val_", "test_"))]
    keys = (*TRIAL_HISTORY_KEYS, *sorted(set(own) - set(TRIAL_HISTORY_KEYS)))
    history = run_history(client, run.info.run_id, keys)
    setup = run_setup(params)
    for key in SETUP_KEYS:
        if key in setup and len(history):
            history.loc[history.index[0], f"setup/{key}"] = setup[key]
    error = tags.get("error", "") if run.info.status == "FAILED" else ""
    done = int(history["round"].max()) if len(history) else 0
    status = trial_status(done, planned, error, "stopped_early" in tags)
    return trial_figures(plan, planned, history, error, status)


def record_from_mlflow(
    tracking_uri: str, run_id: str | None = None, experiment: str | None = None
) -> SweepRecord:
    """The record of the sweep whose parent run is ``run_id`` (or the newest sweep of the
    MLflow ``experiment``) in the store at ``tracking_uri``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    parent = find_parent_run(client, run_id, experiment)
    parent_id = parent.info.run_id
    raw = _download_text(client, parent_id, SPEC_ARTIFACT)
    if raw is None:
        raise SourceError(
            f"config error: --run-id: run {parent_id} is not a sweep's parent run "
            f"(no {SPEC_ARTIFACT} artifact)"
        )
    spec = parse_sweep(yaml.safe_load(raw))
    selections = {}
    saved = _download_text(client, parent_id, SELECTION_FILE)
    if saved is not None:
        selections = read_selections(saved)
    children, token = [], None
    while True:
        page = client.search_runs(
            [parent.info.experiment_id],
            f"tags.mlflow.parentRunId = '{parent_id}'",
            run_view_type=3,
            max_results=1000,
            page_token=token,
        )
        children += [_child_figures(client, run) for run in page if PLAN_TAG in run.data.tags]
        token = page.token
        if not token:
            break
    environment = _download_text(client, parent_id, ENVIRONMENT_FILE)
    wall = parent.data.metrics.get("sweep_wall_s", math.nan)
    return SweepRecord(
        spec,
        _with_not_started(spec, selections, children),
        selections,
        json.loads(environment) if environment else {},
        float(wall),
        parent.data.tags.get(EXPERIMENT_TAG, ""),
        parent_id,
    )
