"""Matplotlib plumbing shared by the run and sweep figures.

Figures are built as ``matplotlib.figure.Figure`` objects, without pyplot: no global state, no
display needed, safe in a Tune driver thread. Legends with many entries go outside the axes,
in as many columns as they need, so that 50 cells stay readable.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

#: Enough distinct colours for a legend of methods (tab20 after tab10).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def new_figure(width: float = 7.5, height: float = 4.5) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def marker(index: int) -> str:
    return MARKERS[index % len(MARKERS)]


def place_legend(
    ax: Axes, title: str | None = None, last: str | None = None, beside: bool = False
) -> None:
    """A legend inside the axes when it is short, beside them (in columns) when it is long
    or when ``beside`` (plots that fill their axes); the entry labelled ``last`` (a reference
    line) goes at its end."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if last in labels:
        at = labels.index(last)
        handles.append(handles.pop(at))
        labels.append(labels.pop(at))
    if len(handles) <= 6 and not beside:
        ax.legend(handles, labels, title=title, fontsize="small", title_fontsize="small")
        return
    columns = 1 + (len(handles) - 1) // 25
    ax.legend(
        handles,
        labels,
        title=title,
        fontsize="x-small",
        title_fontsize="small",
        ncols=columns,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
    )
    figure = ax.get_figure(root=True)
    if len(handles) > 6 and isinstance(figure, Figure):
        width, height = figure.get_size_inches()
        figure.set_size_inches(width + 2.6 * columns, max(height, 0.17 * min(len(handles), 25)))


def clip_to_fractions(ax: Axes) -> None:
    """Keep an accuracy axis within [0, 1]: an interval may reach past it, accuracy cannot."""
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 0.0), min(high, 1.0))


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def save_figures(figures: Mapping[str, Figure], folder: Path) -> list[Path]:
    """Each figure as ``<folder>/<name>.png``; returns the paths in the mapping's order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        path = folder / f"{name}.png"
        path.write_bytes(png_bytes(figure))
        paths.append(path)
    return paths
