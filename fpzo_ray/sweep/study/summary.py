"""From trial histories to answers: per-trial figures, the per-cell choice of hyperparameters,
and the per-cell summary of a study (plain pandas; no Ray).

Selection reads only the metric it is given, which the sweep file restricts to validation
metrics (``val_accuracy``, ``val_loss``): test metrics are reported, never optimised.

Client FLOPs here are everything the clients computed: the training rounds'
``cumulative_client_flops`` plus the pruning phase's client FLOPs (``setup``), so a pruned
method pays for its mask.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fpzo_ray.sweep.study.statistics import (
    Estimate,
    first_reaching,
    paired_difference,
    t_interval,
    value_at_budget,
)

#: Default accuracy-at-budget points, as fractions of the cheapest cell's mean client FLOPs.
DEFAULT_BUDGET_FRACTIONS = (0.25, 0.5, 1.0)


@dataclass
class TrialFigures:
    """What one finished (or stopped, or failed) trial contributes to selection and summary."""

    cell: str
    phase: str
    sample: int
    seed: int
    hyperparameters: dict[str, Any]
    planned_rounds: int
    status: str  # OK, STOPPED (early, by the scheduler), ERROR, INTERRUPTED, NOT_STARTED
    error: str = ""
    rounds: int = 0
    # One entry per evaluation: round, client FLOPs so far, and the metrics evaluated.
    evaluations: pd.DataFrame = field(default_factory=pd.DataFrame)
    client_flops: float = math.nan
    upload_bytes: float = math.nan
    download_bytes: float = math.nan
    peak_memory_bytes: float = math.nan
    sparse_memory_bytes: float = math.nan
    kept_fraction: float = math.nan
    wall_s: float = math.nan

    def final(self, metric: str) -> float:
        """The metric at the last evaluation (NaN if never evaluated)."""
        if metric not in self.evaluations or self.evaluations.empty:
            return math.nan
        values = self.evaluations[metric].dropna()
        return float(values.iloc[-1]) if len(values) else math.nan

    def at_round(self, metric: str, round_index: int) -> float:
        """The metric at the last evaluation at or before ``round_index`` (NaN if none)."""
        if metric not in self.evaluations or self.evaluations.empty:
            return math.nan
        e = self.evaluations
        values = e.loc[e["round"] <= round_index, metric].dropna()
        return float(values.iloc[-1]) if len(values) else math.nan

    def score(self, metric: str, mode: str, scope: str) -> float:
        """The selection value: the metric at the last evaluation, or its best over them."""
        if scope == "last":
            return self.final(metric)
        if metric not in self.evaluations or self.evaluations[metric].dropna().empty:
            return math.nan
        values = self.evaluations[metric].dropna()
        return float(values.max() if mode == "max" else values.min())


def _last(history: pd.DataFrame, column: str) -> float:
    if column not in history:
        return math.nan
    values = history[column].dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


def trial_figures(
    plan: dict[str, Any],
    planned_rounds: int,
    history: pd.DataFrame | None,
    error: str = "",
    status: str | None = None,
) -> TrialFigures:
    """Figures of one trial from its plan (``sweep.spec.TrialPlan`` as a dict) and the
    per-round results it reported (one row per round; nested keys joined by ``/``).

    ``status`` as the sweep knows it (OK, STOPPED, ERROR, INTERRUPTED, NOT_STARTED); without
    it: ERROR with an error, else OK when every planned round ran, else STOPPED.
    """
    figures = TrialFigures(
        plan["cell"],
        plan["phase"],
        int(plan["sample"]),
        int(plan["seed"]),
        dict(plan.get("hyperparameters") or {}),
        planned_rounds,
        status or "ERROR",
        error,
    )
    if history is None or history.empty or "round" not in history:
        return figures
    history = history.sort_values("round").drop_duplicates("round", keep="last")
    pruning_flops = _last(history, "setup/pruning_client_flops")
    pruning_flops = 0.0 if math.isnan(pruning_flops) else pruning_flops
    flops = history.get("cumulative_client_flops", pd.Series(math.nan, index=history.index))
    # every evaluation reports the test loss (a history from before the task kept its
    # accuracy only); the other metrics are the task's (``task.metrics``)
    marker = next((c for c in ("test_loss", "test_accuracy") if c in history), None)
    evaluated = history[marker].notna() if marker else None
    if evaluated is not None:
        columns = [c for c in history.columns if c.startswith(("val_", "test_"))]
        evaluations = history.loc[evaluated, ["round", *columns]].copy()
        evaluations["client_flops"] = flops[evaluated] + pruning_flops
        figures.evaluations = evaluations.reset_index(drop=True)
    figures.rounds = int(history["round"].max())
    figures.client_flops = _last(history, "cumulative_client_flops") + pruning_flops
    figures.upload_bytes = _last(history, "cumulative_upload_bytes")
    figures.download_bytes = _last(history, "cumulative_download_bytes")
    for attr, column in (
        ("peak_memory_bytes", "max_client_peak_memory_bytes"),
        ("sparse_memory_bytes", "max_client_sparse_memory_bytes"),
    ):
        if column in history:
            setattr(figures, attr, float(history[column].max()))
    figures.kept_fraction = _last(history, "setup/kept_fraction")
    figures.wall_s = _last(history, "time_total_s")
    if status is None and not error:
        figures.status = "OK" if figures.rounds >= planned_rounds else "STOPPED"
    return figures


@dataclass(frozen=True)
class Selection:
    """The hyperparameters a search chose for one cell, and the evidence."""

    cell: str
    sample: int
    hyperparameters: dict[str, Any]
    value: float
    candidates: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "sample": self.sample,
            "hyperparameters": self.hyperparameters,
            "value": self.value,
            "candidates": self.candidates,
        }


def select(
    trials: Iterable[TrialFigures], metric: str, mode: str, scope: str = "last"
) -> dict[str, Selection]:
    """Per cell, the candidate with the best ``metric`` (``mode`` max or min).

    Candidates are the trials that ran their planned rounds; trials stopped early by a
    scheduler compete only if none did. Failed trials and trials without the metric never
    compete. Ties go to the lower sample index, so the choice is a function of the figures.
    """
    by_cell: dict[str, list[TrialFigures]] = {}
    for t in trials:
        by_cell.setdefault(t.cell, []).append(t)
    chosen = {}
    sign = 1.0 if mode == "max" else -1.0
    for cell, group in by_cell.items():
        scored = [(t, t.score(metric, mode, scope)) for t in group if t.status in ("OK", "STOPPED")]
        scored = [(t, v) for t, v in scored if math.isfinite(v)]
        complete = [(t, v) for t, v in scored if t.status == "OK"]
        pool = complete or scored
        if not pool:
            continue
        best, value = max(pool, key=lambda tv: (sign * tv[1], -tv[0].sample))
        chosen[cell] = Selection(cell, best.sample, best.hyperparameters, value, len(group))
    return chosen


def default_budgets(trials_by_cell: dict[str, list[TrialFigures]]) -> list[float]:
    """Budgets at fixed fractions of the smallest client-FLOPs total any repeat reached, so
    that every repeat of every cell can be read at every budget."""
    totals = [
        t.client_flops
        for ts in trials_by_cell.values()
        for t in ts
        if t.status == "OK" and math.isfinite(t.client_flops) and t.client_flops > 0
    ]
    if not totals:
        return []
    return [_three_digits_down(f * min(totals)) for f in DEFAULT_BUDGET_FRACTIONS]


def _three_digits_down(x: float) -> float:
    """``x`` rounded down to three significant digits (a budget that reads well and that
    every trial it was derived from still reaches)."""
    unit = 10.0 ** (math.floor(math.log10(x)) - 2)
    return float(f"{math.floor(x / unit) * unit:.3g}")


def accuracy_at_budget(trial: TrialFigures, budget: float) -> float:
    e = trial.evaluations
    if e.empty or "test_accuracy" not in e:
        return math.nan
    return value_at_budget(list(e["client_flops"]), list(e["test_accuracy"]), budget)


def _estimate_columns(prefix: str, estimate: Estimate) -> dict[str, float]:
    return {
        f"{prefix}_mean": estimate.mean,
        f"{prefix}_std": estimate.std,
        f"{prefix}_ci95": estimate.ci95,
    }


def cell_summary(
    cell: str,
    coordinates: dict[str, Any],
    selection: Selection | None,
    trials: Sequence[TrialFigures],
    planned: int,
    budgets: Sequence[float],
    target_accuracy: float,
    metric: str,
) -> dict[str, Any]:
    """One row of the summary table: what the cell chose and what its repeats measured."""
    ok = [t for t in trials if t.status == "OK"]
    row: dict[str, Any] = {"cell": cell, **coordinates}
    if selection is not None:
        row.update({f"chosen.{k}": v for k, v in selection.hyperparameters.items()})
        row[f"selected_{metric}"] = selection.value
        row["candidates"] = selection.candidates
    row["seeds"] = f"{len(ok)}/{planned}"
    row.update(
        _estimate_columns("test_accuracy", t_interval([t.final("test_accuracy") for t in ok]))
    )
    row["val_accuracy_mean"] = t_interval([t.final("val_accuracy") for t in ok]).mean
    for budget in budgets:
        estimate = t_interval([accuracy_at_budget(t, budget) for t in ok])
        row[f"test_accuracy_at_{budget:.3g}_flops_mean"] = estimate.mean
        row[f"test_accuracy_at_{budget:.3g}_flops_ci95"] = estimate.ci95
    if target_accuracy > 0:
        rounds, flops = [], []
        for t in ok:
            hit = first_reaching(list(t.evaluations.get("test_accuracy", [])), target_accuracy)
            if hit is not None:
                rounds.append(float(t.evaluations["round"].iloc[hit]))
                flops.append(float(t.evaluations["client_flops"].iloc[hit]))
        row["reached_target"] = f"{len(rounds)}/{len(ok)}"
        row["rounds_to_target_mean"] = t_interval(rounds).mean
        row["client_flops_to_target_mean"] = t_interval(flops).mean
    for name in ("client_flops", "upload_bytes", "download_bytes", "kept_fraction", "wall_s"):
        row[f"{name}_mean"] = t_interval([getattr(t, name) for t in ok]).mean
    row["peak_client_memory_bytes"] = max((t.peak_memory_bytes for t in ok), default=math.nan)
    row["peak_client_sparse_memory_bytes"] = max(
        (t.sparse_memory_bytes for t in ok), default=math.nan
    )
    return row


def compare_cells(a: Sequence[TrialFigures], b: Sequence[TrialFigures]) -> dict[str, Any]:
    """``a`` minus ``b`` in final test accuracy, paired by seed: at equal rounds (both cells'
    final evaluation), and at equal client FLOPs (both read at the smallest total any of
    their seeds reached, interpolated between evaluations)."""
    a_ok = [t for t in a if t.status == "OK"]
    b_ok = [t for t in b if t.status == "OK"]
    rounds = paired_difference(
        {t.seed: t.final("test_accuracy") for t in a_ok},
        {t.seed: t.final("test_accuracy") for t in b_ok},
    )
    totals = [t.client_flops for t in (*a_ok, *b_ok) if math.isfinite(t.client_flops)]
    budget = min(totals) if totals else math.nan
    flops = paired_difference(
        {t.seed: accuracy_at_budget(t, budget) for t in a_ok},
        {t.seed: accuracy_at_budget(t, budget) for t in b_ok},
    )
    return {
        "equal_rounds": {
            "mean": rounds.mean,
            "std": rounds.std,
            "ci95": rounds.ci95,
            "n": rounds.n,
        },
        "equal_flops": {
            "mean": flops.mean,
            "std": flops.std,
            "ci95": flops.ci95,
            "n": flops.n,
            "flops_budget": budget,
        },
    }


def json_ready(value: Any) -> Any:
    """NaN/inf become None, numpy scalars plain Python: strict JSON for the summary files."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
