"""fidelity: the paper's comparison as a fair study (``sweeps/paper_fidelity.yaml``, real MNIST).

Runs the study (or, with ``--resume``, finishes or re-reads one) through the sweep engine:
every cell's learning rate searched on the validation split, the choice repeated on fresh
seeds. Printed per cell: the chosen rate, the final test accuracy (mean and 95 % Student-t
interval over the seeds), accuracy at the smallest cell's client-FLOPs budget, client FLOPs
(everything, pruning included) and their ratio to dense ZO, upload bytes, peak client memory.

The claim, per partition: NTK-SAP 90 % minus dense ZO in test accuracy, paired by seed, at
equal rounds (both after the same rounds) and at equal client FLOPs (both read at the budget
the cheaper one spent, interpolated between evaluations); and the ablation of
``pruning.init_scaling``: ``ntk_sap_90_fan_in`` minus ``ntk_sap_90``.

Runs any study of that shape (``--study``; ``sweeps/paper_question.yaml`` is the long one
without the ablation). Last line, JSON: ``study``, ``rounds``, ``cells`` (``{method,
sparsity, partition, alpha, lr, mean, ci95, flops, peak_client_bytes, upload_bytes,
round_cost_s, search, converged}``: ``search`` each searched value's final validation
accuracy; ``converged`` the final test accuracy minus the one at three quarters of the rounds,
paired by seed; ``round_cost_s`` a trial's wall time per round, pruning phase and evaluation
included, with ``max_concurrent_trials`` trials sharing the machine), ``claim`` and
``ablation_init_scaling`` (per partition: ``equal_rounds`` and ``equal_flops``, each ``{mean,
ci95, n, seeds_to_separate}``), ``trials`` (count per status), ``wall_s`` and ``sessions``
(the study's own wall time, every session of it), ``experiment_dir``. ``--figures DIR``
copies the study's accuracy figures there.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fpzo_ray.artifacts import TIMING_FILE
from fpzo_ray.bench.common import data_root
from fpzo_ray.bench.timing import table
from fpzo_ray.config import config_from_dict
from fpzo_ray.sweep.study.statistics import Estimate, paired_difference, seeds_to_separate
from fpzo_ray.sweep.study.summary import TrialFigures, compare_cells, json_ready

STUDY_FILE = "sweeps/paper_fidelity.yaml"
HEADLINE, BASELINE, ABLATION = "ntk_sap_90", "dense_zo", "ntk_sap_90_fan_in"
#: The study's figures ``--figures`` copies (from its report, ``<experiment>/report``).
FIGURES = ("accuracy_vs_round", "accuracy_vs_client_flops")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        default=None,
        help="folder holding MNIST/raw (default: FPZO_DATA_ROOT, else ./data)",
    )
    parser.add_argument("--study", default=STUDY_FILE, help="the study file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the study (e.g. training.rounds=20 for a "
        "smoke run, study.seeds=2)",
    )
    parser.add_argument("--results-dir", default="results")
    parser.add_argument(
        "--resume",
        metavar="FOLDER",
        default=None,
        help="finish (or just re-read) a study started before: its folder",
    )
    parser.add_argument(
        "--figures",
        metavar="DIR",
        default=None,
        help="copy the study's accuracy-by-round and accuracy-by-client-FLOPs figures here",
    )


def _learning_rate(values: Mapping[str, Any], prefix: str = "") -> float | None:
    """The searched rate (ZO: the server's; BP FedAvg: the clients') among ``values``, under
    ``prefix`` (the summary's ``chosen.``)."""
    for key in ("training.server_lr", "training.client_lr"):
        value = values.get(prefix + key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return float(value)
    return None


def _study_time(experiment_dir: Path) -> dict[str, Any]:
    saved = json.loads((experiment_dir / TIMING_FILE).read_text())
    return {"wall_s": float(saved["wall_s"]), "sessions": int(saved["sessions"])}


def _estimate(estimate: Estimate) -> dict[str, Any]:
    return {"mean": estimate.mean, "ci95": estimate.ci95, "n": estimate.n}


def _cell_extras(trials: list[TrialFigures], rounds: int) -> dict[str, Any]:
    """A cell's search (each value's final validation accuracy), whether its repeats had
    flattened (final test accuracy minus the one at three quarters of the rounds, paired by
    seed) and its trials' wall time per round."""
    search = [
        {
            "lr": _learning_rate(t.hyperparameters),
            "val_accuracy": t.final("val_accuracy"),
            "status": t.status,
        }
        for t in trials
        if t.phase == "search"
    ]
    repeats = [t for t in trials if t.phase == "repeat" and t.status == "OK"]
    late = (3 * rounds) // 4
    converged = paired_difference(
        {t.seed: t.final("test_accuracy") for t in repeats},
        {t.seed: t.at_round("test_accuracy", late) for t in repeats},
    )
    costs = [t.wall_s / t.rounds for t in trials if t.status == "OK" and t.rounds > 0]
    return {
        "search": search,
        "converged": {**_estimate(converged), "from_round": late},
        "round_cost_s": sum(costs) / len(costs) if costs else math.nan,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fpzo_ray.preflight import preflight
    from fpzo_ray.sweep.phases import run_sweep
    from fpzo_ray.sweep.spec import find_sweep_file, load_saved_spec, load_sweep

    if args.resume:
        folder = Path(args.resume).resolve()
        spec, results_dir = load_saved_spec(folder), folder.parent.parent
    else:
        root = args.data_root or str(data_root())
        spec = load_sweep(find_sweep_file(args.study), [f"data.root={root}", *args.set])
        results_dir, folder = Path(args.results_dir), None
    preflight(spec.validated_configs())
    # a finished study re-read: its wall time is the one it took, not the re-reading's
    finished = folder is not None and (folder / "summary.csv").is_file()
    took = _study_time(folder) if finished and folder is not None else None
    outcome = run_sweep(spec, results_dir, folder)
    if outcome.interrupted:
        raise SystemExit(
            f"the study was interrupted; finish it with: python -m fpzo_ray.bench "
            f"fidelity --resume {outcome.experiment_dir}"
        )

    repeats: dict[str, list[TrialFigures]] = {}
    by_cell: dict[str, list[TrialFigures]] = {}
    for f in outcome.figures:
        by_cell.setdefault(f.cell, []).append(f)
        if f.phase == "repeat":
            repeats.setdefault(f.cell, []).append(f)
    rounds = config_from_dict(spec.run_config(spec.cells()[0], {})).training.rounds
    cells: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    claim: dict[str, dict[str, Any]] = {}
    ablation: dict[str, dict[str, Any]] = {}
    by_coordinates = {}
    for cell, row in zip(spec.cells(), outcome.summary.to_dict(orient="records")):
        cfg = config_from_dict(spec.run_config(cell, {}))
        method, partition = cell.coordinates["method"], cell.coordinates["partition"]
        by_coordinates[(method, partition)] = cell.label
        entry = {
            "method": method,
            "sparsity": cfg.pruning.sparsity,
            "partition": cfg.data.partition,
            "alpha": cfg.data.alpha if cfg.data.partition == "dirichlet" else None,
            "lr": _learning_rate(row, "chosen."),
            "mean": row["test_accuracy_mean"],
            "ci95": row["test_accuracy_ci95"],
            "flops": row["client_flops_mean"],
            "peak_client_bytes": row["peak_client_memory_bytes"],
            "upload_bytes": row["upload_bytes_mean"],
            **_cell_extras(by_cell.get(cell.label, []), rounds),
        }
        cells.append(entry)
        rows.append(
            {
                **entry,
                "cell_partition": partition,
                "seeds": row["seeds"],
                "upload_MB": row["upload_bytes_mean"] / 1e6,
                "peak_client_MB": row["peak_client_memory_bytes"] / 1e6,
            }
        )
    dense_flops = {r["cell_partition"]: r["flops"] for r in rows if r["method"] == BASELINE}
    for row in rows:
        if row["cell_partition"] in dense_flops:
            row["flops_vs_dense_zo"] = row["flops"] / dense_flops[row["cell_partition"]]
    partitions = list(dict.fromkeys(c.coordinates["partition"] for c in spec.cells()))
    for partition in partitions:
        for out, (a, b) in ((claim, (HEADLINE, BASELINE)), (ablation, (ABLATION, HEADLINE))):
            first = by_coordinates.get((a, partition))
            second = by_coordinates.get((b, partition))
            if first is not None and second is not None:
                out[partition] = compare_cells(repeats.get(first, []), repeats.get(second, []))
                for side in out[partition].values():
                    side["seeds_to_separate"] = seeds_to_separate(
                        Estimate(side["mean"], side["std"], side["ci95"], side["n"])
                    )

    for row in rows:
        row["test_accuracy"] = (
            f"{row['mean']:.4f} +- {row['ci95']:.4f}"
            if math.isfinite(row["ci95"])
            else f"{row['mean']:.4f}"
        )
        row["GFLOPs"] = row["flops"] / 1e9
    print(
        f"\n{spec.name}: final test accuracy, mean +- 95 % CI over fresh seeds "
        f"({outcome.experiment_dir})"
    )
    print(
        table(
            rows,
            [
                "method",
                "cell_partition",
                "lr",
                "seeds",
                "test_accuracy",
                "GFLOPs",
                "flops_vs_dense_zo",
                "upload_MB",
                "peak_client_MB",
            ],
        )
    )
    for title, comparison in (
        (f"{HEADLINE} - {BASELINE}", claim),
        (f"ablation {ABLATION} - {HEADLINE}", ablation),
    ):
        print(f"\n{title} (paired by seed; mean +- 95 % CI):")
        for partition, result in comparison.items():
            r, f = result["equal_rounds"], result["equal_flops"]
            print(
                f"  {partition:15s} equal rounds {r['mean']:+.4f} +- {r['ci95']:.4f} (n={r['n']})"
                f"   equal client FLOPs ({f['flops_budget'] / 1e9:.4g} GFLOPs) "
                f"{f['mean']:+.4f} +- {f['ci95']:.4f} (n={f['n']})"
            )
    if args.figures:
        target = Path(args.figures)
        target.mkdir(parents=True, exist_ok=True)
        for name in FIGURES:
            shutil.copy(outcome.experiment_dir / "report" / "figures" / f"{name}.png", target)
    return json_ready(
        {
            "study": spec.name,
            "rounds": rounds,
            "cells": cells,
            "claim": claim,
            "ablation_init_scaling": ablation,
            "trials": dict(Counter(f.status for f in outcome.figures)),
            # the study's own wall time, every session of it (a resumed one adds up)
            **(took or _study_time(outcome.experiment_dir)),
            "experiment_dir": str(outcome.experiment_dir),
        }
    )
