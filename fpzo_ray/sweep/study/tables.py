"""The tables a sweep ends with, from its trials' figures (plain pandas; no Ray): one row per
trial (``trial_table``), one row per cell (``summary_table``), and the summary's headline
columns formatted for a terminal (``summary_view``)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from fpzo_ray.sweep.spec import SELECTION_METRICS, SweepSpec, short_name
from fpzo_ray.sweep.study.summary import Selection, TrialFigures, cell_summary, default_budgets


def final_trials(
    spec: SweepSpec, selections: dict[str, Selection], figures: list[TrialFigures]
) -> dict[str, list[TrialFigures]]:
    """Per cell, the trials its summary row measures: the repeats of a study; else the
    search's chosen candidate, or the cell's only trial."""
    final_phase = spec.phases[-1]
    by_cell: dict[str, list[TrialFigures]] = {}
    for f in figures:
        if f.phase != final_phase:
            continue
        if final_phase == "search" and (
            f.cell not in selections or f.sample != selections[f.cell].sample
        ):
            continue
        by_cell.setdefault(f.cell, []).append(f)
    return by_cell


def trial_table(figures: list[TrialFigures], spec: SweepSpec) -> pd.DataFrame:
    """One row per trial: its cell, phase, seed, hyperparameters, status and final figures.

    ``test_accuracy_at_best_val`` is the test accuracy of the round whose validation score
    was best: the "best round" read the only honest way.
    """
    cells = {c.label: c for c in spec.cells()}
    metric = spec.search.metric if spec.search else "val_accuracy"
    mode = spec.search.mode if spec.search else SELECTION_METRICS[metric]
    rows = []
    for f in figures:
        row: dict[str, Any] = dict(cells[f.cell].coordinates) if f.cell in cells else {}
        row.update(phase=f.phase, sample=f.sample, seed=f.seed)
        row.update({short_name(k): v for k, v in f.hyperparameters.items()})
        at_best = math.nan
        scores = (
            f.evaluations[metric].dropna() if metric in f.evaluations else pd.Series(dtype=float)
        )
        if len(scores):
            best = scores.idxmax() if mode == "max" else scores.idxmin()
            at_best = float(f.evaluations.loc[best, "test_accuracy"])
        row.update(
            status=f.status,
            rounds=f.rounds,
            val_accuracy=f.final("val_accuracy"),
            test_accuracy=f.final("test_accuracy"),
            **{f"best_{metric}": f.score(metric, mode, "best")},
            test_accuracy_at_best_val=at_best,
            kept_fraction=f.kept_fraction,
            client_gflops=f.client_flops / 1e9,
            upload_kib=f.upload_bytes / 1024,
            download_kib=f.download_bytes / 1024,
            wall_s=f.wall_s,
        )
        if f.error:
            row["error"] = f.error[:200]
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(
    spec: SweepSpec, selections: dict[str, Selection], figures: list[TrialFigures]
) -> pd.DataFrame:
    """One row per cell: the choice and what it measured (the repeats, in a study; else the
    chosen trial, or the cell's only trial)."""
    by_cell = final_trials(spec, selections, figures)
    study = spec.study
    budgets = (
        list(study.flops_budgets)
        if study and study.flops_budgets
        else (default_budgets(by_cell) if study else [])
    )
    metric = spec.search.metric if spec.search else "val_accuracy"
    rows = []
    for cell in spec.cells():
        trials = by_cell.get(cell.label, [])
        planned = study.seeds if study else 1
        rows.append(
            cell_summary(
                cell.label,
                cell.coordinates,
                selections.get(cell.label),
                trials,
                planned,
                budgets,
                study.target_accuracy if study else 0.0,
                metric,
            )
        )
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
        if (
            column in skip
            or column.endswith(("_mean", "_std", "_ci95"))
            or column.startswith(("peak_", "selected_"))
        ):
            continue
        view[short_name(column.removeprefix("chosen."))] = summary[column].map(
            lambda v: f"{v:.4g}" if isinstance(v, float) else v
        )
    view["seeds"] = summary["seeds"]
    view["test accuracy (95% CI)"] = [pm(row, "test_accuracy") for _, row in summary.iterrows()]
    view["client GFLOPs"] = (summary["client_flops_mean"] / 1e9).map(lambda v: f"{v:.4g}")
    view["upload KiB"] = (summary["upload_bytes_mean"] / 1024).map(lambda v: f"{v:.4g}")
    view["peak client MB"] = (summary["peak_client_memory_bytes"] / 1e6).map(lambda v: f"{v:.3g}")
    return view
