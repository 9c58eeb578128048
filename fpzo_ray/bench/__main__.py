"""``python -m fpzo_ray.bench NAME``: benchmarks that print ratios measured side by side in one
run, and end with one JSON line of their headline figures, also saved with the machine, the
commit and the date (``--save``; ``python -m fpzo_ray.bench.pages`` makes the benchmark page
from saved results).

Names: zo-step, memory, fidelity, prune-error, sigma, dropout, checkpoint, population,
engine, throughput, startup, gpu
(``--help`` after a name for its options).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

BENCHMARKS: dict[str, str] = {
    "zo-step": "fpzo_ray.bench.zo_step",
    "memory": "fpzo_ray.bench.memory",
    "fidelity": "fpzo_ray.bench.fidelity",
    "prune-error": "fpzo_ray.bench.prune_error",
    "sigma": "fpzo_ray.bench.sigma",
    "dropout": "fpzo_ray.bench.dropout",
    "checkpoint": "fpzo_ray.bench.checkpoint",
    "population": "fpzo_ray.bench.population",
    "engine": "fpzo_ray.bench.engine",
    "throughput": "fpzo_ray.bench.throughput",
    "startup": "fpzo_ray.bench.startup",
    "gpu": "fpzo_ray.bench.gpu",
}


def build_parser(name: str) -> argparse.ArgumentParser:
    """The command line of ``python -m fpzo_ray.bench NAME`` (NAME in ``BENCHMARKS``)."""
    import importlib

    module = importlib.import_module(BENCHMARKS[name])
    parser = argparse.ArgumentParser(
        prog=f"python -m fpzo_ray.bench {name}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    parser.add_argument(
        "--save",
        metavar="PATH",
        default=None,
        help="where to save the result as JSON with the machine, commit and date (default "
        f"results/bench/{name}.json)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import importlib

    module = importlib.import_module(BENCHMARKS[argv[0]])
    parser = build_parser(argv[0])
    args = parser.parse_args(argv[1:])
    from fpzo_ray.logs import configure

    configure()
    from fpzo_ray.bench.record import default_path, record, save

    run: Callable[[argparse.Namespace], dict] = module.run
    save_to = Path(args.save) if args.save else default_path(argv[0])
    options = {k: v for k, v in vars(args).items() if k != "save"}
    result = run(args)
    print(json.dumps(result))
    saved = save(record(argv[0], argv[1:], options, result), save_to)
    print(f"saved {saved}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
