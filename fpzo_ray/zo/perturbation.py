"""Seeded random directions over the trained coordinates.

Direction ``k`` of client ``c``'s local step ``s`` in round ``r`` is drawn from its own seed
``derive_seed(run_seed, PERTURBATION, r, c, s, k)``, so the server (or a resumed run, or
another machine) regenerates exactly the numbers the client used. Only the trained (kept)
coordinates are perturbed.

Two things make a direction out of a seed:

* the *generator* (``zo.generator``), the stream of random bits of a seed:

  - ``philox`` (the default): the counter-based Philox-4x32-10 of :mod:`fpzo_ray.zo.philox`,
    made of torch integer ops. A direction is filled in place on the device that uses it
    (no host copy on a GPU), and number ``i`` of a seed is the same on every device and in
    every chunking. On the CPU its fill runs compiled ahead of time once the machine has
    built the kernel (:class:`_PhiloxFills`); eager and compiled fills give the same bits.
  - ``torch_cpu``: torch's CPU Mersenne Twister (``torch.Generator``), drawn on the CPU and
    copied to the device. The generator of every run before ``zo.generator`` existed: it
    reproduces their numbers.

* the *direction kind* (``zo.direction``; the registry's ``DIRECTION_KINDS``), a *fill
  function* ``fill(out, gen) -> out`` that overwrites the float32 CPU vector ``out`` with the
  next direction of a ``torch.Generator``'s stream. Shipped: :func:`fill_gaussian` (N(0, I))
  and :func:`fill_rademacher` (uniform signs); both have E[z z^T] = I, so the estimators need
  no kind-specific scaling. Under ``philox`` the shipped kinds are Philox's own transforms of
  its words (:func:`fpzo_ray.zo.philox.fill_gaussian` / ``fill_rademacher``). A researcher's
  kind is any module-level function with the torch signature and that property
  (``my_directions:fill_sparse``); it draws from a ``torch.Generator``, so it runs with
  ``zo.generator: torch_cpu`` (the configuration says so otherwise).

A direction is read from a :class:`DirectionStream` opened on its seed: :meth:`fill` draws
the direction, and the layer-wise variant first draws the uniform that picks its block
(:meth:`uniform`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils._python_dispatch import _disable_current_modes

from fpzo_ray.registry import DIRECTION_GENERATORS
from fpzo_ray.seeding import Purpose, derive_seed, generator
from fpzo_ray.zo import philox
from fpzo_ray.zo.execution import philox_kernels

logger = logging.getLogger(__name__)

#: ``fill(out, gen) -> out``: a direction kind.
DirectionFill = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

PHILOX, TORCH_CPU = DIRECTION_GENERATORS  # ``zo.generator``'s values


def perturbation_seeds(
    run_seed: int, round_index: int, client_id: int, step: int, num_perturbations: int
) -> list[int]:
    """The K seeds of one client step."""
    return [
        derive_seed(run_seed, Purpose.PERTURBATION, round_index, client_id, step, k)
        for k in range(num_perturbations)
    ]


def fill_gaussian(out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``out`` filled with N(0, 1) draws from ``gen``."""
    return out.normal_(generator=gen)


def fill_rademacher(out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``out`` filled with uniform random signs from ``gen``."""
    # The signs of Gaussian draws: 4x faster here than bernoulli_, and exactly uniform.
    out.normal_(generator=gen).sign_()
    return out.add_(out == 0)  # a draw of exactly 0.0 (probability ~0) becomes +1


#: The Philox form of each shipped kind: same distribution, Philox's bits.
PHILOX_KINDS: dict[DirectionFill, str] = {
    fill_gaussian: philox.GAUSSIAN,
    fill_rademacher: philox.RADEMACHER,
}


def check_generator(kind: DirectionFill, generator_name: str) -> None:
    """Raise ``ValueError`` unless ``kind`` can be drawn from ``generator_name``."""
    if generator_name not in DIRECTION_GENERATORS:
        raise ValueError(
            f"zo.generator: got {generator_name!r}, expected one of {DIRECTION_GENERATORS}"
        )
    if generator_name == PHILOX and kind not in PHILOX_KINDS:
        name = f"{getattr(kind, '__module__', '?')}:{getattr(kind, '__name__', kind)}"
        raise ValueError(
            f"zo.direction: {name} draws from a torch.Generator, which zo.generator: philox "
            "does not provide; set zo.generator: torch_cpu to use it"
        )


class DirectionStream:
    """The random numbers of one seed, read in order: at most one :meth:`uniform` first,
    then directions (:meth:`fill`)."""

    def __init__(self, seed: int, kind: DirectionFill, generator_name: str) -> None:
        self._seed = seed
        self._kind = kind
        self._philox = PHILOX_KINDS[kind] if generator_name == PHILOX else None
        self._gen = None if self._philox else generator(seed)
        self._position = 0  # philox: the next stream position

    def uniform(self) -> float:
        """A float64 uniform in [0, 1), exactly representable (53 bits).

        ``torch_cpu``: ``torch.rand`` from the seed's generator (as every earlier run drew
        it). ``philox``: the top 32 and 21 bits of the words at stream positions 0 and 1
        (:func:`philox.position_words`), after which fills start at position 2.
        """
        if self._gen is not None:
            return float(torch.rand(1, generator=self._gen, dtype=torch.float64))
        high, low = philox.position_words(self._seed, self._position, 2)
        self._position += 2
        return (high * (1 << 21) + (low >> 11)) / float(1 << 53)

    def fill(self, out: torch.Tensor) -> torch.Tensor:
        """``out`` (a float32 vector on any device) overwritten with the next direction."""
        if self._gen is not None:
            if out.device.type == "cpu" and out.is_contiguous():
                return self._kind(out, self._gen)
            return out.copy_(self._kind(torch.empty(out.numel()), self._gen))
        assert self._philox is not None
        rows = out.view(1, -1) if out.is_contiguous() else out.unsqueeze(0)
        _FILLS.fill(self._philox, rows, [self._seed], self._position)
        self._position += out.numel()
        return out


#: Numbers a group of directions holds at most (:func:`directions`): 4 MB of float32.
GROUP_NUMBERS = 1 << 20


def directions(
    seeds: Sequence[int],
    dim: int,
    kind: DirectionFill,
    generator_name: str,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """The directions of ``seeds`` (length ``dim``, float32, on ``device``) in order, each
    valid until the next one is requested.

    Under ``philox`` they are drawn ``GROUP_NUMBERS // dim`` at a time in one fill
    (:func:`philox.fill_many`): a fill's overhead is ~0.5-1 ms eager, more than drawing a
    small model's direction. ``torch_cpu`` draws one direction at a time, as before. The
    buffer they are drawn into is simulator workspace, not the device's memory: it is hidden
    from the memory meter, like the fill's temporaries (a device draws one direction into
    the buffer it perturbs with, which the callers allocate).
    """
    if generator_name != PHILOX:
        with _disable_current_modes():
            z = torch.empty(dim, dtype=torch.float32, device=device)
        for seed in seeds:
            yield DirectionStream(seed, kind, generator_name).fill(z)
        return
    check_generator(kind, generator_name)
    size = max(1, min(len(seeds), GROUP_NUMBERS // max(dim, 1)))
    with _disable_current_modes():
        group = torch.empty(size, dim, dtype=torch.float32, device=device)
    for start in range(0, len(seeds), size):
        chunk = list(seeds[start : start + size])
        rows = group[: len(chunk)]
        _FILLS.fill(PHILOX_KINDS[kind], rows, chunk, 0)
        yield from rows


class _PhiloxFills:
    """Runs the process's Philox fills: compiled (:mod:`fpzo_ray.zo.execution.philox_kernels`) once
    the machine has the kernel's package, eager until then, and starts a detached process
    building the package once this process has spent ``BUILD_AFTER_SECONDS`` in eager fills.

    Why: both give the same bits. A built package loads in ~2 ms and fills at 1-3 ns a
    number, against 18-55 eager plus ~1 ms of per-fill overhead; building it costs 10-30 s
    of one core, once per machine and torch version, which a short run (a test, a few rounds
    of a small model) would not earn back, while a long run does (and every later process on
    the machine gets the package for free). Meanwhile this process looks for the package
    every ``CHECK_SECONDS``. A failed build (no C++ compiler, say) leaves its reason in the
    build log and the fills eager. On other devices the fill is always eager (the bit-exact
    one there).
    """

    #: Seconds of eager CPU fills in a process before it starts a build.
    BUILD_AFTER_SECONDS = 2.0
    #: Seconds between looks for the package.
    CHECK_SECONDS = 5.0

    def __init__(self) -> None:
        self._eager_seconds = 0.0
        self._ready: set[tuple[str, torch.dtype]] = set()
        self._started: set[tuple[str, torch.dtype]] = set()
        self._checked: dict[tuple[str, torch.dtype], float] = {}

    def fill(self, kind: str, out: torch.Tensor, seeds: Sequence[int], offset: int) -> None:
        """:func:`philox.fill_many` of ``out`` ((len(seeds), n)), compiled when ready."""
        on_cpu = out.device.type == "cpu"
        compiled = on_cpu and self._compiled(kind, out.dtype)
        started = time.perf_counter()
        # The fill's temporaries are invisible to dispatch modes (the memory meter): a device
        # computes each number in registers, and the generator is no part of the step's memory.
        with _disable_current_modes():
            philox.fill_many(kind, out, seeds, offset, compiled=compiled)
        if on_cpu and not compiled:
            self._eager_seconds += time.perf_counter() - started
            key = (kind, out.dtype)
            if self._eager_seconds >= self.BUILD_AFTER_SECONDS and key not in self._started:
                self._start_build(key)

    def _compiled(self, kind: str, dtype: torch.dtype) -> bool:
        key = (kind, dtype)
        if key in self._ready:
            return True
        now = time.monotonic()
        if now - self._checked.get(key, -self.CHECK_SECONDS) < self.CHECK_SECONDS:
            return False
        self._checked[key] = now
        if philox_kernels.load(kind, dtype) is None:
            return False
        self._ready.add(key)
        return True

    def _start_build(self, key: tuple[str, torch.dtype]) -> None:
        self._started.add(key)
        log = philox_kernels.build_log(*key)
        try:
            philox_kernels.start_build(*key, detach=True)
        except OSError as exc:  # a read-only cache folder, say: stay eager
            logger.warning("philox fills stay eager: cannot start a build (%s)", exc)
            return
        logger.info("building the compiled philox fills in the background (log: %s)", log)


_FILLS = _PhiloxFills()


def direction(
    seed: int,
    dim: int,
    out: torch.Tensor | None = None,
    fill: DirectionFill = fill_gaussian,
    generator_name: str = PHILOX,
) -> torch.Tensor:
    """The direction of ``seed``: length ``dim``, float32, in ``out`` (or a new CPU vector)."""
    if out is None:
        out = torch.empty(dim, dtype=torch.float32)
    return DirectionStream(seed, fill, generator_name).fill(out)
