"""``python -m fpzo_ray.run [--config FILE] [--set key=value ...]``: one federated run.

The same engine as a sweep trial (server and worker actors on Ray), without Tune: handy to
try a configuration. Metrics go to MLflow (one run) and a line per evaluation is printed.

Every run has a folder, ``<results>/runs/<name>_<time>/``: the resolved configuration, the
newest two checkpoints of the server state (every ``simulation.checkpoint_every`` rounds),
and at the end ``clients.csv``, ``model.pt`` (the final model, ``models.load_pruned``) and
``figures/`` (``report.run_figures``), all logged to the run. A run that is interrupted
(Ctrl-C, SIGTERM) ends its MLflow run KILLED and prints how to go on; ``--resume FOLDER``
continues it from its newest readable checkpoint, in the same MLflow run, without logging any
round twice.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fpzo_ray.config import (
    ConfigError,
    RunConfig,
    config_from_dict,
    config_to_dict,
    describe,
    merge,
    parse_overrides,
    read_yaml,
    require_utf8_paths,
)
from fpzo_ray.logs import configure as configure_logging
from fpzo_ray.sim.ray_session import add_address_option, use_address_option
from fpzo_ray.stopping import STOPPED_EXIT_CODE, install_stop_handlers

CONFIG_FILE = "config.yaml"
RUN_ID_FILE = "mlflow_run_id"
KEEP_CHECKPOINTS = 2


class RunFolder:
    """Where a run keeps what it needs to be resumed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def checkpoints(self) -> list[Path]:
        """Checkpoint folders, newest first."""
        return sorted(self.path.glob("checkpoint_*"), reverse=True)

    def save(self, state: dict[str, Any]) -> None:
        from fpzo_ray.sim.checkpoint import STATE_FILE, save_server_state

        save_server_state(state, self.path / f"checkpoint_{state['rounds_done']:06d}" / STATE_FILE)
        for old in self.checkpoints()[KEEP_CHECKPOINTS:]:
            shutil.rmtree(old, ignore_errors=True)

    def config(self) -> RunConfig:
        if not (self.path / CONFIG_FILE).is_file() or not (self.path / RUN_ID_FILE).is_file():
            raise ConfigError(
                f"config error: --resume: {self.path} is not a run folder (no "
                f"{CONFIG_FILE} and {RUN_ID_FILE})"
            )
        return config_from_dict(read_yaml(self.path / CONFIG_FILE))

    def resume_command(self) -> str:
        return f"{sys.executable} -m fpzo_ray.run --resume {self.path}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fpzo_ray.run",
        description=__doc__,
        epilog="configuration fields (section.key = default [rule]):\n" + describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file with overrides of the defaults")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one value, e.g. pruning.sparsity=0.8",
    )
    parser.add_argument("--results-dir", default=None)
    parser.add_argument(
        "--resume",
        metavar="FOLDER",
        default=None,
        help="continue an interrupted run: its run folder",
    )
    add_address_option(parser)
    args = parser.parse_args(argv)
    install_stop_handlers()  # before anything that takes time: a stop then loses nothing
    configure_logging()
    use_address_option(args)
    from fpzo_ray.resources import check_resources
    from fpzo_ray.tracking import default_results_dir, prepare_results_dir

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        paths = {"--config": args.config, "--results-dir": args.results_dir}
        require_utf8_paths({**paths, "--resume": args.resume})
        if args.resume:
            folder = RunFolder(Path(args.resume).resolve())
            cfg = folder.config()
            results_dir = folder.path.parent.parent  # <results>/runs/<run>
        else:
            raw = read_yaml(args.config) if args.config else {}
            cfg = config_from_dict(merge(raw, parse_overrides(args.set)))
            results_dir = Path(args.results_dir) if args.results_dir else default_results_dir()
            folder = None
        from fpzo_ray.preflight import preflight  # torch: imported once the files are valid

        preflight([cfg])
        check_resources([cfg])
        prepare_results_dir(results_dir)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # stopped while checking: nothing was started
        print("Stopped before any work.", file=sys.stderr)
        return STOPPED_EXIT_CODE
    return _run(cfg, results_dir, folder)


def _run(cfg: RunConfig, results_dir: Path, folder: RunFolder | None) -> int:
    import pandas as pd
    import yaml

    from fpzo_ray.failure import root_cause, stopped_on_error
    from fpzo_ray.models.pruned import MODEL_FILE, save_pruned
    from fpzo_ray.sim.checkpoint import newest_readable
    from fpzo_ray.sim.federation import run_federated
    from fpzo_ray.sim.ray_session import init_ray
    from fpzo_ray.tracking import (
        SETUP_KEY,
        MLflowTracker,
        log_run_figures,
        resolve_tracking_uri,
        round_metrics,
        ui_command,
    )

    init_ray()  # before any MLflow run is opened: a stop while Ray starts leaves none RUNNING
    tracker = MLflowTracker(resolve_tracking_uri(results_dir), cfg.tracking.experiment, results_dir)
    state, logged = None, 0
    if folder is None:
        method = cfg.pruning_method.split(":")[-1]  # an import path's attribute: a file name
        run_name = f"run_{method}_s{cfg.pruning.sparsity}_K{cfg.zo.num_perturbations}"
        folder = RunFolder(
            (results_dir / "runs" / f"{run_name}_{time.strftime('%Y%m%d-%H%M%S')}").resolve()
        )
        folder.path.mkdir(parents=True, exist_ok=True)
        (folder.path / CONFIG_FILE).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        run_id = tracker.start_run(run_name, config_to_dict(cfg))
        (folder.path / RUN_ID_FILE).write_text(run_id)
    elif (folder.path / "clients.csv").is_file():
        print(f"The run in {folder.path} finished every round: nothing to resume.")
        return 0
    else:
        run_id = (folder.path / RUN_ID_FILE).read_text().strip()
        # Read (and checked) before the run is RUNNING again: a bad checkpoint is a warning
        # and a fallback, and a stop while a large one loads leaves the run as it was.
        state = newest_readable(folder.checkpoints(), rounds=cfg.training.rounds)
        logged = tracker.reopen(run_id)
        print(
            f"Resuming after round {state['rounds_done'] if state else 0} "
            f"(MLflow has the rounds up to {logged})",
            flush=True,
        )
    print(f"Run folder: {folder.path}", flush=True)
    started = time.time()
    last_round = 0

    def report(metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        """Log a round (once, even when a resumed run reports it again; queued, off the
        round loop), then keep its checkpoint once every round before it is in the store: a
        round whose logging failed is never behind the newest checkpoint."""
        nonlocal last_round
        last_round = int(metrics["round"])
        if last_round > logged:
            _log_round(metrics)
        if state is not None:
            tracker.flush()
            folder.save(state)

    def _log_round(metrics: dict[str, Any]) -> None:
        if SETUP_KEY in metrics:
            tracker.queue(tracker.log_params, run_id, {SETUP_KEY: metrics[SETUP_KEY]})
            setup = metrics[SETUP_KEY]
            print(
                f"pruning: {setup['pruning_method']}, kept fraction {setup['kept_fraction']:.3f},"
                f" {setup['num_trained']} trained coordinates"
            )
        tracker.queue_metrics(run_id, round_metrics(metrics), last_round)
        if "test_accuracy" in metrics:
            val = (
                f"val accuracy {metrics['val_accuracy']:.4f}  " if "val_accuracy" in metrics else ""
            )
            print(
                f"round {metrics['round']:4d}  {val}test accuracy "
                f"{metrics['test_accuracy']:.4f}  test loss {metrics['test_loss']:.4f}  "
                f"client GFLOPs {metrics['cumulative_client_forward_flops'] / 1e9:.2f}  "
                f"({time.time() - started:.0f} s)"
            )

    try:
        result = run_federated(cfg, report, resume_state=state)
        tracker.flush()
        save_pruned(result.model, folder.path / MODEL_FILE)
        pd.DataFrame(result.records).to_csv(folder.path / "clients.csv", index=False)
        for name in ("clients.csv", CONFIG_FILE, MODEL_FILE):
            tracker.log_artifact(run_id, folder.path / name)
        log_run_figures(tracker, run_id, cfg, folder.path)
    except KeyboardInterrupt:
        tracker.end_run_if_possible(run_id, "KILLED", f"interrupted after round {last_round}")
        print(
            f"\nInterrupted after round {last_round}. Resume with:\n  {folder.resume_command()}",
            file=sys.stderr,
        )
        return STOPPED_EXIT_CODE
    except Exception as exc:  # noqa: BLE001 - any error after the start: one line, resumable
        tracker.end_run_if_possible(run_id, "FAILED", root_cause(exc))
        print(stopped_on_error(exc, folder.path, folder.resume_command()), file=sys.stderr)
        return 1
    tracker.end_run(run_id)
    print(
        f"MLflow run {run_id} in {tracker.tracking_uri}\nOpen the MLflow UI:  "
        f"{ui_command(tracker.tracking_uri, tracker.experiment_id)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
