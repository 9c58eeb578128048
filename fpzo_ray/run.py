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

The run is a composition of the lifecycle's callbacks (``lifecycle``): the researcher's
(``training.callbacks``), the MLflow recorder, the run-folder writer and the console
progress, the same pieces a sweep trial composes.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fpzo_ray.artifacts import CONFIG_FILE, RUN_ID_FILE
from fpzo_ray.config import (
    ConfigError,
    RunConfig,
    config_from_dict,
    describe,
    merge,
    params_of,
    parse_overrides,
    read_yaml,
    refuse_with_resume,
    require_utf8_paths,
)
from fpzo_ray.lifecycle.recorder import RoundRecorder
from fpzo_ray.lifecycle.run_folder import RunFolder
from fpzo_ray.logs import configure as configure_logging
from fpzo_ray.sim.callbacks import RunCallback
from fpzo_ray.sim.ray.ray_session import (
    add_address_option,
    check_local_ray_temp_dir,
    use_address_option,
)
from fpzo_ray.stopping import STOPPED_EXIT_CODE, install_stop_handlers, now_stopping
from fpzo_ray.storage import LocalCopy

if TYPE_CHECKING:
    from fpzo_ray.storage import Storage


class _StartupGC:
    """Python's cyclic garbage collector held off while the run starts, then the start's
    objects frozen (:meth:`started`).

    Starting imports torch, Ray and MLflow and opens the store: about 780,000 objects that
    live as long as the process, and the collector, set off by the allocations, walks them
    again and again: 0.9 s of the 3.1 s that importing torch, Ray and MLflow and opening the
    store take here. Once started they are frozen (``gc.freeze``: never walked again, the
    little garbage of the imports kept) and collection resumes for what the rounds make.
    Reference counting frees everything else meanwhile (the preflight's model included)."""

    def __init__(self) -> None:
        self._enabled = gc.isenabled()
        self._held = True
        gc.disable()

    def started(self) -> None:
        """The run has started (or stopped): freeze what is there, collect again."""
        if self._held:
            self._held = False
            gc.freeze()
            if self._enabled:
                gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    startup = _StartupGC()
    try:
        return _main(argv, startup)
    finally:
        startup.started()


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m fpzo_ray.run``."""
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
        help="continue an interrupted run: its run folder (a path or a storage URI)",
    )
    parser.add_argument(
        "--storage",
        default=None,
        metavar="PATH_OR_URI",
        help="where run folders persist: a path or a URI (s3://bucket/prefix, gs://...), "
        "for a run that must survive its machine; default FPZO_STORAGE, else RESULTS_DIR/runs",
    )
    add_address_option(parser)
    return parser


def _main(argv: Sequence[str] | None, startup: _StartupGC) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    install_stop_handlers()  # before anything that takes time: a stop then loses nothing
    configure_logging()
    use_address_option(args)
    from fpzo_ray.cluster_checks import check_tracking_uri
    from fpzo_ray.storage import check_writable, resolve_storage
    from fpzo_ray.sweep.resources import check_resources
    from fpzo_ray.tracking import default_results_dir, prepare_results_dir, tracking_uri_of

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        paths = {"--config": args.config, "--results-dir": args.results_dir}
        require_utf8_paths({**paths, "--resume": args.resume, "--storage": args.storage})
        results_dir = Path(args.results_dir) if args.results_dir else default_results_dir()
        if args.resume:
            refuse_with_resume({"--config": args.config is not None, "--set": bool(args.set)})
            folder, results_dir = _resumed_folder(args.resume, args.results_dir, args.storage)
            cfg = folder.config()
            tracking_uri = tracking_uri_of(results_dir, _recorded_tracking_uri(folder))
            storage = folder.copy.storage
        else:
            raw = read_yaml(args.config) if args.config else {}
            cfg = config_from_dict(merge(raw, parse_overrides(args.set)))
            storage = resolve_storage(args.storage, None, results_dir / "runs")
            tracking_uri = tracking_uri_of(results_dir, None)
            folder = None
        from fpzo_ray.preflight import preflight  # torch: imported once the files are valid

        preflight([cfg])
        check_resources([cfg])
        check_tracking_uri(tracking_uri)
        check_local_ray_temp_dir()
        check_writable(storage)
        prepare_results_dir(results_dir)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # stopped while checking: nothing was started
        print("Stopped before any work.", file=sys.stderr)
        return STOPPED_EXIT_CODE
    return _run(cfg, results_dir, storage, tracking_uri, folder, startup.started)


def _resumed_folder(
    location: str, results_dir: str | None, storage_option: str | None
) -> tuple[RunFolder, Path]:
    """The run folder ``--resume`` names (a path, or a URI whose folder is fetched into
    ``<results>/runs/<run>``) and the results folder for what stays local."""
    from fpzo_ray.storage import open_resumed
    from fpzo_ray.tracking import resumed_results_dir

    storage = open_resumed(location, CONFIG_FILE, "run", storage_option)
    local_results = resumed_results_dir(storage, results_dir, "runs")
    copy = LocalCopy(storage, local_results / "runs" / storage.name)
    copy.pull(recursive=True)
    return RunFolder(copy), local_results


def _recorded_tracking_uri(folder: RunFolder) -> str | None:
    from fpzo_ray.artifacts import TRACKING_FILE
    from fpzo_ray.report.sources import read_text

    return read_text(folder.path / TRACKING_FILE)


T = TypeVar("T")


class _Background(Generic[T]):
    """``fn()`` on a daemon thread of its own, from :meth:`start`; :meth:`result` waits for it
    and returns its value or raises what it raised. Used for the slow setup that the run
    needs only later (the MLflow store: imports, schema checks, the run's creation)."""

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._call, args=(fn,), name=name, daemon=True)

    def start(self) -> _Background[T]:
        self._thread.start()
        return self

    def _call(self, fn: Callable[[], T]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def _open_store(
    cfg: RunConfig, results_dir: Path, tracking_uri: str, folder: RunFolder, run_name: str
) -> RoundRecorder:
    """Open the store and start the run (a new run) or reopen it (``run_name`` empty: a
    resumed run). Runs on a thread of its own while Ray and the actors start: importing
    MLflow and checking the store's schema take 1-3 s here, as long as Ray's start."""
    from fpzo_ray.artifacts import TRACKING_FILE
    from fpzo_ray.signing import sign
    from fpzo_ray.tracking import MLflowTracker

    tracker = MLflowTracker(tracking_uri, cfg.tracking.experiment, results_dir)
    if run_name:
        run_id = tracker.start_run(run_name, params_of(cfg))
        (folder.path / RUN_ID_FILE).write_text(run_id)
        (folder.path / TRACKING_FILE).write_text(tracking_uri)
        sign(folder.path, [RUN_ID_FILE, TRACKING_FILE])
        folder.push()  # resumable from here on, from wherever the storage is
        return RoundRecorder(tracker, run_id)
    run_id = (folder.path / RUN_ID_FILE).read_text().strip()
    return RoundRecorder(tracker, run_id, tracker.reopen(run_id))


class _RayShutdown(RunCallback):
    """Ray's processes go on a thread of their own once the run's actors are gone, while
    the other callbacks write and log the run's files (listed last: its ``on_end`` runs
    first)."""

    def __init__(self) -> None:
        self.stopping: threading.Thread | None = None

    def on_end(self, result: Any) -> None:
        from fpzo_ray.sim.ray.ray_session import stop_local_ray

        self.stopping = stop_local_ray()

    def join(self) -> None:
        if self.stopping is not None:
            self.stopping.join()  # before the exit's own ray.shutdown


def _run(
    cfg: RunConfig,
    results_dir: Path,
    storage: Storage,
    tracking_uri: str,
    folder: RunFolder | None,
    started: Callable[[], None],
) -> int:
    """The run, started so that its slow parts overlap: the MLflow store opens on a thread
    of its own while the actors import and build (the first round's record waits for it),
    and at the end Ray shuts down on a thread of its own while the model, the client
    records and the figures are written and logged. ``started()`` is called once the store
    is open (:class:`_StartupGC`)."""
    from fpzo_ray.failure import root_cause, run_failure, save_traceback, stopped_on_error
    from fpzo_ray.lifecycle.console import ConsoleProgress
    from fpzo_ray.lifecycle.recorder import MLflowRecorder
    from fpzo_ray.lifecycle.run_folder import RunFolderWriter
    from fpzo_ray.sim.callbacks import CallbackList, researcher_callbacks
    from fpzo_ray.sim.ray.federation import run_federated
    from fpzo_ray.sim.ray.ray_session import init_ray
    from fpzo_ray.tracking import ui_command

    state: dict[str, Any] | None = None
    resuming = folder is not None
    if folder is None:
        method = cfg.pruning_method.split(":")[-1]  # an import path's attribute: a file name
        run_name = f"run_{method}_s{cfg.pruning.sparsity}_K{cfg.zo.num_perturbations}"
        name = f"{run_name}_{time.strftime('%Y%m%d-%H%M%S')}"
        folder = RunFolder(LocalCopy(storage.child(name), (results_dir / "runs" / name).resolve()))
        folder.write_config(cfg, signed=True)
    elif folder.finished():
        print(f"The run in {folder.location} finished every round: nothing to resume.")
        return 0
    else:
        run_name = ""  # reopen the run
        # Read (and checked) before the run is RUNNING again: a bad checkpoint is a warning
        # and a fallback, and a stop while a large one loads leaves the run as it was.
        state = folder.restored_state(cfg)
    print(f"Run folder: {folder.location}", flush=True)
    opening: _Background[RoundRecorder] | None = None
    recorder: RoundRecorder | None = None

    def store() -> RoundRecorder:
        nonlocal recorder
        if recorder is None:
            assert opening is not None
            recorder = opening.result()
            started()
        return recorder

    console = ConsoleProgress(time.time())
    shutdown = _RayShutdown()
    callbacks = CallbackList(
        [
            *researcher_callbacks(cfg),
            MLflowRecorder(store, cfg, folder.path),  # each round before its checkpoint
            RunFolderWriter(folder),
            console,
            shutdown,
        ]
    )
    try:
        init_ray()
        # After Ray's start, not during it: ray.init imports much (pydantic, opentelemetry,
        # aiohttp, ...), some of it shared with MLflow, and packages with circular imports
        # can see a half-imported module when two threads import them at once. Opened now,
        # the store overlaps the actors' start (their imports, their models), which is as
        # long, and Ray starts sooner, not sharing the driver with MLflow.
        opening = _Background(
            partial(_open_store, cfg, results_dir, tracking_uri, folder, run_name), "mlflow"
        )
        opening.start()  # once it is known to the handlers below: a run it opens is ended
        if resuming:
            print(
                f"Resuming after round {state['rounds_done'] if state else 0} "
                f"(MLflow has the rounds up to {store().logged})",
                flush=True,
            )
        run_federated(cfg, callbacks, resume_state=state)
        folder.push()
    except KeyboardInterrupt:
        now_stopping()
        last_round = int(console.last_metrics.get("round", 0))
        if (stopped := _opened_if_possible(opening)) is not None:
            stopped.tracker.end_run_if_possible(
                stopped.run_id, "KILLED", f"interrupted after round {last_round}"
            )
        elif not resuming:  # stopped while Ray started: no run, nothing to resume
            shutil.rmtree(folder.path, ignore_errors=True)
            folder.copy.storage.delete()
            print("\nStopped before the run started.", file=sys.stderr)
            return STOPPED_EXIT_CODE
        _push_if_possible(folder)
        print(
            f"\nInterrupted after round {last_round}. Resume with:\n  {folder.resume_command()}",
            file=sys.stderr,
        )
        return STOPPED_EXIT_CODE
    except Exception as exc:  # noqa: BLE001 - any error after the start: one line, resumable
        if (failed := _opened_if_possible(opening)) is not None:
            failed.tracker.end_run_if_possible(failed.run_id, "FAILED", root_cause(exc))
        elif not resuming:
            print(_failed_before_the_run(exc, folder.path), file=sys.stderr)
            return 1
        if (failure := run_failure(exc)) is not None:  # resuming would fail the same way
            _push_if_possible(folder)
            print(
                f"error: the run failed: {failure}\n{save_traceback(exc, folder.path)}; the "
                "MLflow run is FAILED: change the configuration and start a new run",
                file=sys.stderr,
            )
            return 1
        message = stopped_on_error(exc, folder.path, folder.resume_command())
        _push_if_possible(folder)
        print(message, file=sys.stderr)
        return 1
    finally:
        shutdown.join()
    run = store()
    print(
        f"MLflow run {run.run_id} in {run.tracker.tracking_uri}\nOpen the MLflow UI:  "
        f"{ui_command(run.tracker.tracking_uri, run.tracker.experiment_id)}"
    )
    return 0


def _push_if_possible(folder: RunFolder) -> None:
    """The run folder to its storage on the way out of a stop or an error, which may be the
    storage's own: then a warning, the local copy keeping everything."""
    from fpzo_ray.failure import root_cause

    try:
        folder.push()
    except Exception as exc:  # noqa: BLE001 - on the way out, never raise
        print(
            f"warning: the run folder could not be copied to {folder.location} "
            f"({root_cause(exc)}); it is complete in {folder.path}",
            file=sys.stderr,
        )


def _opened_if_possible(opening: _Background[RoundRecorder] | None) -> RoundRecorder | None:
    """The run's store on the way out of a stop or an error (waiting for it to open, which
    takes seconds at most), or None when it was not opened (stopped while Ray started) or
    could not be (an unreachable store, a full disk: the error says which): then there is
    no run to end."""
    if opening is None:
        return None
    try:
        return opening.result()
    except Exception:  # noqa: BLE001 - the error being reported is the one that matters
        return None


def _failed_before_the_run(exc: BaseException, folder: Path) -> str:
    """The error of a new run that failed before its MLflow run was opened (Ray would not
    start, the store cannot be opened): one line naming the cause, the traceback saved in
    the run folder, and no resume command, there being no run to resume."""
    from fpzo_ray.failure import root_cause, save_traceback

    saved = save_traceback(exc, folder)
    return (
        f"error: {root_cause(exc)}\n{saved}; no MLflow run was opened: once the cause is "
        "fixed, run the command again"
    )


if __name__ == "__main__":
    code = main()
    # Skip the interpreter's last garbage collection: with torch, Ray and MLflow loaded it
    # walks millions of objects for about 2 s here, after every write is done (the MLflow
    # run ended, files closed, Ray shut down) and the exit handlers still run. Objects are
    # still freed by reference counting; only cycles are left to the OS, as at any exit.
    gc.freeze()
    sys.exit(code)
