"""startup: how long ``python -m fpzo_ray.run`` takes to start and to end, against bare Ray.

A short run is mostly start and end: imports, MLflow's store, Ray's processes, the actors'
imports, then figures and teardown. What a user waits for beyond what Ray itself costs on
this machine is measured from outside, each candidate a fresh process (``python -X`` and
friends would change what is measured), interleaved over ``--passes`` passes (the order
rotated every pass) so that a burst of load elsewhere on a shared machine hits every
candidate alike:

- ``bare ray``: ``python -c`` importing Ray, ``ray.init(address="local",
  include_dashboard=False)``, one actor, its first call's result (``start_s``: from launching
  the command to that result), then ``ray.shutdown()`` (``shutdown_s``) and the process's exit
  (``teardown_s``: from the result to the exit);
- ``plain loop``: the digits workload's ``--rounds`` rounds in a plain one-thread loop
  (``bench throughput``'s reference: ``zo.batching: loop``, no Ray, no MLflow; ``start_s``:
  launch to the end of round 1);
- ``fpzo 1w`` / ``fpzo 2w``: ``python -m fpzo_ray.run`` on ``bench throughput``'s digits
  workload (digits CNN, 100 clients, 10 a round, K = 20, batches of 32, evaluated at the last
  round only) for ``--rounds`` rounds, with 1 worker (1 CPU) and 2 workers (0.9 CPU each):
  ``start_s`` from launch to the line the run prints when round 1 ends, ``teardown_s`` from the
  line of the last round to the exit (records, model, ``clients.csv``, figures, the end of the
  MLflow run, Ray's shutdown, the interpreter's exit).

Each process's output is read live (``PYTHONUNBUFFERED``) and every line timestamped on
arrival. The whole process tree (the command and every descendant: Ray's GCS, raylet,
agents, workers and actors) is sampled every ``--sample-every`` seconds for its proportional
set size (PSS: shared pages split between the processes sharing them, so the object store
and the libraries are counted once), and its peak kept; also the most processes seen at once
and the wall time of the command.

Results and the MLflow store go to a temporary folder (``MLFLOW_TRACKING_URI`` and
``RAY_ADDRESS`` are removed from the children's environment: a local Ray, a SQLite store).
By default the store is created before the passes, as a user's second and later runs find it;
``--fresh-store`` gives every run a new one (the first run on a machine: the store's schema
is created then, about a second more). ``--baseline DIR`` adds the fpzo candidates run from
another checkout of the package (e.g. ``git archive HEAD``), interleaved with this one's: a
before/after comparison on the same noisy machine.

Ratios, each pass's own (``PassRatios``: median, spread over the passes, verdict):
``first_round_s_over_bare_ray`` (``fpzo 2w``'s start over bare Ray's; goal <= 2.0),
``teardown_s_over_bare_ray`` (``fpzo 2w``'s teardown over bare ``ray.shutdown()``; goal
<= 1.5; over bare Ray's shutdown and exit also printed: the fairer denominator, as the run's
teardown includes its own exit), ``two_worker_pss_over_one_worker`` (peak PSS; goal <= 1.25).
Keys: those three (each a dict: median, min, max, passes, goal, verdict), the same for the
1-worker run and the baseline where measured, and ``medians`` (per candidate: seconds, bytes).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpzo_ray.bench.timing import PassRatios, table

#: A line a run prints when a round ends (``round   12  ...``), and the plain loop's marker.
ROUND_LINE = re.compile(r"^round\s+(\d+)\b")
#: Printed by a run with its first round's report: the marker of round 1's end for versions
#: of ``fpzo_ray.run`` that print no line for a round without an evaluation.
SETUP_LINE = re.compile(r"^pruning: ")
#: Goals (each an upper bound): a run's start and teardown over bare Ray's, and its peak PSS
#: with two workers over one.
FIRST_ROUND_GOAL, TEARDOWN_GOAL, PSS_GOAL = 2.0, 1.5, 1.25

BARE_RAY = """
import ray
ray.init(address="local", include_dashboard=False)

@ray.remote
class Probe:
    def ping(self):
        return 1

probe = Probe.remote()
ray.get(probe.ping.remote())
print("first call", flush=True)
ray.shutdown()
print("shut down", flush=True)
"""

PLAIN_LOOP = """
import sys
from fpzo_ray.bench.throughput import plain_loop, workload
rounds = int(sys.argv[1])
cfg = workload({"name": "digits"}, rounds, batching="loop")
plain_loop(cfg, 0, 1)
print("round 1 done", flush=True)
if rounds > 1:
    plain_loop(cfg, 0, rounds - 1)
print("all rounds done", flush=True)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--passes", type=int, default=3, help="interleaved passes (medians)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each fpzo run")
    parser.add_argument(
        "--sample-every", type=float, default=0.2, help="seconds between PSS samples"
    )
    parser.add_argument(
        "--fresh-store", action="store_true", help="a new MLflow store for every run"
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        default=None,
        help="also run the fpzo candidates from the fpzo_ray checkout in DIR (its root)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per process")


@dataclass(frozen=True)
class Launch:
    """One process as seen from outside: its output lines with their arrival times (seconds
    since the launch), when it exited, its tree's peak PSS and most processes at once."""

    command: tuple[str, ...]
    lines: tuple[tuple[float, str], ...]
    exit_s: float
    returncode: int
    peak_pss: int
    peak_processes: int

    def first(self, pattern: re.Pattern[str]) -> float | None:
        """When the first line matching ``pattern`` arrived (None: no such line)."""
        return next((t for t, line in self.lines if pattern.search(line)), None)

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)


def round_ends(lines: Sequence[tuple[float, str]]) -> dict[int, float]:
    """When each round's line arrived, by round number (the first line of each round)."""
    ends: dict[int, float] = {}
    for at, line in lines:
        match = ROUND_LINE.match(line)
        if match:
            ends.setdefault(int(match.group(1)), at)
    return ends


def first_round_end(lines: Sequence[tuple[float, str]]) -> float | None:
    """When round 1 ended: its line, else (a run that prints no line for a round without an
    evaluation) the pruning summary printed with round 1's report."""
    ends = round_ends(lines)
    if 1 in ends:
        return ends[1]
    return next((at for at, line in lines if SETUP_LINE.search(line)), None)


def tree_pss(pid: int) -> tuple[int, int]:
    """(PSS bytes, processes) of process ``pid`` and all its descendants now; processes that
    end while being read are skipped."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    total, counted = 0, 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
            counted += 1
        except psutil.Error:
            continue
    return total, counted


def launch(
    command: Sequence[str],
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    sample_every_s: float = 0.2,
    timeout_s: float = 600.0,
) -> Launch:
    """Run ``command`` to its end: its output (stdout and stderr together) read live, every
    line timestamped on arrival, and its process tree's PSS sampled every ``sample_every_s``
    seconds meanwhile (0: not sampled), on a thread of low priority."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        text=True,
        errors="replace",
        bufsize=1,
    )
    lines: list[tuple[float, str]] = []
    exited = threading.Event()
    peaks = [0, 0]  # PSS bytes, processes

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))

    def sample() -> None:
        _lower_this_threads_priority()
        while not exited.wait(sample_every_s):
            pss, count = tree_pss(process.pid)
            peaks[0], peaks[1] = max(peaks[0], pss), max(peaks[1], count)

    reader = threading.Thread(target=read, name="startup-reader", daemon=True)
    sampler = threading.Thread(target=sample, name="startup-pss", daemon=True)
    reader.start()
    if sample_every_s > 0:
        sampler.start()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RuntimeError(
            f"{' '.join(command)[:200]}: still running after {timeout_s} s"
        ) from None
    finally:
        exit_s = time.perf_counter() - started
        exited.set()
    reader.join(timeout=30)
    if sampler.is_alive():
        sampler.join()
    return Launch(tuple(command), tuple(lines), exit_s, process.returncode, peaks[0], peaks[1])


def _lower_this_threads_priority() -> None:
    """Nice 10 for the calling thread only (Linux's priorities are per thread): reading a
    big process's PSS makes the kernel walk its page tables (15-20 ms for an actor that
    imported torch, about 60 ms a sample for a run's tree here), time the measured processes
    should not lose on a two-core machine. The children are started from another thread and
    keep the normal priority."""
    import contextlib

    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


@dataclass(frozen=True)
class Candidate:
    """A command to launch once per pass, and how to read its figures off the launch."""

    name: str
    command: Callable[[int], list[str]]  # the pass number -> the command
    env: dict[str, str]
    kind: str  # "bare", "plain" or "fpzo"
    rounds: int = 1


def figures(candidate: Candidate, done: Launch) -> dict[str, float]:
    """``start_s``, ``teardown_s``, ``wall_s``, ``peak_pss`` (and ``shutdown_s`` for bare Ray,
    ``ray_up_s`` for a run) of one launch; a launch that failed or printed no marker raises,
    naming the command and showing its output's end."""

    def need(value: float | None, what: str) -> float:
        if value is None:
            raise RuntimeError(f"{candidate.name}: {what} not seen; {tail}")
        return value

    tail = f"its output ends:\n{done.output()[-3000:]}"
    if done.returncode != 0:
        raise RuntimeError(f"{candidate.name}: exit code {done.returncode}; {tail}")

    out: dict[str, float] = {
        "wall_s": done.exit_s,
        "peak_pss": float(done.peak_pss),
        "peak_processes": float(done.peak_processes),
    }
    if candidate.kind == "bare":
        first = need(done.first(re.compile("^first call")), "the first call's line")
        down = need(done.first(re.compile("^shut down")), "the shutdown's line")
        out.update(start_s=first, shutdown_s=down - first, teardown_s=done.exit_s - first)
    elif candidate.kind == "plain":
        first = need(first_round_end(done.lines), "round 1's line")
        last = need(done.first(re.compile("^all rounds done")), "the last round's line")
        out.update(start_s=first, teardown_s=done.exit_s - last)
    else:
        first = need(first_round_end(done.lines), "round 1's line")
        last = need(round_ends(done.lines).get(candidate.rounds), "the last round's line")
        out.update(start_s=first, teardown_s=done.exit_s - last)
        ray_up = done.first(re.compile("^Ray: "))
        if ray_up is not None:
            out["ray_up_s"] = ray_up
    return out


def _child_env(folder: Path, checkout: Path | None = None) -> dict[str, str]:
    """A local Ray (temporary files under ``folder``), a SQLite store, live output, and the
    package from ``checkout`` (default: the one this bench runs from), first on the path."""
    import fpzo_ray

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(checkout or Path(fpzo_ray.__file__).resolve().parents[1]),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TMPDIR=str(folder / "ray"),
    )
    return env


def _fpzo_candidate(
    name: str, workers: int, worker_cpus: float, args: argparse.Namespace, folder: Path, env: dict
) -> Candidate:
    import yaml

    from fpzo_ray.bench.throughput import workload
    from fpzo_ray.config import config_to_dict

    raw = config_to_dict(workload({"name": "digits"}, args.rounds, workers=workers))
    raw["simulation"]["worker_cpus"] = worker_cpus
    raw["tracking"]["experiment"] = "bench_startup"
    slug = re.sub(r"\W+", "_", name)
    config = folder / f"{slug}.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    store = folder / f"{slug}_results"
    if not args.fresh_store:
        from fpzo_ray.tracking import MLflowTracker

        store.mkdir()
        MLflowTracker(f"sqlite:///{store / 'mlflow.db'}", "bench_startup", store)

    def command(p: int) -> list[str]:
        results = folder / f"{slug}_results_{p}" if args.fresh_store else store
        return [sys.executable, "-m", "fpzo_ray.run", "--config", str(config)] + (
            ["--results-dir", str(results)]
        )

    return Candidate(name, command, env, "fpzo", args.rounds)


def _summary(ratios: PassRatios, goal: float, at_least: bool) -> dict[str, object]:
    """The JSON form of a ratio: median, spread, goal and verdict."""
    low, high = ratios.spread
    return {
        "median": ratios.median,
        "min": low,
        "max": high,
        "passes": len(ratios.values),
        "goal": f"{'>=' if at_least else '<='} {goal:g}",
        "verdict": ratios.verdict(goal, at_least),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="fzst", dir="/tmp"))  # Ray's socket paths are short
    here = _child_env(folder)
    candidates = [
        Candidate("bare ray", lambda p: [sys.executable, "-c", BARE_RAY], here, "bare"),
        Candidate(
            "plain loop",
            lambda p: [sys.executable, "-c", PLAIN_LOOP, str(args.rounds)],
            here,
            "plain",
        ),
        _fpzo_candidate("fpzo 1w", 1, 1.0, args, folder, here),
        _fpzo_candidate("fpzo 2w", 2, 0.9, args, folder, here),
    ]
    if args.baseline:
        base = _child_env(folder, Path(args.baseline).resolve())
        candidates += [
            _fpzo_candidate("baseline 1w", 1, 1.0, args, folder, base),
            _fpzo_candidate("baseline 2w", 2, 0.9, args, folder, base),
        ]
    samples: dict[str, list[dict[str, float]]] = {c.name: [] for c in candidates}
    try:
        for p in range(args.passes):
            shift = p % len(candidates)
            for candidate in candidates[shift:] + candidates[:shift]:
                done = launch(
                    candidate.command(p),
                    candidate.env,
                    cwd=folder,  # not the checkout: ``-m`` puts the working directory first
                    sample_every_s=args.sample_every,
                    timeout_s=args.timeout,
                )
                samples[candidate.name].append(figures(candidate, done))
                print(
                    f"pass {p + 1}/{args.passes} {candidate.name}: "
                    + ", ".join(f"{k} {v:.3g}" for k, v in samples[candidate.name][-1].items()),
                    flush=True,
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    def column(name: str, key: str) -> list[float]:
        return [s[key] for s in samples[name]]

    medians = {
        name: {key: statistics.median(s[key] for s in values) for key in values[0]}
        for name, values in samples.items()
    }
    rows = [
        {
            "candidate": name,
            **{k: v for k, v in m.items() if k != "peak_pss"},
            "peak_pss_mib": m["peak_pss"] / 2**20,
        }
        for name, m in medians.items()
    ]
    print(
        f"\nStart and teardown (digits workload, {args.rounds} rounds; medians of {args.passes} "
        f"interleaved passes; MLflow store {'new every run' if args.fresh_store else 'existing'})"
    )
    print(
        table(
            rows,
            [
                "candidate",
                "start_s",
                "ray_up_s",
                "shutdown_s",
                "teardown_s",
                "wall_s",
                "peak_pss_mib",
                "peak_processes",
            ],
        )
    )
    bare_start, bare_down = column("bare ray", "start_s"), column("bare ray", "shutdown_s")
    bare_teardown = column("bare ray", "teardown_s")
    result: dict[str, Any] = {}
    print()
    for prefix, label in (("fpzo", ""), ("baseline", "baseline_")):
        if f"{prefix} 2w" not in samples:
            continue
        one, two = f"{prefix} 1w", f"{prefix} 2w"
        first_one = column(one, "start_s")
        ratios = {
            "first_round_s_over_bare_ray": (column(two, "start_s"), bare_start, FIRST_ROUND_GOAL),
            "first_round_s_over_bare_ray_one_worker": (first_one, bare_start, FIRST_ROUND_GOAL),
            "teardown_s_over_bare_ray": (column(two, "teardown_s"), bare_down, TEARDOWN_GOAL),
            "teardown_s_over_bare_ray_shutdown_and_exit": (
                column(two, "teardown_s"),
                bare_teardown,
                TEARDOWN_GOAL,
            ),
            "two_worker_pss_over_one_worker": (
                column(two, "peak_pss"),
                column(one, "peak_pss"),
                PSS_GOAL,
            ),
        }
        for key, (numerators, denominators, goal) in ratios.items():
            measured = PassRatios.of(numerators, denominators)
            print(f"{label}{key}: {measured.text(goal, at_least=False)}")
            result[label + key] = _summary(measured, goal, at_least=False)
        plain = PassRatios.of(column(two, "start_s"), column("plain loop", "start_s"))
        low, high = plain.spread
        print(
            f"{label}first_round_s_over_plain_loop: {plain.median:.3g} "
            f"(passes {low:.3g}-{high:.3g}; no goal)"
        )
    result["medians"] = medians
    return result
