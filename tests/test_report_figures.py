"""Run and sweep figures, read back from the matplotlib objects (labels, legends, artists),
and valid PNG files; no Ray, no MLflow."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from fpzo_ray.config import config_from_dict
from fpzo_ray.report.labels import method_label
from fpzo_ray.report.plotting import png_bytes, save_figures
from fpzo_ray.report.run_figures import run_figures
from fpzo_ray.report.sweep_figures import cell_views, pareto_front, sweep_figures
from fpzo_ray.sweep.spec import parse_sweep
from fpzo_ray.sweep.study.summary import trial_figures
from fpzo_ray.sweep.study.tables import final_trials, summary_table

CFG = config_from_dict(
    {"pruning": {"method": "ntk_sap", "sparsity": 0.9}, "devices": {"enabled": True}}
)


def _history(rounds: int = 6) -> pd.DataFrame:
    r = np.arange(1, rounds + 1)
    evaluated = r % 2 == 0
    return pd.DataFrame(
        {
            "round": r,
            "test_accuracy": np.where(evaluated, 0.1 * r, np.nan),
            "val_accuracy": np.where(evaluated, 0.1 * r + 0.01, np.nan),
            "cumulative_client_flops": 1e9 * r,
            "aggregated_clients": [4, 3, 4, 2, 4, 4],
            "oom_clients": [0, 1, 0, 1, 0, 0],
            "unavailable_clients": [1, 1, 1, 0, 1, 1],
            "stragglers": [0, 0, 0, 1, 0, 0],
            "failed_clients": [0, 0, 0, 1, 0, 0],
        }
    )


SETUP = {
    "kept_fraction": 0.1,
    "pruning_client_flops": 5e8,
    "layer_density": {
        "stages.0.0.weight": 0.6,
        "stages.1.0.weight": 0.2,
        "stages.2.1.weight": 0.05,
    },
}
CLIENTS = pd.DataFrame(
    [
        {
            "round": 1,
            "client_id": 0,
            "device": "mcu",
            "status": "ok",
            "peak_memory_bytes": 3e6,
            "sparse_memory_bytes": 1.5e6,
        },
        {
            "round": 2,
            "client_id": 1,
            "device": "mcu",
            "status": "oom",
            "peak_memory_bytes": 5e6,
            "budget_bytes": 4e6,
        },
        {
            "round": 2,
            "client_id": 2,
            "device": "rpi4",
            "status": "ok",
            "peak_memory_bytes": 3e6,
            "sparse_memory_bytes": 1.5e6,
        },
        {
            "round": 3,
            "client_id": 0,
            "device": "mcu",
            "status": "ok",
            "peak_memory_bytes": 3.2e6,
            "sparse_memory_bytes": 1.6e6,
        },
        {"round": 3, "client_id": 3, "device": "phone", "status": "unavailable"},
    ]
)
BUDGETS = {"mcu": 4e6, "rpi4": 1.2e9, "phone": 1.5e9}


def _legend(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_run_figures_have_their_axes_and_legends():
    figures = run_figures(_history(), SETUP, CLIENTS, CFG, BUDGETS)
    assert list(figures) == [
        "accuracy_vs_round",
        "accuracy_vs_client_flops",
        "mask_layer_density",
        "client_memory_vs_budget",
        "participation",
    ]
    for figure in figures.values():
        (ax,) = figure.axes
        assert ax.get_title() and "NTK-SAP 90 % + ZO" in ax.get_title()
        assert ax.get_xlabel() and ax.get_ylabel()

    ax = figures["accuracy_vs_round"].axes[0]
    assert ax.get_xlabel() == "round" and "accuracy" in ax.get_ylabel()
    assert _legend(ax) == ["test", "validation"]
    test_line = ax.get_lines()[0]
    assert list(test_line.get_xdata()) == [2, 4, 6]
    assert list(test_line.get_ydata()) == pytest.approx([0.2, 0.4, 0.6])

    ax = figures["accuracy_vs_client_flops"].axes[0]
    assert "GFLOPs" in ax.get_xlabel()
    # cumulative client FLOPs plus the pruning phase's, in GFLOPs
    assert list(ax.get_lines()[0].get_xdata()) == pytest.approx([2.5, 4.5, 6.5])

    ax = figures["mask_layer_density"].axes[0]
    assert [round(p.get_height(), 3) for p in ax.patches] == [0.6, 0.2, 0.05]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "stages.0.0",
        "stages.1.0",
        "stages.2.1",
    ]
    assert any("0.100" in text for text in _legend(ax))

    ax = figures["client_memory_vs_budget"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mcu", "phone", "rpi4"]
    texts = _legend(ax)
    # clients 0 and 2 fit (their sparse-storage peaks), client 1 went out of memory
    assert texts[0] == "fit its budget (2)" and texts[1] == "out of memory (1)"
    budget_lines = [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
    assert len(budget_lines) == 3
    green, red = [c for c in ax.collections if c.__class__.__name__ == "PathCollection"][:2]
    assert sorted(green.get_offsets()[:, 1]) == pytest.approx([1.6])  # client 0's max, MB
    assert red.get_offsets()[0, 1] == pytest.approx(5.0)  # the figure held against 4 MB

    ax = figures["participation"].axes[0]
    assert ax.get_ylabel() == "sampled clients"
    assert _legend(ax) == [
        "aggregated",
        "out of memory",
        "unreachable",
        "straggler (past the deadline)",
        "failed (error, lost worker, non-finite upload)",
    ]
    # stacked: every round's bars add up to the clients sampled (5)
    tops = {}
    for bar in ax.patches:
        x = round(bar.get_x() + bar.get_width() / 2)
        tops[x] = max(tops.get(x, 0), bar.get_y() + bar.get_height())
    assert tops == {r: 5 for r in range(1, 7)}


def test_figures_are_valid_png_files(tmp_path):
    figures = run_figures(_history(), SETUP, CLIENTS, CFG, BUDGETS)
    paths = save_figures(figures, tmp_path / "figures")
    assert [p.name for p in paths] == [f"{name}.png" for name in figures]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        image = Image.open(io.BytesIO(data))
        image.verify()
        assert image.size[0] >= 500 and image.size[1] >= 300
    assert png_bytes(figures["participation"]) == png_bytes(figures["participation"])


def test_run_figures_without_device_profiles_or_evaluations():
    cfg = config_from_dict({})
    history = _history().drop(columns=["test_accuracy", "val_accuracy"])
    figures = run_figures(history, {"kept_fraction": 1.0}, pd.DataFrame(), cfg, {})
    ax = figures["client_memory_vs_budget"].axes[0]
    assert "dense ZO" in ax.get_title() and ax.get_lines() == []
    assert figures["accuracy_vs_round"].axes[0].get_legend() is not None


def test_method_labels_name_the_method_and_the_sparsity():
    def label(**sections):
        return method_label(config_from_dict(sections))

    assert label() == "dense ZO"
    assert label(pruning={"method": "ntk_sap", "sparsity": 0.9}) == "NTK-SAP 90 % + ZO"
    assert (
        label(pruning={"method": "random_layerwise", "sparsity": 0.8})
        == "random (layer-matched) 80 % + ZO"
    )
    assert label(training={"algorithm": "bp", "mode": "fedavg"}) == "BP FedAvg"
    assert (
        label(
            training={"algorithm": "bp", "mode": "fedavg"},
            pruning={"method": "snip", "sparsity": 0.5},
        )
        == "SNIP 50 % + BP FedAvg"
    )


def test_the_pareto_front_keeps_what_nothing_beats():
    points = [(1.0, 0.5), (2.0, 0.4), (2.0, 0.7), (3.0, 0.6), (4.0, 0.9), (0.5, 0.2)]
    assert pareto_front(points) == [(0.5, 0.2), (1.0, 0.5), (2.0, 0.7), (4.0, 0.9)]


STUDY = {
    "name": "fig",
    "base": {"training": {"rounds": 4}},
    "grid": {"pruning.sparsity": [0.0, 0.5, 0.9], "zo.num_perturbations": [5, 10]},
    "study": {"seeds": 3},
}


def _trial_history(accuracy: float, flops: float, seed: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "round": [1, 2, 3, 4],
            "test_accuracy": [np.nan, accuracy - 0.1, np.nan, accuracy],
            "val_accuracy": [np.nan, accuracy - 0.1, np.nan, accuracy],
            "cumulative_client_flops": [flops * r / 4 for r in range(1, 5)],
            "cumulative_upload_bytes": [1000.0 * r for r in range(1, 5)],
            "time_total_s": [float(r) for r in range(1, 5)],
        }
    )


def _study_figures(spec):
    out = []
    for plan in spec.repeat_plans({}):
        cfg = config_from_dict(plan.run)
        accuracy = (
            0.5 + 0.3 * cfg.pruning.sparsity + 0.01 * plan.seed + 0.001 * cfg.zo.num_perturbations
        )
        flops = 1e10 * (1 - cfg.pruning.sparsity) * cfg.zo.num_perturbations
        out.append(trial_figures(plan.as_dict(), 4, _trial_history(accuracy, flops, plan.seed)))
    return out


def test_sweep_figures_show_cells_with_intervals_front_bands_and_heat_maps():
    spec = parse_sweep(STUDY)
    figures = _study_figures(spec)
    summary = summary_table(spec, {}, figures)
    out = sweep_figures(spec, summary, final_trials(spec, {}, figures))
    assert list(out) == [
        "pareto_accuracy_vs_client_flops",
        "accuracy_vs_round",
        "accuracy_vs_client_flops",
        "accuracy_vs_upload",
        "heatmap_sparsity_x_K",
    ]

    ax = out["pareto_accuracy_vs_client_flops"].axes[0]
    assert "95 % t-interval over 3 seeds" in ax.get_title()
    assert ax.get_xscale() == "log" and "GFLOPs" in ax.get_xlabel()
    names = _legend(ax)
    assert names[:6] == [v.caption for v in cell_views(spec)]
    assert names[0] == "dense ZO; K=5" and names[-2] == "NTK-SAP 90 % + ZO; K=10"
    assert names[-1] == "Pareto front"
    (front,) = [line for line in ax.get_lines() if line.get_label() == "Pareto front"]
    # more sparsity is both cheaper and (here) more accurate: the 90 % cells make the front
    assert len(front.get_xdata()) == 2
    assert sorted(front.get_xdata()) == pytest.approx([5.0, 10.0])
    errorbars = [c for c in ax.containers]
    assert len(errorbars) == 6 and all(c.has_yerr for c in errorbars)

    ax = out["accuracy_vs_round"].axes[0]
    assert "95 % band (up to 3 seeds)" in ax.get_title()
    assert len(ax.get_lines()) == 6 and len(ax.collections) == 6  # a band per cell
    mean = ax.get_lines()[0].get_ydata()
    assert mean[-1] == pytest.approx(0.5 + 0.005 + 0.01 * 2)  # seeds 1, 2, 3: mean 2

    ax = out["accuracy_vs_client_flops"].axes[0]
    assert "GFLOPs" in ax.get_xlabel() and "95 % band (up to 3 seeds)" in ax.get_title()
    assert len(ax.get_lines()) == 6 and len(ax.collections) == 6
    # dense ZO at K = 5 spends 5e10 FLOPs over its 4 rounds: evaluated at rounds 2 and 4
    assert list(ax.get_lines()[0].get_xdata()) == pytest.approx([25.0, 50.0])
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx(list(mean))

    ax = out["heatmap_sparsity_x_K"].axes[0]
    grid = ax.get_images()[0].get_array()
    assert grid.shape == (3, 2)
    assert grid[2, 1] == pytest.approx(0.5 + 0.27 + 0.01 + 0.02)
    assert ax.get_ylabel() == "sparsity (pruning.sparsity)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "10"]


def test_fifty_cells_keep_a_legend_one_can_read():
    spec = parse_sweep(
        {
            "name": "wide",
            "base": {"training": {"rounds": 4}},
            "grid": {
                "pruning.sparsity": [0.0, 0.5, 0.7, 0.8, 0.9],
                "zo.num_perturbations": list(range(1, 11)),
            },
        }
    )
    plans = spec.first_phase_plans()
    assert len(plans) == 50
    figures = [trial_figures(p.as_dict(), 4, _trial_history(0.6, 1e10, 0)) for p in plans]
    summary = summary_table(spec, {}, figures)
    out = sweep_figures(spec, summary, final_trials(spec, {}, figures))
    ax = out["pareto_accuracy_vs_client_flops"].axes[0]
    names = _legend(ax)
    assert names == [
        "dense ZO",
        "NTK-SAP 50 % + ZO",
        "NTK-SAP 70 % + ZO",
        "NTK-SAP 80 % + ZO",
        "NTK-SAP 90 % + ZO",
        "Pareto front",
    ]
    assert "one seed per cell" in ax.get_title()
    assert len(ax.containers) == 50
    ax = out["accuracy_vs_round"].axes[0]
    assert len(ax.get_lines()) == 50 and len(_legend(ax)) == 5
    assert not any(math.isnan(v) for v in ax.get_lines()[0].get_ydata())


def test_a_saved_sweep_file_keeps_the_name_it_was_given():
    """A sweep named after its file (no ``name:`` in it) reads back, from the copy saved in
    its experiment folder or logged to its parent run, under the same name."""
    raw = {k: v for k, v in STUDY.items() if k != "name"}
    spec = parse_sweep(raw, "my_file")
    assert spec.name == "my_file"
    assert parse_sweep(yaml.safe_load(yaml.safe_dump(spec.raw))).name == "my_file"
