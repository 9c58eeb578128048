"""``python -m fpzo_ray.sweep [SWEEP.yaml]``: a Ray Tune grid of federated runs.

A sweep file holds a ``name``, a ``base`` configuration (overrides of the defaults in
``config.py``), a ``grid`` of dotted keys to lists of values, and ``max_concurrent_trials``.
Every trial configuration is validated before Ray starts. Each trial is one whole federated
run (``sim.federation``) inside a placement group holding its server and worker actors; the
driver mirrors every trial into MLflow and ends by printing (and saving as CSV) a table of the
trials. Locally it starts Ray itself; under ``ray job submit`` it joins the job's cluster.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fpzo_ray.config import (
    ConfigError,
    RunConfig,
    config_from_dict,
    config_to_dict,
    merge,
    parse_overrides,
    read_yaml,
    set_dotted,
)
from fpzo_ray.data import check_partitions

DEFAULT_SWEEP = "sweeps/quick.yaml"
_SWEEP_KEYS = ("name", "description", "base", "grid", "max_concurrent_trials")


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    max_concurrent_trials: int

    def trial_overrides(self) -> list[dict[str, Any]]:
        """One ``{dotted key: value}`` per grid point, in grid order."""
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]

    def trial_config(self, point: dict[str, Any]) -> dict[str, Any]:
        tree = merge(self.base, {})
        for key, value in point.items():
            set_dotted(tree, key, value)
        return tree

    def validated_configs(self) -> list[RunConfig]:
        """Every trial's configuration, validated: the first bad one raises ConfigError."""
        return [config_from_dict(self.trial_config(p)) for p in self.trial_overrides()]


def find_sweep_file(path: str) -> Path:
    """``path`` as given, else relative to the project root (so the default works anywhere)."""
    given = Path(path)
    if given.is_file() or given.is_absolute():
        return given
    beside_package = Path(__file__).resolve().parent.parent / path
    return beside_package if beside_package.is_file() else given


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    raw = read_yaml(path)
    unknown = sorted(set(raw) - set(_SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"config error: {unknown[0]}: unknown sweep key, "
                          f"allowed: {', '.join(_SWEEP_KEYS)}")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        raise ConfigError("config error: grid: must map dotted keys to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"config error: grid.{key}: got {values!r}, must be a non-empty list")
    concurrent = raw.get("max_concurrent_trials", 2)
    if isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1:
        raise ConfigError(f"config error: max_concurrent_trials: got {concurrent!r}, "
                          "must be an integer >= 1")
    # An override of a grid key pins that axis to the one value given.
    overrides = list(overrides)
    pinned = {item.split("=", 1)[0].strip() for item in overrides} & set(grid)
    base = merge(raw.get("base") or {}, parse_overrides(overrides))
    grid = {k: v for k, v in grid.items() if k not in pinned}
    spec = SweepSpec(str(raw.get("name", Path(path).stem)), base, grid, concurrent)
    spec.validated_configs()
    return spec


def _get_dotted(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _short(key: str) -> str:
    return {"zo.num_perturbations": "K", "pruning.sparsity": "sparsity",
            "data.alpha": "alpha"}.get(key, key.split(".")[-1])


def federated_trial(config: dict[str, Any]) -> None:
    """The Tune trainable: one federated run, each round reported through ``tune.report``."""
    import pandas as pd
    import yaml
    from ray import tune

    from fpzo_ray.sim.federation import run_federated

    cfg = config_from_dict(config["run"])
    trial_dir = Path(tune.get_context().get_trial_dir())
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    records = run_federated(cfg, tune.report)
    pd.DataFrame(records).to_csv(trial_dir / "clients.csv", index=False)


def trial_table(result_grid: Any, spec: SweepSpec) -> "Any":
    """One row per trial: its grid values, status and final figures."""
    import pandas as pd

    from fpzo_ray.tracking import error_summary

    rows = []
    for result in result_grid:
        run = result.config["run"] if result.config else {}
        row: dict[str, Any] = {"trial": Path(result.path).name if result.path else ""}
        for key in spec.grid:
            row[_short(key)] = _get_dotted(run, key)
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


def run_sweep(spec: SweepSpec, results_dir: Path) -> "Any":
    """Run the whole grid; returns the trial table (also saved as CSV in ``results_dir``)."""
    from ray import tune

    from fpzo_ray.sim.federation import bundles
    from fpzo_ray.tracking import MLflowTracker, MLflowTrialCallback, resolve_tracking_uri

    configs = spec.validated_configs()
    results_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri = resolve_tracking_uri(results_dir)
    tracker = MLflowTracker(tracking_uri, configs[0].tracking.experiment, results_dir)
    init_ray()

    param_space = {"run": merge(spec.base, {})}
    for key, values in spec.grid.items():
        set_dotted(param_space["run"], key, tune.grid_search(values))
    # Every trial reserves what its own configuration asks for; a grid over
    # simulation.* fields would change that per trial, which Tune's single
    # resource request cannot express, so the largest request is used.
    largest = max(configs, key=lambda c: sum(b["CPU"] for b in bundles(c)))
    trainable = tune.with_resources(federated_trial,
                                    tune.PlacementGroupFactory(bundles(largest)))

    def trial_name(trial: Any) -> str:
        parts = [f"{_short(key)}={_get_dotted(trial.config['run'], key)}" for key in spec.grid]
        return (",".join(parts) or spec.name) + f"_{trial.trial_id[-5:]}"

    experiment = f"{spec.name}_{time.strftime('%Y%m%d-%H%M%S')}"
    started = time.time()
    print(f"Sweep {spec.name!r}: {len(configs)} trials, at most {spec.max_concurrent_trials} at "
          f"a time; MLflow store {tracking_uri}", flush=True)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent_trials,
                                    trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(
            name=experiment, storage_path=str((results_dir / "ray_results").resolve()),
            callbacks=[MLflowTrialCallback(tracker, spec.name), _progress_printer(started)],
            verbose=0),
    )
    grid = tuner.fit()
    table = trial_table(grid, spec)
    csv_path = results_dir / f"{experiment}_trials.csv"
    table.to_csv(csv_path, index=False)
    print(f"\nSweep {spec.name!r}: {len(table)} trials in {time.time() - started:.0f} s")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nTrial table: {csv_path}")
    print(f"MLflow store: {tracking_uri} (experiment {configs[0].tracking.experiment!r})")
    from fpzo_ray.tracking import ui_command
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
    args = parser.parse_args(argv)
    from fpzo_ray.tracking import default_results_dir

    results_dir = Path(args.results_dir) if args.results_dir else default_results_dir()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        spec = load_sweep(find_sweep_file(args.sweep), args.set)
        check_partitions(spec.validated_configs())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    table = run_sweep(spec, results_dir)
    return 1 if (table["status"] != "OK").any() else 0


if __name__ == "__main__":
    sys.exit(main())
