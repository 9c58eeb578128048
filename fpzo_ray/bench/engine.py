"""engine: where an engine round's time goes, and how much of it is the clients' compute.

The workload of ``bench throughput``'s digits row (digits CNN, 100 clients, 10 a round, ZO
FedSGD, K = 20, batches of 32), in the default configuration, its evaluation included (every
round the fixed validation sample, every ``training.eval_every`` rounds the whole validation
and test splits), reported to MLflow as ``python -m fpzo_ray.run`` reports it; with
``--data-root`` holding MNIST/raw, LeNet-5 on MNIST as well. Measured, interleaved over
``--passes`` passes: the plain one-thread loop of the same clients' work (``zo.batching:
loop``, no Ray) and the engine with 1 and 2 worker actors.

Each engine round is split into (milliseconds, the mean over a pass's measured rounds, so
that the periodic whole-split evaluations count, then the median over passes):

- ``round``: the driver's wall time per round (between consecutive rounds' metrics);
- ``client_compute``: the busiest worker's compute time for its clients;
- ``barrier_wait``: how long the other workers idled at the round's barrier (busiest minus
  mean compute);
- ``ray_transfer``: submitting the calls and receiving the replies, beyond compute;
- ``aggregation``: the server's tally, rebuild and step, and submitting the next round;
- ``evaluation``: the server's evaluation of the round's model;
- ``tracking``: the driver's reporting (MLflow, queued).

The next round's clients start as soon as the server has stepped, so evaluation and tracking
overlap their work: what is on the round's critical path is what the round's wall time
exceeds the client compute by. ``non_compute_share`` = 1 - client_compute / round (goal
<= 25 % for the digits round with 2 workers), with its spread over the passes and a verdict.
Keys: ``digits_non_compute_share`` (and ``_spread``, ``_verdict``), ``lenet_non_compute_share``
(when measured), ``rows``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from functools import partial
from typing import Any

from fpzo_ray.bench.common import data_root, workload_data
from fpzo_ray.bench.throughput import TimedRound, plain_loop, timed_rounds, workload
from fpzo_ray.bench.timing import PassRatios, table
from fpzo_ray.config import RunConfig, TrainingConfig, config_from_dict, config_to_dict

#: The split, in the order printed: (column, the server's metric it comes from).
SPLIT = (
    ("client_compute", "time_client_compute_s"),
    ("barrier_wait", "time_waiting_s"),
    ("ray_transfer", "time_ray_transfer_s"),
    ("aggregation", "time_aggregation_s"),
    ("evaluation", "time_evaluation_s"),
)
#: The goal: at most this share of a digits round (2 workers) is not client compute.
NON_COMPUTE_GOAL = 0.25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=str(data_root()))
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds per setup")
    parser.add_argument("--warmup", type=int, default=3, help="rounds before measuring")
    parser.add_argument("--passes", type=int, default=3, help="interleaved passes")


def default_evaluation(cfg: RunConfig) -> RunConfig:
    """``cfg`` evaluated as a run is by default (the workload turns evaluation off)."""
    tree = config_to_dict(cfg)
    defaults = TrainingConfig()
    tree["training"]["eval_every"] = defaults.eval_every
    tree["training"]["eval_subset"] = defaults.eval_subset
    return config_from_dict(tree)


def round_split(rounds: list[TimedRound], warmup: int) -> dict[str, float]:
    """The measured rounds' mean split, in milliseconds (the first ``warmup`` rounds and the
    last, which ends the run, left out): a mean, not a median, so that the rounds with a
    whole-split evaluation weigh what they cost."""
    measured = list(zip(rounds[warmup - 1 : -2], rounds[warmup:-1]))

    def mean_ms(values: list[float]) -> float:
        return 1e3 * statistics.fmean(values)

    split = {"round": mean_ms([now.arrived - before.arrived for before, now in measured])}
    for column, key in SPLIT:
        split[column] = mean_ms([float(now.metrics[key]) for _, now in measured])
    split["tracking"] = mean_ms([now.tracking_s for _, now in measured])
    return split


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fpzo_ray.sim.ray.ray_session import init_ray

    init_ray()
    workloads = {"digits": {"name": "digits"}}
    mnist = workload_data(args.data_root)
    if mnist["name"] == "mnist":
        workloads["lenet"] = mnist
    total = args.warmup + args.rounds + 1
    samples: dict[tuple[str, str], list[Any]] = {}
    setups: dict[tuple[str, str], Callable[[], Any]] = {}
    for name, data in workloads.items():
        setups[(name, "loop")] = partial(
            plain_loop, workload(data, total, "loop"), args.warmup, args.rounds
        )
        for workers, cpus in ((1, 1.0), (2, 0.9)):
            cfg = default_evaluation(workload(data, total, workers=workers, worker_cpus=cpus))
            setups[(name, f"{workers}w")] = partial(timed_rounds, cfg)
    for _ in range(args.passes):
        for key, measure in setups.items():
            samples.setdefault(key, []).append(measure())

    rows, shares = [], {}
    for (name, setup), values in samples.items():
        if setup == "loop":
            continue
        splits = [round_split(rounds, args.warmup) for rounds in values]
        loop_ms = [1e3 * 10 / v[0] for v in samples[(name, "loop")]]  # 10 clients a round
        share = PassRatios(tuple(1 - s["client_compute"] / s["round"] for s in splits))
        shares[(name, setup)] = share
        speed = PassRatios.of(loop_ms, [s["round"] for s in splits])
        rows.append(
            {
                "workload": name,
                "workers": setup,
                **{k: statistics.median(s[k] for s in splits) for k in splits[0]},
                "non_compute_share": share.median,
                "share_spread": "{:.2f}-{:.2f}".format(*share.spread),
                "over_loop": speed.median,
                "over_loop_spread": "{:.2f}-{:.2f}".format(*speed.spread),
            }
        )
    columns = ["workload", "workers", "round", *(c for c, _ in SPLIT), "tracking"]
    print(
        f"Engine rounds (ZO FedSGD, K = 20, batch 32, 10 clients a round, the default "
        f"configuration and evaluation), milliseconds: the mean of {args.rounds} rounds, "
        f"median over {args.passes} interleaved passes"
    )
    print(table(rows, columns))
    print("\nNot client compute, and speed over the plain one-thread loop (spread over passes)")
    print(
        table(
            rows,
            ["workload", "workers", "non_compute_share", "share_spread", "over_loop"]
            + ["over_loop_spread"],
        )
    )
    result: dict[str, Any] = {"rows": rows}
    for name in workloads:
        share = shares[(name, "2w")]
        result.update(share.keys(f"{name}_non_compute_share", NON_COMPUTE_GOAL, at_least=False))
        print(
            f"{name}_non_compute_share (2 workers): {share.text(NON_COMPUTE_GOAL, at_least=False)}"
        )
    return result
