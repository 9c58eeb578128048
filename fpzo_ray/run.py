"""``python -m fpzo_ray.run [--config FILE] [--set key=value ...]``: one federated run.

The same engine as a sweep trial (server and worker actors on Ray), without Tune: handy to
try a configuration. Metrics go to MLflow (one run) and a line per evaluation is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from fpzo_ray.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    describe,
    merge,
    parse_overrides,
    read_yaml,
)
from fpzo_ray.preflight import preflight


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fpzo_ray.run", description=__doc__,
        epilog="configuration fields (section.key = default [rule]):\n" + describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with overrides of the defaults")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one value, e.g. pruning.sparsity=0.8")
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args(argv)
    from fpzo_ray.tracking import default_results_dir

    results_dir = Path(args.results_dir) if args.results_dir else default_results_dir()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        raw = read_yaml(args.config) if args.config else {}
        cfg = config_from_dict(merge(raw, parse_overrides(args.set)))
        preflight([cfg])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2

    import pandas as pd
    import yaml

    from fpzo_ray.sim.federation import run_federated
    from fpzo_ray.sweep import init_ray
    from fpzo_ray.tracking import (
        SETUP_KEY,
        MLflowTracker,
        resolve_tracking_uri,
        round_metrics,
        ui_command,
    )

    results_dir.mkdir(parents=True, exist_ok=True)
    tracker = MLflowTracker(resolve_tracking_uri(results_dir), cfg.tracking.experiment,
                            results_dir)
    run_name = f"run_{cfg.pruning_method}_s{cfg.pruning.sparsity}_K{cfg.zo.num_perturbations}"
    run_id = tracker.start_run(run_name, config_to_dict(cfg))
    init_ray()
    started = time.time()

    def report(metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        """Log a round (server checkpoints are a sweep feature; a single run ignores them)."""
        if SETUP_KEY in metrics:
            tracker.log_params(run_id, {SETUP_KEY: metrics[SETUP_KEY]})
            setup = metrics[SETUP_KEY]
            print(f"pruning: {setup['pruning_method']}, kept fraction {setup['kept_fraction']:.3f},"
                  f" {setup['num_trained']} trained coordinates")
        tracker.log_metrics(run_id, round_metrics(metrics), int(metrics["round"]))
        if "test_accuracy" in metrics:
            val = (f"val accuracy {metrics['val_accuracy']:.4f}  "
                   if "val_accuracy" in metrics else "")
            print(f"round {metrics['round']:4d}  {val}test accuracy "
                  f"{metrics['test_accuracy']:.4f}  test loss {metrics['test_loss']:.4f}  "
                  f"client GFLOPs {metrics['cumulative_client_forward_flops'] / 1e9:.2f}  "
                  f"({time.time() - started:.0f} s)")

    try:
        records = run_federated(cfg, report)
    except BaseException as exc:
        tracker.end_run(run_id, failed=True, error=f"{type(exc).__name__}: {exc}")
        raise
    with tempfile.TemporaryDirectory() as tmp:
        pd.DataFrame(records).to_csv(Path(tmp) / "clients.csv", index=False)
        (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        tracker.log_artifact(run_id, Path(tmp) / "clients.csv")
        tracker.log_artifact(run_id, Path(tmp) / "config.yaml")
    tracker.end_run(run_id)
    print(f"MLflow run {run_id} in {tracker.tracking_uri}\nOpen the MLflow UI:  "
          f"{ui_command(tracker.tracking_uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
