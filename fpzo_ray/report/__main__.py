"""``python -m fpzo_ray.report SOURCE [--out DIR]``: a sweep's report, from where it lives.

SOURCE is a sweep's experiment folder (``results/ray_results/<name>_<time>``, or where its
``--storage`` put it: a path, or a URI such as ``s3://bucket/prefix/<name>_<time>``), or an MLflow
tracking URI (``http://host:5000``, ``sqlite:///path/mlflow.db``) with ``--run-id`` (the
sweep's parent run) or ``--experiment`` (its newest sweep). Writes ``report.html`` (one
self-contained file), ``summary.md`` and ``figures/*.png`` into DIR, and logs them to the
sweep's parent run (``--no-log`` to skip). A sweep writes its report by itself when it ends.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fpzo_ray.config import ConfigError, records_only
from fpzo_ray.logs import configure as configure_logging


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m fpzo_ray.report``."""
    parser = argparse.ArgumentParser(
        prog="python -m fpzo_ray.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", metavar="SOURCE", help="an experiment folder, or an MLflow tracking URI"
    )
    parser.add_argument("--run-id", help="with a tracking URI: the sweep's parent run")
    parser.add_argument(
        "--experiment",
        help="with a tracking URI: the MLflow experiment whose newest sweep to report",
    )
    parser.add_argument(
        "--out",
        help="where to write (default: <folder>/report, or "
        "./report_<parent run id> for a tracking URI)",
    )
    parser.add_argument(
        "--no-log", action="store_true", help="do not log the report to the parent run"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    # a wrong server address fails in seconds, not after MLflow's minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from fpzo_ray.artifacts import TRACKING_FILE
    from fpzo_ray.failure import root_cause
    from fpzo_ray.report.document import write_report
    from fpzo_ray.report.publish import log_report
    from fpzo_ray.report.sources import (
        STORAGE_SCHEMES,
        fetch_experiment,
        read_text,
        record_from_folder,
        record_from_mlflow,
    )
    from fpzo_ray.tracking import resolve_tracking_uri

    folder = Path(args.source)
    scheme = args.source.split("://", 1)[0] if "://" in args.source else ""
    fetched = tempfile.TemporaryDirectory(prefix="fpzo_report_")
    try:
        if folder.is_dir() or scheme in STORAGE_SCHEMES:
            local = fetch_experiment(args.source, Path(fetched.name)) if scheme else folder
            with records_only():  # a report imports none of the researcher's modules
                record = record_from_folder(local)
            tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or (
                read_text(local / TRACKING_FILE)  # where the sweep logged
                or resolve_tracking_uri(folder.resolve().parent.parent)
            )
            default_out = Path(f"report_{record.experiment}") if scheme else folder / "report"
            out = Path(args.out) if args.out else default_out
        elif "://" in args.source or args.source.startswith("databricks"):
            if not (args.run_id or args.experiment):
                raise ConfigError(
                    "config error: SOURCE: a tracking URI needs --run-id or --experiment"
                )
            with records_only():
                record = record_from_mlflow(args.source, args.run_id, args.experiment)
            tracking_uri = args.source
            out = Path(args.out) if args.out else Path(f"report_{record.parent_run_id}")
        else:
            raise ConfigError(
                f"config error: SOURCE: {args.source}: neither an experiment "
                "folder nor an MLflow tracking URI"
            )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - whatever the store or server raised: one line
        print(f"error: {args.source}: {root_cause(exc)}", file=sys.stderr)
        return 1
    finally:
        fetched.cleanup()
    with records_only():
        files = write_report(record, out)
    print(f"Report: {files.html.resolve()}\nSummary: {files.markdown.resolve()}")
    if not args.no_log:
        if record.parent_run_id is None:
            print("(no MLflow parent run found for this folder: not logged)")
        else:
            log_report(tracking_uri, record.parent_run_id, files)
            print(f"Logged to MLflow run {record.parent_run_id} in {tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
