"""``report.html`` (one self-contained file: figures inline as PNG data) and ``summary.md``.

The report holds what a reader needs to judge a sweep without the tool: what was compared
and how fairly (seeds, intervals, tuning on validation), the figures, the per-cell summary,
each cell's configuration, every trial, the software it ran on and how long it took. Its
content is a function of the :class:`~fpzo_ray.report.sources.SweepRecord` alone, so the
same sweep read from its folder or from MLflow gives the same files.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fpzo_ray.config import config_from_dict, config_to_dict, flatten
from fpzo_ray.report.plotting import png_bytes
from fpzo_ray.report.sources import SweepRecord
from fpzo_ray.report.sweep_figures import cell_views, sweep_figures
from fpzo_ray.sweep.study.tables import summary_view

REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.md"
FIGURES_DIR = "figures"

CAPTIONS = {
    "pareto_accuracy_vs_client_flops": "Final test accuracy against the clients' total compute "
    "(pruning phase included), one point per cell; error bars are 95 % t-intervals over the "
    "cell's seeds; the dashed line is the Pareto front (no other cell is both cheaper and "
    "more accurate).",
    "accuracy_vs_round": "Test accuracy by round, per cell: the mean over its seeds and a "
    "95 % band.",
    "accuracy_vs_client_flops": "Test accuracy by the clients' compute spent so far (pruning "
    "phase included), per cell: the mean over its seeds and a 95 % band.",
    "accuracy_vs_upload": "Final test accuracy against the bytes all clients uploaded "
    "(pruning phase included).",
}


@dataclass(frozen=True)
class ReportFiles:
    """The files a report was written to."""

    html: Path
    markdown: Path
    figures: tuple[Path, ...]


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def fairness_note(record: SweepRecord) -> str:
    """What the figures can and cannot support, from how the sweep was designed."""
    spec = record.spec
    if spec.study is None:
        return (
            "One seed per cell and no repeats: every difference here is a smoke test of "
            "the pipeline, not a comparison of methods (for that, run a study: a search "
            "on the validation split per cell, then several seeds)."
        )
    tuned = (
        "each cell's hyperparameters were searched on the validation split "
        f"({spec.search.metric}), never on test metrics, then "
        if spec.search
        else "no hyperparameters were searched; "
    )
    return (
        f"A study: {tuned}re-run on {spec.study.seeds} fresh seeds; figures show means "
        "and 95 % Student-t intervals over those seeds. Compare two cells through paired "
        "differences over their shared seeds."
    )


def _overview(record: SweepRecord) -> list[tuple[str, str]]:
    spec = record.spec
    states = record.trials["status"].value_counts() if len(record.figures) else pd.Series()
    trial_wall = sum(f.wall_s for f in record.figures if math.isfinite(f.wall_s))
    return [
        ("sweep", spec.name),
        ("description", spec.description or "-"),
        ("kind", f"{spec.kind} ({' then '.join(spec.phases)})"),
        ("cells", str(spec.cell_count)),
        ("trials", ", ".join(f"{n} {s}" for s, n in states.items()) or "none"),
        ("sweep wall time", _duration(record.wall_s)),
        ("trial time, summed over trials", _duration(trial_wall)),
        ("experiment folder", record.experiment or "-"),
        ("MLflow parent run", record.parent_run_id or "-"),
    ]


def cell_configurations(record: SweepRecord) -> pd.DataFrame:
    """Per cell: its method and every resolved field that differs from the base sweep's
    (its axes' overrides, the search's choice)."""
    spec = record.spec
    shared = flatten(config_to_dict(config_from_dict(spec.base)))
    rows = []
    views = {v.label: v for v in cell_views(spec)}
    for cell in spec.cells():
        chosen = record.selections.get(cell.label)
        hyper = dict(chosen.hyperparameters) if chosen else {}
        resolved = flatten(config_to_dict(config_from_dict(spec.run_config(cell, hyper))))
        differs = {k: v for k, v in resolved.items() if shared.get(k) != v}
        rows.append(
            {
                "cell": cell.label,
                "method and mask": views[cell.label].method,
                "differs from the base": "; ".join(f"{k}={v}" for k, v in differs.items()) or "-",
                "chosen on validation": "; ".join(f"{k}={v}" for k, v in hyper.items()) or "-",
            }
        )
    return pd.DataFrame(rows)


def summary_with_methods(record: SweepRecord) -> pd.DataFrame:
    """The summary's headline columns (``study.tables.summary_view``), each cell named by its
    method and mask first."""
    view = summary_view(record.summary)
    view.insert(0, "method and mask", [v.method for v in cell_views(record.spec)])
    return view


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return _format(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _html_table(frame: pd.DataFrame) -> str:
    return frame.map(_format).to_html(index=False, escape=True, border=0, classes="table")


def _html_pairs(pairs: list[tuple[str, str]] | Mapping[str, Any]) -> str:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_format(v))}</td></tr>"
        for k, v in items
    )
    return f'<table class="pairs">{rows}</table>'


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .6rem 1rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #eee; text-align: left; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #555; } .scroll { overflow-x: auto; }
"""


def render_html(record: SweepRecord, pngs: Mapping[str, bytes]) -> str:
    parts = [
        f"<h1>Sweep {html.escape(record.spec.name)}</h1>",
        f'<p class="note">{html.escape(fairness_note(record))}</p>',
        _html_pairs(_overview(record)),
        "<h2>Figures</h2>",
    ]
    for name, data in pngs.items():
        caption = CAPTIONS.get(
            name,
            "Mean final test accuracy over two swept axes." if name.startswith("heatmap_") else "",
        )
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(
            f'<figure id="{name}"><img alt="{name}" src="data:image/png;base64,'
            f'{encoded}"><figcaption><b>{name}</b>. {html.escape(caption)}'
            "</figcaption></figure>"
        )
    parts += [
        "<h2>Summary per cell</h2>",
        '<div class="scroll">' + _html_table(summary_with_methods(record)) + "</div>",
        "<h2>Configuration of each cell</h2>",
        '<div class="scroll">' + _html_table(cell_configurations(record)) + "</div>",
        "<details><summary>The base configuration every cell starts from</summary>",
        _html_pairs(flatten(config_to_dict(config_from_dict(record.spec.base)))),
        "</details>",
        "<h2>Every trial</h2>",
        '<div class="scroll">' + _html_table(record.trials) + "</div>",
        "<h2>Software and machine</h2>",
        _html_pairs(_flat_environment(record)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>fpzo_ray report: {html.escape(record.spec.name)}</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def _flat_environment(record: SweepRecord) -> dict[str, Any]:
    if not record.environment:
        return {"recorded": "no (the sweep predates environment.json)"}
    return flatten(record.environment)


def render_markdown(record: SweepRecord, figure_names: list[str]) -> str:
    lines = [f"# Sweep {record.spec.name}", "", f"> {fairness_note(record)}", ""]
    lines += [f"- **{k}**: {v}" for k, v in _overview(record)]
    lines += [
        "",
        "## Summary per cell",
        "",
        markdown_table(summary_with_methods(record)),
        "",
        "## Configuration of each cell",
        "",
        markdown_table(cell_configurations(record)),
        "",
        "## Figures",
        "",
    ]
    lines += [f"- `{FIGURES_DIR}/{name}.png`" for name in figure_names]
    lines += ["", "## Software and machine", ""]
    lines += [f"- {k}: {v}" for k, v in _flat_environment(record).items()]
    return "\n".join(lines) + "\n"


def write_report(record: SweepRecord, out_dir: str | Path) -> ReportFiles:
    """``report.html``, ``summary.md`` and ``figures/*.png`` in ``out_dir``."""
    out = Path(out_dir)
    (out / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    figures = sweep_figures(record.spec, record.summary, record.trials_by_cell)
    pngs = {name: png_bytes(figure) for name, figure in figures.items()}
    paths = []
    for name, data in pngs.items():
        path = out / FIGURES_DIR / f"{name}.png"
        path.write_bytes(data)
        paths.append(path)
    (out / REPORT_FILE).write_text(render_html(record, pngs))
    (out / SUMMARY_FILE).write_text(render_markdown(record, list(pngs)))
    return ReportFiles(out / REPORT_FILE, out / SUMMARY_FILE, tuple(paths))
