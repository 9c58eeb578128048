"""zo-step: what a ZO step costs beyond its forward passes, and what sparsity buys in time.

Part 1, overhead: time of one ZO step (forward differences, K Gaussian directions, the
default in-place loop) over (K + 1) x the time of one plain forward pass on the same batch,
for LeNet-5 (MNIST-shaped batch of 64) and ResNet-20 (CIFAR-shaped batch of 32), K = 20 and
100, one torch thread (what a worker actor gets). The forward passes are the floor.

Part 2, sparsity in wall-clock time: ResNet-20 at 90 % sparsity (a data-free NTK-SAP mask),
every step timed side by side with the dense default step:
``full`` (exact estimator, in-place loop), ``vmap`` (batched directions), and ``layerwise``
(the named variant: each direction perturbs one block, the forward resumes from the cached
block input; unbiased, same leading variance). Keys: ``max_step_over_forwards``,
``sparse90_speedup_resnet20`` (dense full step / 90 %-sparse layer-wise step).

Part 3, execution modes (``zo.batching``): one dense step (K = 20) of each shipped model in
``loop``, ``batched`` (all K + 1 models stacked in one pass, and in chunks of 7) and ``vmap``,
timed side by side, with each mode's measured peak memory (what the simulator itself holds;
a client's recorded figure is the ``loop`` step's in every mode); ``(auto)`` marks the mode
the default ``zo.batching: auto`` runs for the model. Key: ``batched_over_loop`` (per model:
loop step time / batched step time).

Part 4 (alone with ``--generators-only``), direction generators: nanoseconds per number of
drawing a step's K directions as each ``zo.generator`` draws them: ``torch_cpu`` (torch's
seeded CPU generator, one per direction seed, ``normal_``) against ``philox``'s Gaussian and
Rademacher fills (eager, and inductor-compiled on the CPU; ``GROUP_NUMBERS // d`` seeds per
fill), for the digits CNN's 1,898 coordinates and LeNet-5's 61,706 at K = 20 and a million
at K = 4, interleaved over ``--repeats`` passes. Key: ``philox_gaussian_over_torch`` (per
size: torch's time / the compiled Philox Gaussian's, median and spread over the passes; goal
>= 1: at least as fast).

Every part runs with the worker actors' allocator setting (``sim.allocator``: freed memory
stays with the process), so the steps cost what they cost on a worker.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from fpzo_ray.accounting import forward_flops, layer_flops
from fpzo_ray.accounting.memory import MemoryMeter
from fpzo_ray.bench.timing import interleaved_medians, table
from fpzo_ray.config import config_from_dict
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.pruning import Mask, ntk_sap_mask_gradient, prune_iteratively
from fpzo_ray.pruning.methods import keep_scores
from fpzo_ray.zo import FORWARD, EstimatorSpec, fill_gaussian, loss_differences, perturbation_seeds
from fpzo_ray.zo.execution.auto_batching import auto_batching
from fpzo_ray.zo.execution.batched import vmap_differences
from fpzo_ray.zo.execution.stacked import stacked_differences
from fpzo_ray.zo.layerwise import layerwise_differences, stage_blocks_for

SHAPES = {
    "digits_cnn": ("digits", (1, 8, 8), 32),
    "lenet5": ("mnist", (1, 28, 28), 64),
    "resnet20": ("cifar10", (3, 32, 32), 32),
}
#: Part 3's models: (label, model name, normalisation).
MODE_MODELS = (
    ("digits_cnn", "digits_cnn", "group"),
    ("lenet5", "lenet5", "group"),
    ("resnet20", "resnet20", "group"),
    ("resnet20 batch norm", "resnet20", "batch"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per candidate")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--generators-only", action="store_true", help="run part 4 (direction generators) only"
    )


class Problem:
    """A model with flat parameters, a mask and one batch: what a client step works on."""

    def __init__(self, model_name: str, mask_density: float = 1.0, norm: str = "group") -> None:
        dataset, shape, batch = SHAPES[model_name]
        cfg = config_from_dict(
            {"data": {"name": dataset}, "model": {"name": model_name, "norm": norm}}
        )
        self.model = build_model(cfg, shape, 10, init_seed=0)
        self.flat, self.layout = bind_flat_buffer(self.model)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn((batch, *shape), generator=gen)
        self.y = torch.randint(0, 10, (batch,), generator=gen)
        self.mask = Mask.dense(self.layout) if mask_density >= 1 else self._ntk_sap(mask_density)
        self.kept_index = None if self.mask.is_dense else self.mask.kept_index()
        self.blocks = stage_blocks_for(self.model, self.layout, self.kept_index)
        with torch.no_grad():
            self.flat.mul_(self.mask.kept_flat())

    def _ntk_sap(self, density: float) -> Mask:
        shape = tuple(self.x.shape[1:])

        def scores(t: int, mask: Mask) -> torch.Tensor:
            seeds = [1000 * t + r for r in range(2)]
            return keep_scores(
                "ntk_sap",
                ntk_sap_mask_gradient(self.model, self.layout, mask, seeds, 8, shape, 0.01),
            )

        return prune_iteratively(Mask.dense(self.layout), density, 5, scores)

    def loss(self) -> float:
        return float(F.cross_entropy(self.model(self.x), self.y))

    def step(self, k: int, variant: str = "full") -> Callable[[], Any]:
        spec = EstimatorSpec(FORWARD, fill_gaussian, 1e-3)
        seeds = perturbation_seeds(0, 0, 0, 0, k)
        if variant == "layerwise":
            return lambda: layerwise_differences(
                self.model,
                lambda out: float(F.cross_entropy(out, self.y)),
                self.x,
                self.flat,
                self.blocks,
                seeds,
                spec,
            )
        if variant == "vmap":
            return lambda: vmap_differences(
                self.model, self.layout, self.flat, self.kept_index, self.x, self.y, seeds, spec
            )
        if variant.startswith("batched"):
            chunk = int(variant.partition(" ")[2] or 0)
            return lambda: stacked_differences(
                self.model,
                self.layout,
                self.flat,
                self.kept_index,
                self.x,
                self.y,
                seeds,
                spec,
                chunk,
            )
        return lambda: loss_differences(self.loss, self.flat, self.kept_index, seeds, spec)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fpzo_ray.sim.allocator import keep_freed_memory

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the worker actors run their steps
    if args.generators_only:
        generator_rows, generator_ratios = generator_costs(args.repeats)
        return {"generator_rows": generator_rows, "philox_gaussian_over_torch": generator_ratios}
    rows = []
    with torch.no_grad():
        for name in ("lenet5", "resnet20"):
            problem = Problem(name)
            for k in (20, 100):
                times = interleaved_medians(
                    {"forward": problem.loss, "step": problem.step(k)},
                    args.repeats if k == 20 else max(3, args.repeats // 3),
                )
                rows.append(
                    {
                        "model": name,
                        "K": k,
                        "forward_ms": 1e3 * times["forward"],
                        "step_ms": 1e3 * times["step"],
                        "step_over_forwards": times["step"] / ((k + 1) * times["forward"]),
                    }
                )
    print(
        "ZO step over its forward passes (forward differences, Gaussian, in-place loop, "
        f"{args.threads} thread)"
    )
    print(table(rows, ["model", "K", "forward_ms", "step_ms", "step_over_forwards"]))

    dense, sparse = Problem("resnet20"), Problem("resnet20", 0.1)
    k = 20
    candidates = {
        "dense full": dense.step(k),
        "dense layerwise": dense.step(k, "layerwise"),
        "sparse90 full": sparse.step(k),
        "sparse90 vmap": sparse.step(k, "vmap"),
        "sparse90 layerwise": sparse.step(k, "layerwise"),
    }
    with torch.no_grad():
        times = interleaved_medians(candidates, max(3, args.repeats // 2))
    base = times["dense full"]
    sparse_rows = [
        {"variant": n, "step_ms": 1e3 * t, "speedup_vs_dense_full": base / t}
        for n, t in times.items()
    ]
    kept = sparse.mask.layer_densities()
    print(
        f"\nResNet-20, K = {k}, batch 32: 90 %-sparse NTK-SAP mask "
        f"(kept {sparse.mask.density:.3f}; first conv {next(iter(kept.values())):.2f}, "
        f"fc {list(kept.values())[-1]:.2f})"
    )
    print(table(sparse_rows, ["variant", "step_ms", "speedup_vs_dense_full"]))
    share = [p.numel() / max(1, sparse.mask.num_trained) for p in sparse.blocks.positions]
    print("trained coordinates per stage (share): " + " ".join(f"{s:.2f}" for s in share))
    mode_rows = execution_modes(args.repeats)
    generator_rows, generator_ratios = generator_costs(args.repeats)
    return {
        "max_step_over_forwards": max(r["step_over_forwards"] for r in rows),
        "sparse90_speedup_resnet20": base / times["sparse90 layerwise"],
        "batched_over_loop": {
            r["model"]: r["speedup_vs_loop"] for r in mode_rows if r["mode"] == "batched"
        },
        "rows": rows,
        "sparse_rows": sparse_rows,
        "mode_rows": mode_rows,
        "generator_rows": generator_rows,
        "philox_gaussian_over_torch": generator_ratios,
    }


def _torch_cpu_directions(out: torch.Tensor, seeds: list[int]) -> None:
    """``zo.generator: torch_cpu``: a fresh seeded CPU generator per direction."""
    from fpzo_ray.seeding import generator

    for row, seed in zip(out, seeds):
        row.normal_(generator=generator(seed))


def _philox_directions(
    kind: str, compiled: bool, group: int, out: torch.Tensor, seeds: list[int]
) -> None:
    """``zo.generator: philox`` as the protocol draws: ``group`` seeds per fill."""
    from fpzo_ray.zo import philox

    for start in range(0, len(seeds), group):
        philox.fill_many(
            kind, out[start : start + group], seeds[start : start + group], compiled=compiled
        )


#: (coordinates, K) of part 4: the digits CNN's and LeNet-5's directions at K = 20, and a
#: million-coordinate model's (one direction per fill, GROUP_NUMBERS).
GENERATOR_SIZES = ((1_898, 20), (61_706, 20), (1_000_000, 4))


def generator_costs(repeats: int) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Part 4: ns per number of a step's K directions as each generator draws them (Philox:
    ``GROUP_NUMBERS // d`` seeds per fill, as ``zo.perturbation.directions``), each candidate
    timed once per pass, the passes interleaved (the compiled fills compiled first)."""
    import statistics
    import time
    from functools import partial

    from fpzo_ray.bench.timing import PassRatios
    from fpzo_ray.zo import philox
    from fpzo_ray.zo.perturbation import GROUP_NUMBERS

    rows: list[dict[str, Any]] = []
    ratios: dict[str, dict[str, Any]] = {}
    for n, k in GENERATOR_SIZES:
        out = torch.empty(k, n)
        group = max(1, min(k, GROUP_NUMBERS // n))
        candidates: dict[str, Callable[[list[int]], Any]] = {
            "torch_cpu gaussian": partial(_torch_cpu_directions, out),
            "philox gaussian, compiled": partial(
                _philox_directions, philox.GAUSSIAN, True, group, out
            ),
            "philox rademacher, compiled": partial(
                _philox_directions, philox.RADEMACHER, True, group, out
            ),
            "philox gaussian, eager": partial(
                _philox_directions, philox.GAUSSIAN, False, group, out
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in candidates}
        for draw in candidates.values():
            draw(list(range(k)))  # warm up (compiles the compiled fills)
        for index in range(max(3, repeats)):
            seeds = [1000 + index * k + j for j in range(k)]
            for name, draw in candidates.items():
                started = time.perf_counter()
                draw(seeds)
                samples[name].append((time.perf_counter() - started) / (n * k) * 1e9)
        for name, values in samples.items():
            rows.append(
                {
                    "numbers": n,
                    "K": k,
                    "seeds_per_fill": group if name.startswith("philox") else 1,
                    "generator": name,
                    "ns_per_number": statistics.median(values),
                    "spread": f"{min(values):.2f}-{max(values):.2f}",
                }
            )
        ratio = PassRatios.of(samples["torch_cpu gaussian"], samples["philox gaussian, compiled"])
        ratios[str(n)] = ratio.keys("ratio", 1.0)
        print(f"philox gaussian (compiled) over torch_cpu, {n} numbers: {ratio.text(1.0)}")
    print("\nDirection draws, one thread (ns per number: median and range over the passes)")
    print(table(rows, ["numbers", "K", "seeds_per_fill", "generator", "ns_per_number", "spread"]))
    return rows, ratios


def peak_bytes(problem: Problem, step: Callable[[], Any]) -> int:
    """The step's peak of live tensor storages, as the simulator's memory meter counts it."""
    meter = MemoryMeter()
    meter.track(problem.flat, "parameters")
    meter.track(problem.x, "inputs")
    meter.track(problem.y, "inputs")
    with meter:
        step()
    return meter.peak_bytes


def execution_modes(repeats: int, k: int = 20) -> list[dict[str, Any]]:
    """Part 3: every model's dense step in each ``zo.batching`` mode, side by side."""
    rows = []
    for label, name, norm in MODE_MODELS:
        problem = Problem(name, norm=norm)
        shape = tuple(problem.x.shape[1:])
        modes = {m: problem.step(k, m) for m in ("loop", "batched", "batched 7", "vmap")}
        with torch.no_grad():
            times = interleaved_medians(modes, max(3, repeats // 2))
            peaks = {m: peak_bytes(problem, step) for m, step in modes.items()}
        chosen = auto_batching(problem.model, forward_flops(layer_flops(problem.model, shape)))
        for mode, seconds in times.items():
            rows.append(
                {
                    "model": label,
                    "mode": mode.replace("batched 7", "batched, chunks of 7")
                    + (" (auto)" if mode == chosen else ""),
                    "step_ms": 1e3 * seconds,
                    "speedup_vs_loop": times["loop"] / seconds,
                    "peak_MB": peaks[mode] / 1e6,
                    "peak_vs_loop": peaks[mode] / peaks["loop"],
                }
            )
    batch = ", ".join(f"{n} {SHAPES[n][2]}" for n in SHAPES)
    print(f"\nExecution modes, dense step, K = {k}, batches: {batch}")
    print(table(rows, ["model", "mode", "step_ms", "speedup_vs_loop", "peak_MB", "peak_vs_loop"]))
    return rows
