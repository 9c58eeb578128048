"""``python -m fpzo_ray.bench.study_page``: ``docs/results/paper_question.md``, generated from
the saved result of the focused study (``docs/results/paper_question.json``, written by
``python -m fpzo_ray.bench fidelity --study sweeps/paper_question.yaml --save ...``) and its
figures (``docs/results/paper_question/``, ``--figures``).

Nothing on the page is typed by hand: the answer per partition is read off the paired
interval (a difference is called one only when its 95 % interval excludes 0), the seeds that
would separate it come from the measured spread, and the cost of the full study
(``sweeps/paper_fidelity_long.yaml``) from the measured wall time per round. A test fails
while the committed page differs from what this writes (``--check`` says so).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from fpzo_ray.bench.pages import page_parser, write_or_check

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "docs" / "results" / "paper_question.json"
PAGE = ROOT / "docs" / "results" / "paper_question.md"
FIGURES = "paper_question"  # beside the page
LONG_STUDY = ROOT / "sweeps" / "paper_fidelity_long.yaml"
#: The paper's headline: NTK-SAP + ZO over dense ZO, at equal rounds.
PAPER_GAIN = 0.0635
#: The cluster sizes the full study's cost is given for (one core per run).
CLUSTER_CORES = (16, 64, 128)
HEADLINE, BASELINE = "ntk_sap_90", "dense_zo"
LABELS = {"dense_zo": "dense ZO (vanilla BAFFLE)", "ntk_sap_90": "federated NTK-SAP 90 % + ZO"}


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def _interval(side: dict[str, Any]) -> str:
    if side.get("ci95") is None:
        return f"{_points(side['mean'])} points (no interval: one seed)"
    return f"{_points(side['mean'])} +- {100 * side['ci95']:.1f} points"


def verdict(side: dict[str, Any]) -> str:
    """One partition's answer: a difference only when its interval excludes 0."""
    mean, half = side["mean"], side.get("ci95")
    if mean is None:
        return "no finished pair of runs"
    if half is None or not math.isfinite(half):
        return f"{_points(mean)} points from one seed: no interval, no answer"
    low, high = mean - half, mean + half
    if low > 0:
        against = (
            "short of" if high < PAPER_GAIN else "beyond" if low > PAPER_GAIN else "consistent with"
        )
        return (
            f"NTK-SAP ahead by {_interval(side)}: a difference, {against} the paper's "
            f"+{100 * PAPER_GAIN:.2f}"
        )
    if high < 0:
        return f"NTK-SAP behind by {_interval(side)}: a difference, against the paper's claim"
    paper = (
        f"the paper's +{100 * PAPER_GAIN:.2f} lies above it"
        if high < PAPER_GAIN
        else f"so does the paper's +{100 * PAPER_GAIN:.2f}"
    )
    needed = side.get("seeds_to_separate")
    more = (
        f"; at this spread about {needed} paired seeds would separate a difference this size"
        if needed
        else ""
    )
    return f"not separable: {_interval(side)}, the interval includes 0 ({paper}){more}"


def overall(claim: dict[str, dict[str, Any]]) -> str:
    """Reproduced (NTK-SAP significantly ahead in every partition), contradicted (behind in
    one), or not separable."""
    sides = [c["equal_rounds"] for c in claim.values()]

    def bounds(side: dict[str, Any]) -> tuple[float, float]:
        half = side.get("ci95")
        if side.get("mean") is None or half is None:
            return (-math.inf, math.inf)
        return side["mean"] - half, side["mean"] + half

    below_paper = (
        f"; a gain as large as the paper's +{100 * PAPER_GAIN:.2f} lies above every "
        "partition's interval"
        if sides and all(bounds(s)[1] < PAPER_GAIN for s in sides)
        else ""
    )
    if sides and all(bounds(s)[0] > 0 for s in sides):
        return (
            "reproduced in direction: NTK-SAP 90 % is ahead at equal rounds in every partition"
            + below_paper
        )
    if any(bounds(s)[1] < 0 for s in sides):
        return (
            "contradicted: NTK-SAP 90 % is behind dense ZO at equal rounds in some partition"
            + below_paper
        )
    return "not separable at this scale: no partition shows a difference at equal rounds" + (
        below_paper
    )


def what_would_separate(r: dict[str, Any]) -> list[str]:
    """Seeds from the paired spread, rounds from how far the last quarter still moved."""
    seeds = [c["equal_rounds"].get("seeds_to_separate") for c in r["claim"].values()]
    known = [n for n in seeds if n]
    moved = max(r["cells"], key=lambda c: abs(c["converged"]["mean"]))
    return [
        "## What would separate it",
        "",
        "- Seeds: "
        + (
            f"at the measured spread of the paired differences, about {max(known)} paired "
            "seeds per partition (the table's last column) would narrow the intervals below "
            "the differences seen here, if those held."
            if known
            else "no spread was measured."
        ),
        "- Rounds: over the last quarter the cells moved by at most "
        f"{_interval(moved['converged'])} ({_cell_name(moved)}): more rounds would move the "
        "finals by little.",
        "- Models: LeNet-5 trains 61.7k weights; the ZO estimate's error grows with the "
        "trained dimension (the method page), so pruning has the most to win on models with "
        "millions of weights (ResNet-18 in `examples/resnet18_bn`), at a per-round cost that "
        "is a GPU's or a cluster's job rather than this machine's.",
        "",
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _accuracy(cell: dict[str, Any]) -> str:
    half = cell.get("ci95")
    return f"{cell['mean']:.4f} +- {half:.4f}" if half is not None else f"{cell['mean']:.4f}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def full_study_cost(cells: list[dict[str, Any]]) -> list[str]:
    """The long study's cost from this study's per-round wall time: its dense-cost runs
    (dense ZO; BP FedAvg, not measured here, counted at dense ZO's cost) and its pruned ZO
    runs (at NTK-SAP 90 %'s cost; 80 % costs somewhat more), one core per run. Its phases
    run one after the other, and a phase takes at least its longest run."""
    from fpzo_ray.config import config_from_dict
    from fpzo_ray.sweep.spec import load_sweep

    spec = load_sweep(LONG_STUDY)
    cost = {}
    for method in (BASELINE, HEADLINE):
        values = [c["round_cost_s"] for c in cells if c["method"] == method]
        cost[method] = sum(values) / len(values)
    assert spec.study is not None
    phases = {"search": spec.first_phase_plans(), "repeat": []}
    runs: dict[str, list[float]] = {"search": [], "repeat": []}
    for plan in phases["search"]:
        cfg = config_from_dict(plan.run)
        runs["search"].append(
            cfg.training.rounds * (cost[HEADLINE] if cfg.pruning.sparsity > 0 else cost[BASELINE])
        )
    for cell in spec.cells():
        cfg = config_from_dict(spec.run_config(cell, {}))
        seconds = cfg.training.rounds * (
            cost[HEADLINE] if cfg.pruning.sparsity > 0 else cost[BASELINE]
        )
        runs["repeat"] += [seconds] * spec.study.seeds

    def wall(cores: int) -> float:
        return sum(max(sum(r) / cores, max(r)) for r in runs.values())

    core_seconds = sum(sum(r) for r in runs.values())
    count = sum(len(r) for r in runs.values())
    rounds = config_from_dict(spec.run_config(spec.cells()[0], {})).training.rounds
    lines = [
        f"`sweeps/paper_fidelity_long.yaml` ({spec.cell_count} cells, {count} runs of "
        f"{rounds} rounds: {len(runs['search'])} in its search, {len(runs['repeat'])} "
        f"repeats) from the wall time per round measured here (dense ZO "
        f"{cost[BASELINE]:.3f} s, NTK-SAP 90 % {cost[HEADLINE]:.3f} s, each run on about one "
        f"core; pruned cells at NTK-SAP 90 %'s cost, BP FedAvg, not measured here, at dense "
        f"ZO's): {core_seconds / 3600:.1f} core-hours. A phase takes at least its longest "
        "run, so more cores than runs buy nothing.",
        "",
        *_table(
            ["where", "runs at a time", "wall time"],
            [["this 2-core machine", "2", _duration(wall(2))]]
            + [[f"{n}-core CPU cluster", str(n), _duration(wall(n))] for n in CLUSTER_CORES],
        ),
        "",
        "On a GPU: not measured (no GPU was lent to the session that ran this study); "
        "`python -m fpzo_ray.bench gpu` measures the rounds per second of one GPU shared by "
        "1 to 8 workers, from which the same arithmetic gives the GPU figure.",
    ]
    return lines


def page(result: Path = RESULT) -> str:
    saved = json.loads(result.read_text())
    r = saved["results"]
    machine, commit = saved["machine"], saved["commit"]
    version = (commit["id"] or "unknown")[:10] + (
        " (with uncommitted changes)" if commit["dirty"] else ""
    )
    cells = r["cells"]
    statuses = ", ".join(f"{n} {s}" for s, n in r["trials"].items())
    lines = [
        "# The paper's question at the horizon",
        "",
        "Generated by `python -m fpzo_ray.bench.study_page` from `docs/results/"
        "paper_question.json`; do not edit by hand.",
        "",
        "Does federated NTK-SAP pruning plus ZO training beat dense ZO (the paper: up to "
        f"+{100 * PAPER_GAIN:.2f} points) at equal rounds, and by how much at equal client "
        "FLOPs? The study `sweeps/paper_question.yaml` (real MNIST, LeNet-5, 100 clients, 10 a "
        f"round, K = 20, {r['rounds']} rounds; each cell's server rate searched on the "
        "validation split at the full horizon, then 3 fresh seeds) answers it on one laptop.",
        "",
        "To reproduce: `python -m fpzo_ray.bench fidelity --study sweeps/paper_question.yaml "
        "--data-root <folder with MNIST/raw> --save docs/results/paper_question.json --figures "
        "docs/results/paper_question`, then `python -m fpzo_ray.bench.study_page`. This "
        "record:",
        "",
        f"- command: `{saved['command']}`",
        f"- commit {version}, {saved['date']}",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"Python {machine['python']}, torch {machine['torch']}",
        f"- wall time: {r['wall_s'] / 60:.1f} min ({r['sessions']} session(s)); trials: {statuses}",
        "",
        f"**Answer: {overall(r['claim'])}.**",
        "",
    ]
    for partition, comparison in r["claim"].items():
        lines.append(f"- {partition}, equal rounds: {verdict(comparison['equal_rounds'])}.")
        flops = comparison["equal_flops"]
        lines.append(
            f"- {partition}, equal client FLOPs ({flops['flops_budget'] / 1e9:.0f} GFLOPs, "
            f"what NTK-SAP spent): {verdict(flops)}."
        )
    lines += [
        "",
        "## Final test accuracy",
        "",
        "Mean +- 95 % Student-t interval over the fresh seeds; client FLOPs and upload are "
        "every client's, pruning phase included (NTK-SAP's clients upload a saliency per "
        "weight in each of its 10 pruning iterations: most of its upload); memory is the "
        "largest client's peak; s/round is a run's wall time per round (two runs sharing the "
        "2 cores, evaluation and pruning included).",
        "",
        *_table(
            [
                "method",
                "partition",
                "server lr",
                "test accuracy",
                "client GFLOPs",
                "vs dense ZO",
                "peak client memory",
                "upload",
                "s/round",
            ],
            [
                [
                    LABELS.get(c["method"], c["method"]),
                    str(c["partition"]) + (f" {c['alpha']}" if c["alpha"] is not None else ""),
                    f"{c['lr']:g}",
                    _accuracy(c),
                    f"{c['flops'] / 1e9:.0f}",
                    f"{c['flops'] / _dense(cells, c)['flops']:.2f}",
                    f"{c['peak_client_bytes'] / 1e6:.2f} MB",
                    f"{c['upload_bytes'] / 1e6:.2f} MB",
                    f"{c['round_cost_s']:.3f}",
                ]
                for c in cells
            ],
        ),
        "",
        "## NTK-SAP 90 % minus dense ZO, paired by seed",
        "",
        *_table(
            ["partition", "equal rounds", "equal client FLOPs", "seeds to separate (rounds)"],
            [
                [
                    p,
                    _interval(c["equal_rounds"]),
                    f"{_interval(c['equal_flops'])} at {c['equal_flops']['flops_budget'] / 1e9:.0f}"
                    " GFLOPs",
                    str(c["equal_rounds"].get("seeds_to_separate") or "-"),
                ]
                for p, c in r["claim"].items()
            ],
        ),
        "",
        "## The search: final validation accuracy per server rate (seed 0)",
        "",
        *_search_table(cells),
        "",
        f"## Had the runs flattened? Final test accuracy minus the one at round "
        f"{cells[0]['converged']['from_round']}",
        "",
        *_table(
            ["cell", "change over the last quarter (paired by seed)"],
            [[_cell_name(c), _interval(c["converged"])] for c in cells],
        ),
        "",
        "## Figures",
        "",
        f"![Test accuracy by round]({FIGURES}/accuracy_vs_round.png)",
        "",
        f"![Test accuracy by client FLOPs]({FIGURES}/accuracy_vs_client_flops.png)",
        "",
        *what_would_separate(r),
        "## The full study's cost",
        "",
        *full_study_cost(cells),
        "",
    ]
    return "\n".join(lines)


def _dense(cells: list[dict[str, Any]], cell: dict[str, Any]) -> dict[str, Any]:
    return next(
        c
        for c in cells
        if c["method"] == BASELINE
        and (c["partition"], c["alpha"]) == (cell["partition"], cell["alpha"])
    )


def _cell_name(cell: dict[str, Any]) -> str:
    alpha = f" {cell['alpha']}" if cell["alpha"] is not None else ""
    return f"{LABELS.get(cell['method'], cell['method'])}, {cell['partition']}{alpha}"


def _search_table(cells: list[dict[str, Any]]) -> list[str]:
    rates = sorted({s["lr"] for c in cells for s in c["search"]})
    rows = []
    for c in cells:
        by_rate = {s["lr"]: s for s in c["search"]}
        row = [_cell_name(c)]
        for rate in rates:
            s = by_rate.get(rate)
            value = "" if s is None or s["val_accuracy"] is None else f"{s['val_accuracy']:.4f}"
            row.append(f"**{value}**" if rate == c["lr"] else value)
        rows.append(row)
    return _table(["cell", *(f"{rate:g}" for rate in rates)], rows)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m fpzo_ray.bench.study_page``."""
    return page_parser("python -m fpzo_ray.bench.study_page", __doc__)


def main(argv: list[str] | None = None) -> int:
    return write_or_check(PAGE, page(), build_parser().parse_args(argv).check)


if __name__ == "__main__":
    raise SystemExit(main())
