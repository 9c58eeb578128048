"""``zo.generator``: the direction streams of both generators, the Philox fill's switch to its
compiled form, and (on CUDA) the same bits on the GPU as on the CPU."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fpzo_ray.accounting.memory import MemoryMeter
from fpzo_ray.cache import CACHE_ENV
from fpzo_ray.seeding import generator
from fpzo_ray.zo import perturbation as P
from fpzo_ray.zo import philox
from fpzo_ray.zo.difference import FORWARD
from fpzo_ray.zo.estimator import EstimatorSpec, estimate_from_differences, loss_differences
from fpzo_ray.zo.execution import philox_build, philox_kernels
from fpzo_ray.zo.perturbation import (
    PHILOX,
    TORCH_CPU,
    DirectionStream,
    fill_gaussian,
    fill_rademacher,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("kind", [fill_gaussian, fill_rademacher])
def test_philox_stream_is_philox_fill_after_its_uniform(kind):
    stream = DirectionStream(12345, kind, PHILOX)
    u = stream.uniform()
    high, low = philox.position_words(12345, 0, 2)
    assert u == (high * 2**21 + (low >> 11)) / 2**53 and 0.0 <= u < 1.0
    z = stream.fill(torch.empty(3000))
    name = P.PHILOX_KINDS[kind]
    assert torch.equal(z, philox.fill(name, torch.empty(3000), 12345, 2))
    # without a uniform the direction starts at position 0
    assert torch.equal(
        DirectionStream(12345, kind, PHILOX).fill(torch.empty(10)),
        philox.fill(name, torch.empty(10), 12345, 0),
    )


def test_position_words_follow_the_tile_layout():
    # position 1024 t + 256 j + l reads word j of block 256 t + l
    seed, t, j, lane = 99, 2, 3, 17
    expected = int(philox.words(seed, 4 * (256 * t + lane) + j, 1)[0])
    assert philox.position_words(seed, 1024 * t + 256 * j + lane, 1) == [expected]


def test_torch_cpu_stream_draws_as_every_earlier_run_did():
    stream = DirectionStream(7, fill_gaussian, TORCH_CPU)
    gen = generator(7)
    assert stream.uniform() == float(torch.rand(1, generator=gen, dtype=torch.float64))
    assert torch.equal(stream.fill(torch.empty(50)), torch.empty(50).normal_(generator=gen))


def test_a_researchers_kind_needs_the_torch_generator():
    def uniform(out, gen):
        return out.uniform_(-(3**0.5), 3**0.5, generator=gen)

    with pytest.raises(ValueError, match="zo.generator: torch_cpu"):
        EstimatorSpec(FORWARD, uniform, 1e-3, PHILOX)
    with pytest.raises(ValueError, match="zo.generator"):
        EstimatorSpec(FORWARD, fill_gaussian, 1e-3, "mt")
    spec = EstimatorSpec(FORWARD, uniform, 1e-3, TORCH_CPU)
    assert spec.draw(3, torch.empty(1000)).abs().max() <= 3**0.5


def test_the_generators_workspace_is_not_charged_to_the_step():
    z = torch.empty(100_000)
    with MemoryMeter() as meter:
        P.direction(5, z.numel(), out=z)
        for drawn in P.directions(range(30), 50_000, fill_gaussian, PHILOX):
            z[:50_000].copy_(drawn)
    assert meter.peak_bytes == 0  # the fill's int64 words and the group are not counted


@pytest.mark.parametrize("generator_name", [PHILOX, TORCH_CPU])
def test_grouped_directions_equal_one_draw_per_seed(generator_name, monkeypatch):
    monkeypatch.setattr(P, "GROUP_NUMBERS", 3 * 700)  # groups of 3, the last one of 1
    seeds = [11, 12, 13, 14, 15, 16, 17]
    drawn = [z.clone() for z in P.directions(seeds, 700, fill_rademacher, generator_name)]
    for z, seed in zip(drawn, seeds, strict=True):
        assert torch.equal(
            z, P.direction(seed, 700, fill=fill_rademacher, generator_name=generator_name)
        )


@pytest.mark.slow
def test_philox_fills_switch_to_the_built_kernel_with_the_same_bits(monkeypatch, tmp_path):
    """A process starts a build of the package after its eager fills (here: at once), and
    uses it once built; every later process loads it at its first fill; the bits never
    change (builds for 10-30 s)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(philox_kernels, "_loaded", {})  # as in a fresh process
    in_temp = Path(default_cache_dir())  # where inductor keeps what it is not told to keep
    before = set(in_temp.rglob("*"))
    fills = P._PhiloxFills()
    fills.BUILD_AFTER_SECONDS = 0.0
    reference = {s: philox.fill_gaussian(torch.empty(4097), s, 3) for s in range(6)}
    deadline = time.monotonic() + 600
    while not fills._ready and time.monotonic() < deadline:
        fills._checked.clear()  # look at every fill, not every CHECK_SECONDS
        fills.fill(philox.GAUSSIAN, torch.empty(1, 4097), [0], 3)  # eager meanwhile
        time.sleep(0.2)
    log = philox_kernels.build_log(philox.GAUSSIAN, torch.float32)
    assert fills._ready == {(philox.GAUSSIAN, torch.float32)}, log.read_text()
    assert philox_kernels.package_path(philox.GAUSSIAN, torch.float32).is_file()
    for _ in range(100):  # the builder drops its lock just after publishing the package
        if not list(tmp_path.glob("*.lock")):
            break
        time.sleep(0.05)
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob("*partial*"))
    assert set(in_temp.rglob("*")) == before  # its precompiled headers are not in the temp folder
    # another process: the package is there at its first fill, loaded from its unpacked
    # folder in the cache, with no copy in the temp folder (that outlives the process)
    monkeypatch.setattr(philox_kernels, "_loaded", {})
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    later = P._PhiloxFills()
    for fills_now in (fills, later):
        for s, expected in reference.items():
            out = torch.empty(1, 4097)
            fills_now.fill(philox.GAUSSIAN, out, [s], 3)
            assert torch.equal(out[0], expected)
        many = torch.empty(len(reference), 4097)
        fills_now.fill(philox.GAUSSIAN, many, list(reference), 3)
        assert torch.equal(many, torch.stack(list(reference.values())))
    assert later._ready == {(philox.GAUSSIAN, torch.float32)}
    assert list(temp.iterdir()) == [] and not list(tmp_path.glob("*partial*"))
    assert list(tmp_path.glob("*.unpacked"))


def test_a_package_another_process_builds_is_awaited_not_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(philox_kernels, "_loaded", {})
    lock = philox_kernels.package_path(philox.RADEMACHER, torch.float32).with_suffix(".lock")
    lock.write_text(f"{socket.gethostname()} {os.getppid()}")  # a live builder
    assert philox_build.build(philox.RADEMACHER, torch.float32) is False
    assert lock.exists() and philox_kernels.load(philox.RADEMACHER, torch.float32) is None
    lock.write_text(f"elsewhere {os.getppid()}")  # another host's, recent
    assert philox_kernels.stale_lock(lock) is False


def test_the_lock_of_a_builder_that_died_is_stale(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = tmp_path / "x.lock"
    lock.write_text(f"{socket.gethostname()} {dead.pid}")
    assert philox_kernels.stale_lock(lock)
    lock.write_text(f"elsewhere {dead.pid}")
    old = time.time() - philox_kernels.STALE_LOCK_SECONDS - 1
    os.utime(lock, (old, old))
    assert philox_kernels.stale_lock(lock)


def test_a_failed_build_leaves_the_fills_eager_and_its_reason_in_the_log(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(philox_kernels, "_loaded", {})
    failing = [sys.executable, "-c", "import sys; print('no C++ compiler'); sys.exit(3)"]
    monkeypatch.setattr(philox_kernels, "build_command", lambda kind, dtype: failing)
    fills = P._PhiloxFills()
    fills.BUILD_AFTER_SECONDS = 0.0
    out = torch.empty(1, 2048)
    log = philox_kernels.build_log(philox.RADEMACHER, torch.float32)
    for _ in range(400):  # the detached builder writes its reason, then exits
        fills._checked.clear()  # look at every fill
        fills.fill(philox.RADEMACHER, out, [1], 0)
        if log.is_file() and "no C++ compiler" in log.read_text():
            break
        time.sleep(0.05)
    assert "no C++ compiler" in log.read_text() and not fills._ready
    assert torch.equal(out[0], philox.fill(philox.RADEMACHER, torch.empty(2048), 1, 0))
    with pytest.raises(RuntimeError, match="exit 3: no C\\+\\+ compiler"):
        philox_kernels.kernel(philox.RADEMACHER, torch.float32)


@CUDA
@pytest.mark.parametrize("kind", [philox.GAUSSIAN, philox.RADEMACHER])
def test_philox_fills_on_cuda_equal_the_cpus_bits(kind):
    for seed, offset, n in [(0, 0, 1), (2**63 + 5, 3, 70_001), (123, 1_000_003, 4096)]:
        cpu = philox.fill(kind, torch.empty(n), seed, offset)
        gpu = philox.fill(kind, torch.empty(n, device="cuda"), seed, offset)
        assert torch.equal(gpu.cpu(), cpu), (seed, offset, n)


@CUDA
def test_a_cuda_clients_estimate_is_rebuilt_bit_for_bit_on_the_cpu():
    spec = EstimatorSpec(FORWARD, fill_gaussian, 1e-3, PHILOX)
    target = torch.randn(5000, device="cuda")
    flat = torch.zeros(5000, device="cuda")
    kept = torch.arange(0, 5000, 3, device="cuda")
    seeds = list(range(100, 120))
    client = loss_differences(
        lambda: float(((flat - target) ** 2).sum()), flat, kept, seeds, spec, with_estimate=True
    )
    server = estimate_from_differences(client.loss_differences, seeds, spec, kept.numel())
    assert client.estimate is not None and torch.equal(client.estimate, server)


@pytest.mark.slow
def test_bench_zo_step_reports_the_generators_costs(monkeypatch, capsys):
    from fpzo_ray.bench import zo_step

    monkeypatch.setattr(zo_step, "GENERATOR_SIZES", ((300, 3), (5000, 2)))
    monkeypatch.setattr(P, "GROUP_NUMBERS", 600)  # 2 seeds a fill, then 1
    rows, ratios = zo_step.generator_costs(3)
    assert set(ratios) == {"300", "5000"} and all(r["ratio"] > 0 for r in ratios.values())
    assert [r["seeds_per_fill"] for r in rows if r["generator"].startswith("philox")] == [2] * 3 + [
        1
    ] * 3
    assert all(r["ns_per_number"] > 0 for r in rows)
    assert "philox gaussian (compiled) over torch_cpu, 300 numbers" in capsys.readouterr().out
