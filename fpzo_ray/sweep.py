"""``python -m fpzo_ray.sweep [SWEEP.yaml]``: a Ray Tune grid of federated runs.

A sweep file (``sweep_spec``) holds a ``name``, a ``base`` configuration, a ``grid`` of dotted
keys to lists of values, and ``max_concurrent_trials``. Every trial configuration is validated
before Ray starts. Each trial is one whole federated run (``trial``) inside a placement group
holding its driver, server and worker actors; the driver mirrors every trial into MLflow and
ends by printing (and saving as CSV) a table of the trials. Locally it starts Ray itself;
under ``ray job submit`` it joins the job's cluster.

``--resume FOLDER`` continues an interrupted sweep (its Tune experiment folder, printed at
the start): finished trials are kept, unfinished ones restart from their last checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from fpzo_ray.config import ConfigError, config_from_dict, merge, set_dotted
from fpzo_ray.preflight import preflight
from fpzo_ray.sweep_spec import (
    DEFAULT_SWEEP,
    SweepSpec,
    find_sweep_file,
    get_dotted,
    load_saved_spec,
    load_sweep,
    save_spec,
    short_name,
)

__all__ = ["SweepSpec", "find_sweep_file", "load_sweep", "run_sweep", "main"]


def trial_table(result_grid: Any, spec: SweepSpec) -> "Any":
    """One row per trial: its grid values, status and final figures."""
    import pandas as pd

    from fpzo_ray.tracking import error_summary

    rows = []
    for result in result_grid:
        run = result.config["run"] if result.config else {}
        row: dict[str, Any] = {"trial": Path(result.path).name if result.path else ""}
        for key in spec.grid:
            row[short_name(key)] = get_dotted(run, key)
        metrics = result.metrics or {}
        history = result.metrics_dataframe
        best = (history["test_accuracy"].max()
                if history is not None and "test_accuracy" in history else float("nan"))
        row.update(
            status="ERROR" if result.error else "OK",
            rounds=metrics.get("round"),
            test_accuracy=metrics.get("test_accuracy"),
            best_test_accuracy=best,
            kept_fraction=(history["setup/kept_fraction"].dropna().iloc[0]
                           if history is not None and "setup/kept_fraction" in history
                           else None),
            client_forward_gflops=metrics.get("cumulative_client_forward_flops", 0) / 1e9,
            upload_kib=metrics.get("cumulative_upload_bytes", 0) / 1024,
            wall_s=metrics.get("time_total_s"),
        )
        if result.error:
            row["error"] = error_summary(str(result.error))[:200]
        rows.append(row)
    return pd.DataFrame(rows)


def _progress_printer(started: float) -> Any:
    """A Tune callback printing one line per trial event instead of Tune's status tables."""
    from ray.tune import Callback

    from fpzo_ray.tracking import error_summary, trial_error_text

    class ProgressPrinter(Callback):
        def _say(self, trial: Any, text: str) -> None:
            print(f"[{time.time() - started:6.0f} s] {trial}: {text}", flush=True)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._say(trial, "started")

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            rounds = config_from_dict(trial.config["run"]).training.rounds
            r = int(result.get("round", 0))
            if "test_accuracy" in result and (r % max(1, rounds // 4) == 0 or r == rounds):
                self._say(trial, f"round {r}/{rounds}, test accuracy "
                                 f"{result['test_accuracy']:.4f}")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            self._say(trial, "finished")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._say(trial, "FAILED: " + error_summary(trial_error_text(trial)))

    return ProgressPrinter()


def init_ray() -> None:
    """Join the cluster of ``RAY_ADDRESS`` (set by ``ray job submit``), or start Ray locally."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        ray.init(include_dashboard=False)


def _pin_workers(spec: SweepSpec) -> SweepSpec:
    """Resolve ``simulation.num_workers: 0`` (auto) once, in the driver, for every trial."""
    from fpzo_ray.sim.federation import resolve_num_workers

    configs = spec.validated_configs()
    if all(c.simulation.num_workers > 0 for c in configs):
        return spec
    count = min(resolve_num_workers(c, concurrent_runs=spec.max_concurrent_trials)
                for c in configs)
    base = merge(spec.base, {"simulation": {"num_workers": count}})
    grid = {k: v for k, v in spec.grid.items() if k != "simulation.num_workers"}
    return SweepSpec(spec.name, base, grid, spec.max_concurrent_trials)


def run_sweep(spec: SweepSpec, results_dir: Path, resume: Path | None = None) -> Any:
    """Run (or resume) the whole grid; returns the trial table, also saved as CSV."""
    from ray import tune

    from fpzo_ray.sim.federation import bundles
    from fpzo_ray.tracking import (
        MLflowTracker,
        MLflowTrialCallback,
        resolve_tracking_uri,
        ui_command,
    )
    from fpzo_ray.trial import federated_trial

    results_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri = resolve_tracking_uri(results_dir)
    init_ray()
    if resume is None:
        spec = _pin_workers(spec)
    configs = spec.validated_configs()
    storage = (results_dir / "ray_results").resolve()
    experiment = resume.name if resume else f"{spec.name}_{time.strftime('%Y%m%d-%H%M%S')}"
    save_spec(spec, storage / experiment)

    # Every trial reserves what its own configuration asks for; a grid over simulation.*
    # fields would change that per trial, which Tune's single resource request cannot
    # express, so the largest request is used.
    largest = max(configs, key=lambda c: sum(b["CPU"] for b in bundles(c)))
    strategy = "SPREAD" if largest.simulation.placement == "spread" else "PACK"
    trainable = tune.with_resources(
        federated_trial, tune.PlacementGroupFactory(bundles(largest), strategy=strategy))
    started = time.time()
    print(f"Sweep {spec.name!r}: {len(configs)} trials, at most {spec.max_concurrent_trials} at "
          f"a time; Tune experiment {storage / experiment}; MLflow store {tracking_uri}",
          flush=True)
    if resume is not None:
        # The run config, callbacks included, is restored from the experiment folder; the
        # MLflow callback finds each trial's run again by its trial-id tag.
        tuner = tune.Tuner.restore(str(storage / experiment), trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tracker = MLflowTracker(tracking_uri, configs[0].tracking.experiment, results_dir)

        def trial_name(trial: Any) -> str:
            parts = [f"{short_name(k)}={get_dotted(trial.config['run'], k)}" for k in spec.grid]
            return (",".join(parts) or spec.name) + f"_{trial.trial_id[-5:]}"

        param_space = {"run": merge(spec.base, {})}
        for key, values in spec.grid.items():
            set_dotted(param_space["run"], key, tune.grid_search(values))
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent_trials,
                                        trial_name_creator=trial_name,
                                        trial_dirname_creator=trial_name),
            run_config=tune.RunConfig(
                name=experiment, storage_path=str(storage), verbose=0,
                callbacks=[MLflowTrialCallback(tracker, spec.name), _progress_printer(started)]))
    grid = tuner.fit()
    table = trial_table(grid, spec)
    csv_path = results_dir / f"{experiment}_trials.csv"
    table.to_csv(csv_path, index=False)
    print(f"\nSweep {spec.name!r}: {len(table)} trials in {time.time() - started:.0f} s")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nTrial table: {csv_path}")
    print(f"MLflow store: {tracking_uri} (experiment {configs[0].tracking.experiment!r})")
    print(f"Open the MLflow UI:  {ui_command(tracking_uri)}")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpzo_ray.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", nargs="?", default=DEFAULT_SWEEP, help="sweep YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base config value for every trial, e.g. "
                             "training.rounds=50")
    parser.add_argument("--results-dir", default=None,
                        help="where the MLflow store, Tune results and trial table go")
    parser.add_argument("--resume", metavar="FOLDER", default=None,
                        help="continue an interrupted sweep: its Tune experiment folder")
    args = parser.parse_args(argv)
    from fpzo_ray.tracking import default_results_dir

    results_dir = Path(args.results_dir) if args.results_dir else default_results_dir()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    resume = Path(args.resume).resolve() if args.resume else None
    try:
        if resume is not None:
            spec = load_saved_spec(resume)
            results_dir = resume.parent.parent  # <results>/ray_results/<experiment>
        else:
            spec = load_sweep(find_sweep_file(args.sweep), args.set)
        preflight(spec.validated_configs())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    table = run_sweep(spec, results_dir, resume)
    return 1 if (table["status"] != "OK").any() else 0


if __name__ == "__main__":
    sys.exit(main())
