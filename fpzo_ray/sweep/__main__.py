"""``python -m fpzo_ray.sweep [SWEEP.yaml]``: a grid, a search or a study of federated runs.

The sweep file (``sweep.spec``) says which cells to run, what to search in each and whether to
repeat each cell's choice on fresh seeds. Every trial configuration is validated before Ray
starts. The phases run one after the other, each as one Ray Tune experiment (trials of all
cells share the cluster, at most ``max_concurrent_trials`` at a time); each trial is one whole
federated run (``sweep.trial``) inside a placement group holding its driver, server and workers:

1. ``grid`` or ``search``: every cell's candidates; a search picks each cell's best candidate
   on its validation metric (``selection.json``), optionally stopping weak ones early (ASHA);
2. ``repeat`` (a study): each cell's choice on fresh seeds; the per-cell summary gives means
   and 95 % Student-t intervals.

The driver mirrors everything into MLflow (one parent run per sweep, one child run per trial)
and ends by printing the trial and summary tables (also saved as CSV and JSON beside the
Tune experiments, and logged to the parent run). Locally it starts Ray itself; under
``ray job submit`` it joins the job's cluster.

``--resume FOLDER`` continues an interrupted sweep (its experiment folder, printed at the
start): finished trials are kept, unfinished ones restart from their last checkpoint, a
finished search keeps its choices, and the summary is the one an uninterrupted sweep gives.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fpzo_ray.artifacts import SPEC_FILE, TRACKING_FILE
from fpzo_ray.config import ConfigError, refuse_with_resume, require_utf8_paths
from fpzo_ray.logs import configure as configure_logging
from fpzo_ray.report.sources import read_text
from fpzo_ray.sim.ray.ray_session import (
    add_address_option,
    check_local_ray_temp_dir,
    use_address_option,
)
from fpzo_ray.stopping import STOPPED_EXIT_CODE, install_stop_handlers
from fpzo_ray.storage import LocalCopy, Storage, check_writable, open_resumed, resolve_storage
from fpzo_ray.sweep.phases import run_sweep
from fpzo_ray.sweep.spec import (
    DEFAULT_SWEEP,
    SweepSpec,
    find_sweep_file,
    load_saved_spec,
    load_sweep,
)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m fpzo_ray.sweep``."""
    parser = argparse.ArgumentParser(
        prog="python -m fpzo_ray.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sweep", nargs="?", default=None, help=f"sweep YAML file (default {DEFAULT_SWEEP})"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value for every trial (pins a grid axis or "
        "search dimension over it), e.g. training.rounds=50; or a "
        "sweep setting, e.g. study.seeds=5, search.num_samples=8",
    )
    parser.add_argument(
        "--results-dir", default=None, help="where the MLflow store, Tune results and tables go"
    )
    parser.add_argument(
        "--resume",
        metavar="FOLDER",
        default=None,
        help="continue an interrupted sweep: its experiment folder",
    )
    parser.add_argument(
        "--give-up-after",
        default="1800",
        metavar="SECONDS",
        help="stop (resumable) when no trial could start for this long for "
        "want of free resources; 0 = wait forever (default 1800)",
    )
    parser.add_argument(
        "--storage",
        default=None,
        metavar="PATH_OR_URI",
        help="where trials, checkpoints and artifacts persist: a path every node mounts or "
        "a URI (s3://bucket/prefix, gs://...); default: the sweep file's storage, else "
        "FPZO_STORAGE, else RESULTS_DIR/ray_results (right on one machine)",
    )
    add_address_option(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    install_stop_handlers()  # before anything that takes time: a stop then loses nothing
    configure_logging()
    use_address_option(args)
    from fpzo_ray.cluster_checks import check_storage_on_every_node, check_tracking_uri
    from fpzo_ray.failure import StoppedOnError
    from fpzo_ray.sweep.resources import ResourceWaitTimeout, check_resources, give_up_after
    from fpzo_ray.tracking import (
        default_results_dir,
        prepare_results_dir,
        resumed_results_dir,
        tracking_uri_of,
    )

    results_dir = Path(args.results_dir) if args.results_dir else default_results_dir()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    storage: Storage | None = None
    try:
        paths = {"sweep file": args.sweep, "--results-dir": args.results_dir}
        require_utf8_paths({**paths, "--resume": args.resume, "--storage": args.storage})
        give_up_after_s = give_up_after(args.give_up_after)
        if args.resume:
            refuse_with_resume({"sweep file": args.sweep is not None, "--set": bool(args.set)})
            storage = open_resumed(args.resume, SPEC_FILE, "sweep's experiment", args.storage)
            results_dir = resumed_results_dir(storage, args.results_dir, "ray_results")
            spec, tracking_uri = _resumed_spec(storage, results_dir)
        else:
            spec = load_sweep(find_sweep_file(args.sweep or DEFAULT_SWEEP), args.set)
            storage = resolve_storage(args.storage, spec.storage, results_dir / "ray_results")
            tracking_uri = tracking_uri_of(results_dir, None)
        configs = spec.validated_configs()
        from fpzo_ray.preflight import preflight  # torch: imported once the files are valid

        preflight(configs)
        check_resources(configs, spec.max_concurrent_trials)
        check_tracking_uri(tracking_uri)
        check_local_ray_temp_dir()
        check_writable(storage)
        prepare_results_dir(results_dir)
        check_storage_on_every_node(storage)  # on a cluster of several nodes
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # stopped while checking: nothing was started
        print("Stopped before any work.", file=sys.stderr)
        return STOPPED_EXIT_CODE
    try:
        if args.resume:
            outcome = run_sweep(spec, results_dir, args.resume, give_up_after_s)
        else:
            outcome = run_sweep(spec, results_dir, None, give_up_after_s, storage)
    except ResourceWaitTimeout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StoppedOnError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # outside Tune's own handling (which returns an outcome)
        return STOPPED_EXIT_CODE
    if outcome.interrupted:
        return STOPPED_EXIT_CODE
    return 1 if (outcome.trials["status"] == "ERROR").any() else 0


def _resumed_spec(experiment: Storage, results_dir: Path) -> tuple[SweepSpec, str]:
    """The spec of the sweep in ``experiment`` (its folder, a path or a URI), its own files
    fetched into its local copy, and the tracking URI it logs to."""
    from fpzo_ray.signing import restore_intact_state, state_files, verify
    from fpzo_ray.tracking import tracking_uri_of

    copy = LocalCopy(experiment, results_dir / "ray_results" / experiment.name)
    copy.pull()
    spec = load_saved_spec(copy.path)  # its signature checked first, as every file below
    verify(copy.path, [TRACKING_FILE])
    for phase in spec.phases:  # Tune's state is a pickle: none unsigned is ever restored
        if experiment.exists(phase):
            restore_intact_state(experiment.child(phase))
            verify(experiment.child(phase), state_files(experiment.child(phase)))
    return spec, tracking_uri_of(results_dir, read_text(copy.path / TRACKING_FILE))


if __name__ == "__main__":
    sys.exit(main())
