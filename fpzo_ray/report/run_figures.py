"""The figures of one federated run, from what the run recorded.

Inputs are the run's per-round history (one row per round, the metrics a run logs; see
``run_history`` in ``sources``), its pruning summary (``setup``), its client records
(``clients.csv``: one row per sampled client and round) and its configuration:

- ``accuracy_vs_round``: test and validation accuracy at every evaluation;
- ``accuracy_vs_client_flops``: the same against the clients' cumulative FLOPs (pruning
  phase included, as in the sweep summary);
- ``mask_layer_density``: the kept fraction of every prunable layer, and the global one;
- ``client_memory_vs_budget``: each sampled client's measured training peak (its largest
  over the run) by device profile, against that profile's budget: who fit, who went out of
  memory;
- ``participation``: per round, what became of the sampled clients (aggregated, out of
  memory, unreachable, straggler, failed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fpzo_ray.config import RunConfig
from fpzo_ray.report.labels import method_label
from fpzo_ray.report.plotting import clip_to_fractions, color, new_figure, place_legend

#: The per-round metrics the run figures read.
HISTORY_KEYS = (
    "test_accuracy",
    "val_accuracy",
    "cumulative_client_flops",
    "aggregated_clients",
    "oom_clients",
    "unavailable_clients",
    "stragglers",
    "failed_clients",
)
#: Outcome of a sampled client -> (its per-round count metric, legend label, colour).
OUTCOMES = {
    "aggregated": ("aggregated_clients", "aggregated", "#2ca02c"),
    "oom": ("oom_clients", "out of memory", "#d62728"),
    "unavailable": ("unavailable_clients", "unreachable", "#7f7f7f"),
    "straggler": ("stragglers", "straggler (past the deadline)", "#ff7f0e"),
    "failed": ("failed_clients", "failed (error, lost worker, non-finite upload)", "#9467bd"),
}


def run_title(cfg: RunConfig) -> str:
    return (
        f"{method_label(cfg)}, {cfg.model_name} on {cfg.data_name}, "
        f"{cfg.data.partition}"
        + (f" alpha {cfg.data.alpha:g}" if cfg.data.partition == "dirichlet" else "")
        + f", seed {cfg.seed}"
    )


def _evaluations(history: pd.DataFrame) -> pd.DataFrame:
    if "test_accuracy" not in history:
        return pd.DataFrame(columns=["round", "test_accuracy"])
    return history[history["test_accuracy"].notna()]


def _accuracy_figure(x: pd.Series, evaluated: pd.DataFrame, title: str, xlabel: str) -> Figure:
    """Test (and, when there is a validation split, validation) accuracy against ``x``."""
    figure, ax = new_figure()
    ax.plot(x, evaluated["test_accuracy"], marker=".", label="test")
    if "val_accuracy" in evaluated and evaluated["val_accuracy"].notna().any():
        ax.plot(x, evaluated["val_accuracy"], marker=".", linestyle="--", label="validation")
    ax.set(title=title, xlabel=xlabel, ylabel="accuracy (fraction correct)")
    clip_to_fractions(ax)
    ax.grid(alpha=0.3)
    place_legend(ax)
    return figure


def accuracy_vs_round(history: pd.DataFrame, cfg: RunConfig) -> Figure:
    evaluated = _evaluations(history)
    return _accuracy_figure(
        evaluated["round"], evaluated, f"Accuracy by round\n{run_title(cfg)}", "round"
    )


def accuracy_vs_client_flops(
    history: pd.DataFrame, setup: Mapping[str, Any], cfg: RunConfig
) -> Figure:
    evaluated = _evaluations(history)
    pruning = float(setup.get("pruning_client_flops", 0) or 0)
    gflops = (evaluated.get("cumulative_client_flops", pd.Series(dtype=float)) + pruning) / 1e9
    return _accuracy_figure(
        gflops,
        evaluated,
        f"Accuracy by client compute\n{run_title(cfg)}",
        "cumulative client GFLOPs, all clients (pruning phase included)",
    )


def mask_layer_density(setup: Mapping[str, Any], cfg: RunConfig) -> Figure:
    densities = dict(setup.get("layer_density") or {})
    figure, ax = new_figure(max(7.5, 0.45 * len(densities) + 3), 4.5)
    names = list(densities)
    ax.bar(
        range(len(names)),
        [densities[n] for n in names],
        color=color(0),
        label="kept fraction of the layer",
    )
    overall = setup.get("kept_fraction")
    if overall is not None and math.isfinite(float(overall)):
        ax.axhline(
            float(overall),
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"all prunable weights: {float(overall):.3f}",
        )
    ax.set_xticks(
        range(len(names)),
        [n.removesuffix(".weight") for n in names],
        rotation=60,
        ha="right",
        fontsize="small",
    )
    ax.set(
        title=f"Mask: kept fraction per prunable layer\n{run_title(cfg)}",
        xlabel="prunable layer (conv and linear weights)",
        ylabel="kept fraction (density)",
        ylim=(0, 1.05),
    )
    place_legend(ax)
    return figure


def client_peaks(clients: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per client: its device profile, its largest training peak held against a budget
    (``column`` of its records; an out-of-memory record carries the figure that was held)
    and whether it ever went out of memory."""
    if clients.empty or "status" not in clients:
        return pd.DataFrame(columns=["device", "client_id", "held", "oom"])
    rows = clients.copy()
    device = rows["device"] if "device" in rows else pd.Series(None, index=rows.index)
    rows["device"] = [str(d) if isinstance(d, str) else NO_PROFILE for d in device]
    is_oom = rows["status"] == "oom"
    held = rows[column] if column in rows else pd.Series(math.nan, index=rows.index)
    rows["held"] = held.where(~is_oom, rows.get("peak_memory_bytes"))
    rows["oom"] = is_oom
    rows = rows[rows["held"].notna()]
    return rows.groupby(["device", "client_id"], as_index=False).agg(
        held=("held", "max"), oom=("oom", "any")
    )


NO_PROFILE = "no device profile"


def client_memory_vs_budget(
    clients: pd.DataFrame, budgets_bytes: Mapping[str, float], cfg: RunConfig
) -> Figure:
    """Per device profile, every client's largest training peak (MB, log scale) as a dot,
    green where it fit the profile's budget (a black bar), red where it did not. The peak
    held against the budget is ``devices.memory_figure``'s: with the model stored sparsely
    (``sparse``) or the simulator's dense buffers (``dense``)."""
    figure, ax = new_figure()
    column = "sparse_memory_bytes" if cfg.devices.memory_figure == "sparse" else "peak_memory_bytes"
    peaks = client_peaks(clients, column)
    devices = sorted(set(peaks["device"]) | set(budgets_bytes))
    for x, device in enumerate(devices):
        group = peaks[peaks["device"] == device]
        # spread the dots sideways by client id (golden-ratio offsets: no pile-ups)
        spread = x + 0.6 * ((group["client_id"].astype(float) * 0.618034) % 1.0 - 0.5)
        for went_oom, shade in ((False, "#2ca02c"), (True, "#d62728")):
            chosen = (group["oom"] == went_oom).to_numpy()
            ax.scatter(spread[chosen], group["held"][chosen] / 1e6, s=12, color=shade, alpha=0.7)
        if device in budgets_bytes:
            ax.hlines(budgets_bytes[device] / 1e6, x - 0.4, x + 0.4, color="black", linewidth=2)
    ax.set_xticks(range(len(devices)), devices)
    if len(peaks):
        ax.set_yscale("log")
    out = int(peaks["oom"].sum())
    if budgets_bytes:
        handles = [
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                color="#2ca02c",
                label=f"fit its budget ({len(peaks) - out})",
            ),
            Line2D(
                [], [], marker="o", linestyle="", color="#d62728", label=f"out of memory ({out})"
            ),
            Line2D([], [], color="black", linewidth=2, label="device memory budget"),
        ]
        where = ""
    else:
        handles = [
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                color="#2ca02c",
                label=f"measured peak ({len(peaks)} clients)",
            )
        ]
        where = " (device profiles off: no budgets)"
    ax.legend(
        handles=handles,
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
    )
    what = "model stored sparsely" if column == "sparse_memory_bytes" else "dense buffers"
    ax.set(
        title=f"Client training peak against its device's budget{where}\n{run_title(cfg)}",
        xlabel="device profile",
        ylabel=f"peak training memory per client, MB ({what})",
    )
    ax.grid(alpha=0.3, axis="y")
    return figure


def participation(history: pd.DataFrame, cfg: RunConfig) -> Figure:
    """Stacked bars: per round, the sampled clients by outcome."""
    figure, ax = new_figure()
    rounds = history["round"] if "round" in history else pd.Series(dtype=float)
    bottom = pd.Series(0.0, index=history.index)
    for key, label, shade in OUTCOMES.values():
        counts = history[key].fillna(0).astype(float) if key in history else bottom * 0
        if key != "aggregated_clients" and not counts.any():
            continue
        ax.bar(rounds, counts, bottom=bottom, width=1.0, color=shade, label=label, linewidth=0)
        bottom = bottom + counts
    ax.set(
        title=f"Participation per round\n{run_title(cfg)}", xlabel="round", ylabel="sampled clients"
    )
    place_legend(ax, "outcome", beside=True)
    return figure


def run_figures(
    history: pd.DataFrame,
    setup: Mapping[str, Any],
    clients: pd.DataFrame,
    cfg: RunConfig,
    budgets_bytes: Mapping[str, float],
) -> dict[str, Figure]:
    """Every figure of one run, by file name (without ``.png``)."""
    return {
        "accuracy_vs_round": accuracy_vs_round(history, cfg),
        "accuracy_vs_client_flops": accuracy_vs_client_flops(history, setup, cfg),
        "mask_layer_density": mask_layer_density(setup, cfg),
        "client_memory_vs_budget": client_memory_vs_budget(clients, budgets_bytes, cfg),
        "participation": participation(history, cfg),
    }


def device_budgets(cfg: RunConfig) -> dict[str, float]:
    """Memory budget (bytes) of every device profile the run could assign; none when
    device profiles are off."""
    if not cfg.devices.enabled:
        return {}
    from fpzo_ray.sim.devices import load_catalog

    catalog = load_catalog(cfg.devices.profiles_file or None, cfg.devices.population)
    return {p.name: p.memory_bytes for p in catalog.profiles if p.name in catalog.population}
