"""The figures of a sweep or study, one point or curve per cell (what the summary measures).

- ``pareto_accuracy_vs_client_flops``: final test accuracy against the clients' total FLOPs
  (pruning included), the 95 % interval over the cell's seeds as error bars, and the Pareto
  front (no other cell is both cheaper and more accurate);
- ``accuracy_vs_round``: test accuracy by round per cell, the mean over its seeds with a
  95 % band;
- ``accuracy_vs_client_flops``: the same against the clients' FLOPs spent by then;
- ``accuracy_vs_upload``: final test accuracy against the bytes the clients uploaded;
- ``heatmap_<a>_x_<b>``: mean final test accuracy over two swept axes (averaged over the
  others), for every pair of axes with two or more values.

Cells are named by method and sparsity (``labels.method_label``) and by the other axes'
values; with more than ``MAX_NAMED_CELLS`` cells, colours and the legend go by method and
sparsity alone, so that a 50-cell sweep keeps a legend one can read.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fpzo_ray.config import config_from_dict
from fpzo_ray.report.labels import method_label
from fpzo_ray.report.plotting import clip_to_fractions, color, marker, new_figure, place_legend
from fpzo_ray.sweep.spec import SweepSpec
from fpzo_ray.sweep.study.statistics import t_interval
from fpzo_ray.sweep.study.summary import TrialFigures

MAX_NAMED_CELLS = 12
MAX_HEATMAPS = 6
#: Axes already said by the method label.
_IN_METHOD_LABEL = ("pruning.sparsity", "pruning.method")


@dataclass(frozen=True)
class CellView:
    """A cell as the figures show it."""

    label: str  # the sweep's cell label
    method: str  # e.g. "NTK-SAP 90 % + ZO"
    caption: str  # the method and the other axes' values
    coordinates: dict[str, Any]


def cell_views(spec: SweepSpec) -> list[CellView]:
    shown = [a.column for a in spec.axes if a.key not in _IN_METHOD_LABEL]
    views = []
    for cell in spec.cells():
        method = method_label(config_from_dict(spec.run_config(cell, {})))
        others = ", ".join(f"{c}={cell.coordinates[c]}" for c in shown)
        views.append(
            CellView(
                cell.label,
                method,
                f"{method}; {others}" if others else method,
                dict(cell.coordinates),
            )
        )
    return views


class _Styles:
    """Colour, marker and legend label of each cell: one per cell when few, else one per
    method (each method's first cell carries the legend entry)."""

    def __init__(self, views: list[CellView]) -> None:
        self.by_cell = len(views) <= MAX_NAMED_CELLS
        keys = [v.caption if self.by_cell else v.method for v in views]
        order = list(dict.fromkeys(keys))
        self._index = {v.label: order.index(k) for v, k in zip(views, keys)}
        self._key = dict(zip((v.label for v in views), keys))
        self._labelled: set[str] = set()

    def color(self, cell: str) -> str:
        return color(self._index[cell])

    def marker(self, cell: str) -> str:
        return marker(self._index[cell])

    def label(self, cell: str) -> str | None:
        key = self._key[cell]
        if key in self._labelled:
            return None
        self._labelled.add(key)
        return key

    @property
    def legend_title(self) -> str:
        return "cell" if self.by_cell else "method (colour; other axes vary within it)"


def _seeds_note(summary: pd.DataFrame) -> str:
    counts = sorted({int(str(s).split("/")[0]) for s in summary.get("seeds", [])})
    if not counts:
        return ""
    if counts == [1]:
        return "one seed per cell: no interval (a smoke test, not a comparison)"
    return f"95 % t-interval over {'/'.join(map(str, counts))} seeds"


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and accuracy (higher), by cost."""
    front: list[tuple[float, float]] = []
    for cost, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or accuracy > front[-1][1]:
            front.append((cost, accuracy))
    return front


def _accuracy_scatter(
    summary: pd.DataFrame,
    views: list[CellView],
    x_column: str,
    x_scale: float,
    xlabel: str,
    title: str,
    front: bool,
) -> Figure:
    figure, ax = new_figure()
    styles = _Styles(views)
    rows = summary.set_index("cell")
    points = []
    for view in views:
        if view.label not in rows.index:
            continue
        row = rows.loc[view.label]
        x, y = row.get(x_column), row.get("test_accuracy_mean")
        if not (_finite(x) and _finite(y)):
            continue
        ci = row.get("test_accuracy_ci95")
        ax.errorbar(
            x / x_scale,
            y,
            yerr=ci if _finite(ci) else None,
            fmt=styles.marker(view.label),
            color=styles.color(view.label),
            capsize=3,
            markersize=7,
            label=styles.label(view.label),
        )
        points.append((x / x_scale, y))
    if front and len(points) > 1:
        line = pareto_front(points)
        ax.step(
            [p[0] for p in line],
            [p[1] for p in line],
            where="post",
            color="black",
            linestyle="--",
            linewidth=1,
            label="Pareto front",
            zorder=0,
        )
    if points and max(p[0] for p in points) > 10 * min(p[0] for p in points):
        ax.set_xscale("log")
    note = _seeds_note(summary)
    ax.set(
        title=title + (f"\n({note})" if note else ""),
        xlabel=xlabel,
        ylabel="final test accuracy (fraction correct)",
    )
    clip_to_fractions(ax)
    ax.grid(alpha=0.3)
    place_legend(ax, styles.legend_title, last="Pareto front")
    return figure


def pareto_accuracy_vs_client_flops(summary: pd.DataFrame, views: list[CellView]) -> Figure:
    return _accuracy_scatter(
        summary,
        views,
        "client_flops_mean",
        1e9,
        "client GFLOPs per run, all clients (pruning phase included)",
        "Final test accuracy against client compute, per cell",
        front=True,
    )


def accuracy_vs_upload(summary: pd.DataFrame, views: list[CellView]) -> Figure:
    return _accuracy_scatter(
        summary,
        views,
        "upload_bytes_mean",
        2**20,
        "bytes uploaded per run, all clients (MiB, pruning included)",
        "Final test accuracy against upload, per cell",
        front=False,
    )


def _accuracy_curves(
    trials_by_cell: dict[str, list[TrialFigures]],
    views: list[CellView],
    by_flops: bool,
) -> Figure:
    """Per cell: the mean test accuracy over its finished seeds at each evaluated round, with
    a 95 % t-interval band where there are two seeds or more; against the round or against
    the clients' FLOPs spent by then (the seeds' mean: the same workload spends the same)."""
    figure, ax = new_figure()
    styles = _Styles(views)
    most_seeds = 0
    for view in views:
        runs = [
            t
            for t in trials_by_cell.get(view.label, [])
            if t.status == "OK" and not t.evaluations.empty
        ]
        if not runs:
            continue
        frames = [t.evaluations.set_index("round") for t in runs]
        table = pd.concat(
            [f["test_accuracy"].rename(i) for i, f in enumerate(frames)], axis=1
        ).sort_index()
        estimates = [t_interval(list(values)) for _, values in table.iterrows()]
        mean = np.array([e.mean for e in estimates])
        half = np.array([e.ci95 for e in estimates])
        x: Any = table.index
        if by_flops:
            spent = pd.concat([f["client_flops"].rename(i) for i, f in enumerate(frames)], axis=1)
            x = spent.reindex(table.index).mean(axis=1).to_numpy() / 1e9
        shade = styles.color(view.label)
        ax.plot(x, mean, color=shade, label=styles.label(view.label), linewidth=1.5)
        if len(runs) > 1:
            ax.fill_between(x, mean - half, mean + half, color=shade, alpha=0.15, linewidth=0)
        most_seeds = max(most_seeds, len(runs))
    band = (
        f"mean over seeds, 95 % band (up to {most_seeds} seeds)"
        if most_seeds > 1
        else "one seed per cell: no band (a smoke test, not a comparison)"
    )
    against = "client compute" if by_flops else "round"
    ax.set(
        title=f"Test accuracy by {against}, per cell\n({band})",
        xlabel="client GFLOPs so far, all clients (pruning phase included)"
        if by_flops
        else "round",
        ylabel="test accuracy (fraction correct)",
    )
    clip_to_fractions(ax)
    ax.grid(alpha=0.3)
    place_legend(ax, styles.legend_title)
    return figure


def accuracy_vs_round(
    trials_by_cell: dict[str, list[TrialFigures]], views: list[CellView]
) -> Figure:
    """Test accuracy by round per cell: the mean over its seeds with a 95 % band."""
    return _accuracy_curves(trials_by_cell, views, by_flops=False)


def accuracy_vs_client_flops(
    trials_by_cell: dict[str, list[TrialFigures]], views: list[CellView]
) -> Figure:
    """Test accuracy by the clients' FLOPs so far per cell: the mean over its seeds with a
    95 % band (what equal-compute comparisons read)."""
    return _accuracy_curves(trials_by_cell, views, by_flops=True)


def accuracy_heatmap(
    summary: pd.DataFrame, spec: SweepSpec, rows_axis: str, columns_axis: str
) -> Figure:
    """Mean final test accuracy for each pair of values of two axes (columns of the summary),
    averaged over the cells of the other axes."""
    axes = {a.column: a for a in spec.axes}
    row_values = [v.value for v in axes[rows_axis].values]
    column_values = [v.value for v in axes[columns_axis].values]
    grid = np.full((len(row_values), len(column_values)), np.nan)
    for i, r in enumerate(row_values):
        for j, c in enumerate(column_values):
            chosen = summary[(summary[rows_axis] == r) & (summary[columns_axis] == c)]
            values = [v for v in chosen["test_accuracy_mean"] if _finite(v)]
            if values:
                grid[i, j] = float(np.mean(values))
    figure, ax = new_figure(
        max(5.0, 1.1 * len(column_values) + 3), max(3.5, 0.6 * len(row_values) + 2)
    )
    image = ax.imshow(
        grid,
        cmap="viridis",
        aspect="auto",
        vmin=np.nanmin(grid) if np.isfinite(grid).any() else 0,
        vmax=np.nanmax(grid) if np.isfinite(grid).any() else 1,
    )
    for i, j in itertools.product(range(len(row_values)), range(len(column_values))):
        if np.isfinite(grid[i, j]):
            ax.text(
                j,
                i,
                f"{grid[i, j]:.3f}",
                ha="center",
                va="center",
                fontsize="small",
                color="white" if grid[i, j] < np.nanmean(grid) else "black",
            )
    ax.set_xticks(range(len(column_values)), [str(v) for v in column_values])
    ax.set_yticks(range(len(row_values)), [str(v) for v in row_values])
    others = [a.column for a in spec.axes if a.column not in (rows_axis, columns_axis)]
    over = f", mean over {', '.join(others)}" if others else ""
    ax.set(
        title=f"Final test accuracy by {rows_axis} and {columns_axis}{over}",
        xlabel=f"{columns_axis} ({axes[columns_axis].key})",
        ylabel=f"{rows_axis} ({axes[rows_axis].key})",
    )
    figure.colorbar(image, ax=ax, label="final test accuracy (fraction correct)")
    return figure


def heatmap_pairs(spec: SweepSpec) -> list[tuple[str, str]]:
    swept = [a.column for a in spec.axes if len(a.values) > 1]
    return list(itertools.combinations(swept, 2))[:MAX_HEATMAPS]


def sweep_figures(
    spec: SweepSpec, summary: pd.DataFrame, trials_by_cell: dict[str, list[TrialFigures]]
) -> dict[str, Figure]:
    """Every figure of a sweep, by file name (without ``.png``)."""
    views = cell_views(spec)
    out = {
        "pareto_accuracy_vs_client_flops": pareto_accuracy_vs_client_flops(summary, views),
        "accuracy_vs_round": accuracy_vs_round(trials_by_cell, views),
        "accuracy_vs_client_flops": accuracy_vs_client_flops(trials_by_cell, views),
        "accuracy_vs_upload": accuracy_vs_upload(summary, views),
    }
    for rows_axis, columns_axis in heatmap_pairs(spec):
        out[f"heatmap_{rows_axis}_x_{columns_axis}"] = accuracy_heatmap(
            summary, spec, rows_axis, columns_axis
        )
    return out
