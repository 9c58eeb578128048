"""Philox-4x32-10: a counter-based random generator made of torch tensor ops only.

Why a counter-based generator: a ZO client draws K directions of d numbers from seeds and the
server regenerates exactly the same numbers to rebuild the gradient estimate. torch's CPU
Mersenne Twister gives that only on the CPU (CUDA generators produce other streams), and it
is sequential: number i of a stream can only be reached by drawing the i numbers before it.
Philox (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11;
the Random123 library) is a keyed bijection of a 128-bit counter: word ``i`` of a stream is a
pure function of ``(seed, i)``, computed independently of every other word, so any slice of
a direction can be drawn on any device, in any chunking, and give the same bits.

Everything here is integer arithmetic on int64 tensors (32-bit words held in int64, values
in [0, 2**32)) plus, for Gaussians, float64 additions, subtractions, multiplications and
divisions, which IEEE 754 rounds correctly and torch computes with the plain instructions on
every device. No library math function is used, not even ``torch.sqrt``: on the CPU torch's
float64 square root is not correctly rounded (1.2 % of the radii here came out 1 ulp away
from ``math.sqrt``/``numpy.sqrt``), so :func:`sqrt_positive` is built from multiplications
too, like the log, sin and cos of :func:`gaussian_pairs`. A seed thus gives the same bits on
every device that runs these ops one at a time, as eager PyTorch does (checked on the CPU
against the same ops in numpy; not yet measured on a GPU).

Streams
-------
A 64-bit ``seed`` is the Philox key ``(seed & 0xFFFFFFFF, seed >> 32)``. Word ``i`` (``i >= 0``)
of its stream is word ``i % 4`` of Philox-4x32-10 of the counter
``(b & 0xFFFFFFFF, b >> 32, 0, 0)``, block ``b = i // 4`` (:func:`words`).

The fills (:func:`fill_gaussian`, :func:`fill_rademacher`) number their elements by *stream
position* ``p`` (``offset`` + index in ``out``) and read the words in *tiles* of
``TILE_BLOCKS = 256`` blocks (1,024 positions): position ``p = 1024 t + 256 j + l``
(``j`` in 0..3, ``l`` in 0..255) takes word ``j`` of block ``b = 256 t + l``. So the four
words of a block land 256 positions apart, and 256 consecutive positions come from the same
word of 256 consecutive blocks: a kernel that computes one block per vector lane produces
four rows, and copying them into ``out`` moves runs of 256 contiguous numbers (measured on one
thread: 0.12-0.36 ns per number, like a plain copy; into the natural order, every word next
to its block's others, the same copy took 1.8-3.3 ns, more than a whole compiled fill).

- Rademacher: position ``p`` is ``+1.0`` if bit 31 of its word is 0, else ``-1.0``.
- Gaussian: the positions of words 0 and 1 of block ``b`` (``1024 t + l`` and
  ``1024 t + 256 + l``) are the Box-Muller pair of word 0 (radius) and word 1 (angle); the
  positions of words 2 and 3 (``+ 512``, ``+ 768``) the pair of word 2 (radius) and word 3
  (angle) (:func:`gaussian_pairs`).

Every element is a pure function of ``(seed, its stream position)``: a fill may start at any
offset and have any length (there is no alignment rule; tiles that a fill only partly covers
are computed whole and cut, which costs at most 1,023 extra numbers at each end).

Integer products
----------------
Philox needs the full 64-bit product of two 32-bit words. In int64 that product can exceed
2**63 - 1, and signed overflow is undefined behaviour in C++ (the language of torch's CPU and
CUDA kernels), even though the hardware wraps. So no product here ever overflows: both Philox
multipliers are >= 2**31, and with ``m' = m - 2**32`` (in [-2**31, 0)) and ``x`` in [0, 2**32),
``p = x * m'`` lies in (-2**63, 0]. Since ``m * x = p + x * 2**32``::

    lo = p & 0xFFFFFFFF        # two's complement bits of p: (m * x) mod 2**32
    hi = (p >> 32) + x         # arithmetic shift = floor(p / 2**32); the sum is < 2**32

which relies only on int64 multiplication without overflow, ``&`` on two's complement int64
and arithmetic ``>>`` of negative int64 (torch's documented behaviour on every backend).
torch.uint32 tensors are no option in torch 2.14: on the CPU ``>>`` and ``+`` are not
implemented for them (``"rshift_cpu" not implemented for 'UInt32'``), nor ``>>`` for uint64.

Compiled fills
--------------
Eagerly a Gaussian fill runs ~300 tensor ops per chunk of 65,536 numbers: 35-55 ns per number
on one CPU thread, where torch's own ``normal_`` takes 3-5. ``compiled=True`` runs the same
function compiled by inductor ahead of time (:mod:`fpzo_ray.zo.execution.philox_kernels`, CPU only):
one fused loop over 16 blocks per step (AVX-512), 1-3 ns per number, plus a few
microseconds per call. It is bit-identical to the eager fill because inductor's C++ is built
with ``-ffp-contract=off`` and without unsafe math (checked before building; tested on many
seeds). The first use on a machine builds the package for ~30 s per (kind, dtype); later
processes load it in milliseconds. Triton, inductor's CUDA backend, contracts ``a * b + c``
into fused multiply-adds by default, which would change the Gaussian bits: on CUDA the eager
fill is the bit-exact one (its ops are separate kernels), and memory-bound there anyway.
"""

from __future__ import annotations

import array
import math
from collections.abc import Sequence

import torch

from fpzo_ray.zo.execution import philox_kernels

#: Philox-4x32 multipliers and Weyl key increments (Random123's PHILOX_M4x32_0/1, W32_0/1).
M0 = 0xD2511F53
M1 = 0xCD9E8D57
W0 = 0x9E3779B9
W1 = 0xBB67AE85
ROUNDS = 10

#: Blocks per tile of the fills' stream positions (module docstring).
TILE_BLOCKS = 256
TILE_POSITIONS = 4 * TILE_BLOCKS

_MASK32 = 0xFFFFFFFF
_M0_NEG = M0 - (1 << 32)  # m - 2**32: the products x * m' stay inside int64 (module doc)
_M1_NEG = M1 - (1 << 32)
_MAX_WORDS = 1 << 64  # word indices i < 2**64: blocks b < 2**62 fit an int64
_HIGH_SPAN = 1 << 32  # blocks sharing one high counter word

#: Blocks per eager chunk, over all seeds of a fill (64 tiles: 65,536 numbers): smaller
#: chunks pay the per-op overhead of the ~300 ops more often (16 tiles: ~55 ns per number,
#: 64-256 tiles: 34-39 ns, one thread), and chunking keeps the temporaries of a
#: million-number fill bounded.
EAGER_CHUNK_BLOCKS = 64 * TILE_BLOCKS

#: Per seed, a fill's kernel takes the first block's low counter word and the 19
#: :func:`schedule_constants`.
NUM_PARAMS = 20

#: A 32-bit word: a Python int (the same for every block) or an int64 tensor of words.
Word = int | torch.Tensor


def round_keys(key: tuple[int, int]) -> list[tuple[int, int]]:
    """The ten round keys of ``key``: the key bumped by (W0, W1) mod 2**32 before each round."""
    k0, k1 = key
    if not (0 <= k0 <= _MASK32 and 0 <= k1 <= _MASK32):
        raise ValueError(f"a Philox key is two 32-bit words, got {key!r}")
    keys = []
    for _ in range(ROUNDS):
        keys.append((k0, k1))
        k0, k1 = (k0 + W0) & _MASK32, (k1 + W1) & _MASK32
    return keys


def _philox_rounds(
    x0: Word, x1: Word, x2: Word, x3: Word, keys: Sequence[tuple[int, int]]
) -> tuple[Word, Word, Word, Word]:
    """The ten Philox-4x32 rounds (Random123's philox4x32round), word by word.

    Round: ``(hi0, lo0) = M0 * x0``, ``(hi1, lo1) = M1 * x2`` (64-bit products split into
    32-bit halves), then ``(x0, x1, x2, x3) = (hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0)``.
    Python operators only, so a word may be an int or an int64 tensor.
    """
    for k0, k1 in keys:
        p0 = x0 * _M0_NEG  # in (-2**63, 0]: no int64 overflow (module docstring)
        p1 = x2 * _M1_NEG
        hi0 = (p0 >> 32) + x0
        hi1 = (p1 >> 32) + x2
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, p1 & _MASK32, hi0 ^ x3 ^ k1, p0 & _MASK32
    return x0, x1, x2, x3


def philox4x32_10(counters: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """Philox-4x32-10 of each row of ``counters`` ((n, 4) int64 words in [0, 2**32)) under
    ``key`` (two 32-bit words): an (n, 4) int64 tensor of output words, on counters' device.

    The plain block function, checked against Random123's known-answer vectors in the tests;
    the streams use a faster schedule of the same rounds (:func:`_philox_low_counter`).
    """
    if counters.ndim != 2 or counters.shape[1] != 4:
        raise ValueError(f"counters must have shape (n, 4), got {tuple(counters.shape)}")
    if counters.dtype != torch.int64:
        raise ValueError(f"counters must be int64 (32-bit words), got {counters.dtype}")
    c = counters.unbind(1)
    out = _philox_rounds(c[0], c[1], c[2], c[3], round_keys(key))
    return torch.stack([torch.as_tensor(w) for w in out], dim=1)


def seed_key(seed: int) -> tuple[int, int]:
    """The Philox key of a 64-bit seed: (low 32 bits, high 32 bits)."""
    if not 0 <= seed < (1 << 64):
        raise ValueError(f"a seed is a 64-bit unsigned integer, got {seed}")
    return seed & _MASK32, seed >> 32


def _mulhilo(m: int, x: int) -> tuple[int, int]:
    return (m * x) >> 32, (m * x) & _MASK32


def schedule_constants(seed: int, high: int) -> list[int]:
    """The 19 per-call constants of :func:`_philox_low_counter` for counters
    ``(c0, high, 0, 0)`` under ``seed``'s key: what does not depend on ``c0``, precomputed.

    After round 0 words 0 and 1 are ``(high ^ k0, 0)`` for every block, and round 1's product
    of word 0 is then the same for every block too; folding these (and the round keys they
    meet) into constants saves 14 of the 120 vector ops of the ten rounds.
    """
    keys = round_keys(seed_key(seed))
    hi, lo = _mulhilo(M0, high ^ keys[0][0])  # round 1's product of word 0 (a constant)
    consts = [keys[0][1], keys[1][0], hi ^ keys[1][1], keys[2][0], lo ^ keys[2][1]]
    for k0, k1 in keys[3:]:
        consts += [k0, k1]
    return consts


def _philox_low_counter(
    c0: torch.Tensor, consts: Sequence[int] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox-4x32-10 of the counters ``(c0, high, 0, 0)``: the same rounds as
    :func:`_philox_rounds`, with the parts that are the same for all blocks precomputed in
    ``consts`` (:func:`schedule_constants`; Python ints eagerly, an int64 tensor when
    compiled, so that a new seed needs no recompilation)."""
    # round 0 on (c0, high, 0, 0): -> (high ^ k0, 0, hi(M0 c0) ^ k1, lo(M0 c0))
    p = c0 * _M0_NEG
    x2 = ((p >> 32) + c0) ^ consts[0]
    x3 = p & _MASK32
    # round 1: word 0's product (hi, lo) is a constant
    #   -> (hi(M1 x2) ^ k0, lo(M1 x2), x3 ^ hi ^ k1, lo)
    p = x2 * _M1_NEG
    x0 = ((p >> 32) + x2) ^ consts[1]
    x1 = p & _MASK32
    x2 = x3 ^ consts[2]
    # round 2, with word 3 the constant lo (folded into consts[4])
    p0 = x0 * _M0_NEG
    p1 = x2 * _M1_NEG
    x0, x1, x2, x3 = (
        ((p1 >> 32) + x2) ^ x1 ^ consts[3],
        p1 & _MASK32,
        ((p0 >> 32) + x0) ^ consts[4],
        p0 & _MASK32,
    )
    for r in range(3, ROUNDS):
        k0, k1 = consts[2 * r - 1], consts[2 * r]
        p0 = x0 * _M0_NEG
        p1 = x2 * _M1_NEG
        x0, x1, x2, x3 = (
            ((p1 >> 32) + x2) ^ x1 ^ k0,
            p1 & _MASK32,
            ((p0 >> 32) + x0) ^ x3 ^ k1,
            p0 & _MASK32,
        )
    return x0, x1, x2, x3


def _check_range(offset: int, count: int) -> None:
    if offset < 0 or count < 0:
        raise ValueError(f"offset and count must be >= 0, got offset={offset}, count={count}")
    if offset + count > _MAX_WORDS:
        raise ValueError(f"a stream has 2**64 words: offset + count = {offset + count}")


def _pieces(first: int, end: int, most: int) -> list[tuple[int, int]]:
    """[first, end) (blocks) cut at multiples of 2**32 (one high counter word per piece) and
    into pieces of at most ``most`` blocks."""
    out = []
    while first < end:
        stop = min(end, first + most, (first // _HIGH_SPAN + 1) * _HIGH_SPAN)
        out.append((first, stop))
        first = stop
    return out


def words(
    seed: int, offset: int, count: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Words ``offset, ..., offset + count - 1`` of ``seed``'s stream: an int64 tensor of
    ``count`` values in [0, 2**32) on ``device``.

    Word ``i`` is word ``i % 4`` of Philox-4x32-10 of the counter ``(b & 0xFFFFFFFF, b >> 32,
    0, 0)``, ``b = i // 4``, under the key ``(seed & 0xFFFFFFFF, seed >> 32)``: a pure function
    of ``(seed, i)``, so any split of a range into chunks gives the same words.
    """
    _check_range(offset, count)
    seed_key(seed)
    if count == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    first, end = offset // 4, -(-(offset + count) // 4)
    parts = []
    for a, b in _pieces(first, end, end - first):
        c0 = torch.arange(b - a, dtype=torch.int64, device=device) + (a & _MASK32)
        parts.append(torch.stack(_philox_low_counter(c0, schedule_constants(seed, a >> 32)), 1))
    start = offset - 4 * first
    return torch.cat(parts).reshape(-1)[start : start + count]


# --------------------------------------------------------------------------------------------
# Gaussians: Box-Muller in float64, with log, sin and cos built from correctly rounded ops.

# The float constants are literals inside the functions (or computed there from literals):
# tracing for compilation turns a float read from a global into a graph input converted at
# every call (a few us each, ~30 of them), whereas literals are baked into the kernel.

#: log(2), sqrt(2) and pi/4 as float64 literals (equal to Python's math values; tested).
LN2 = 0.6931471805599453
SQRT2 = 1.4142135623730951
QUARTER_PI = 0.7853981633974483


def log_coeffs() -> list[float]:
    """log(m) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...), s = (m - 1)/(m + 1), |s| <= 0.1716:
    ten terms (to s^19/19) leave a truncation error below 3e-17 relative."""
    return [1.0 / (2 * j + 1) for j in range(10)]


def sin_coeffs() -> list[float]:
    """Taylor series of (sin x)/x - 1 in y = x^2, from -y/3! to y^7/15!: truncation error
    below 6e-17 relative for 0 < x < pi/4."""
    return [(1.0 if j % 2 == 0 else -1.0) / math.factorial(2 * j + 1) for j in range(1, 8)]


def cos_coeffs() -> list[float]:
    """Taylor series of cos x - 1 in y = x^2, from -y/2! to y^8/16!: truncation error below
    3e-18 relative for 0 < x < pi/4."""
    return [(1.0 if j % 2 == 0 else -1.0) / math.factorial(2 * j) for j in range(1, 9)]


def _horner(y: torch.Tensor, coeffs: Sequence[float]) -> torch.Tensor:
    """``sum(c_j y^j)`` by Horner's rule, one correctly rounded op at a time."""
    acc = y * coeffs[-1] + coeffs[-2]
    for c in reversed(coeffs[:-2]):
        acc = acc * y + c
    return acc


def log_unit(word: torch.Tensor) -> torch.Tensor:
    """``log(u)`` in float64 for ``u = (word + 0.5) / 2**32`` (in (0, 1), never 0 or 1).

    From exactly rounded ops only: ``u = 2**e m`` with ``m`` in [sqrt(1/2), sqrt(2)) read off
    the float64 bits (exact integer ops), then ``log u = e log 2 + 2 atanh((m - 1)/(m + 1))``
    by a fixed series. Within a few ulp of ``torch.log`` (tested).
    """
    u = (word.to(torch.float64) + 0.5) * 2.0**-32  # exact: 33 significant bits, u >= 2**-33
    bits = u.view(torch.int64)
    # Subtracting the bits of 1/sqrt(2) (0x3FE6A09E667F3BCD) carries into the exponent field
    # exactly when u's mantissa is >= sqrt(2)'s (equality needs 53 significant bits: never
    # here), so the exponent field of t is e + 64 with m = u / 2**e in [sqrt(1/2), sqrt(2)).
    # The 64 keeps t >= 0 (u >= 2**-64): only shifts and masks of non-negative int64.
    t = bits - (0x3FE6A09E667F3BCD - (64 << 52))
    exponent_bits = t & ~((1 << 52) - 1)
    m = ((bits + (64 << 52)) - exponent_bits).view(torch.float64)
    ef = (t >> 52).to(torch.float64) - 64.0
    # m - 1 is exact (Sterbenz). A tensor / tensor division: torch turns a division by a
    # Python scalar into a multiplication by its (rounded) reciprocal on some devices.
    s = (m - 1.0) / (m + 1.0)
    t2 = s * _horner(s * s, log_coeffs())
    return ef * 0.6931471805599453 + (t2 + t2)  # LN2


def sin_cos_octant(word: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sin x, cos x)`` in float64 for the angle ``x = (k + 0.5) pi / 2**31`` of the low 29
    bits ``k`` of ``word`` (so ``0 < x < pi/4``).

    Taylor polynomials in ``x^2`` evaluated one correctly rounded op at a time: on (0, pi/4)
    no argument reduction is needed. Within a few ulp of ``torch.sin``/``torch.cos`` (tested).
    """
    # (k + 0.5) * (QUARTER_PI * 2**-29): the step is exact, the product rounded once
    x = ((word & ((1 << 29) - 1)).to(torch.float64) + 0.5) * (0.7853981633974483 * 2.0**-29)
    y = x * x
    sin = x + x * (y * _horner(y, sin_coeffs()))
    cos = 1.0 + y * _horner(y, cos_coeffs())
    return sin, cos


def sqrt_positive(v: torch.Tensor) -> torch.Tensor:
    """``sqrt(v)`` for positive normal float64 ``v``, from exactly rounded ops only.

    1/sqrt(v) to within 3.5 % from the float64 bits (the integer "magic constant" guess:
    halve the exponent), four Newton steps ``z (1.5 - v/2 z^2)`` (multiplications only; the
    relative error squares at each: 3.5e-2, 1.8e-3, 5e-6, 4e-11, then rounding), then
    ``v z``: within 2 ulp of the correctly rounded root (tested). ``torch.sqrt`` is not used
    because on the CPU it is not correctly rounded for float64 (module docstring).
    """
    z = (0x5FE6EB50C7B537A9 - (v.view(torch.int64) >> 1)).view(torch.float64)
    half = v * 0.5
    for _ in range(4):
        z = z * (1.5 - (half * z) * z)
    return v * z


def gaussian_pairs(radius: torch.Tensor, angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Box-Muller pair (float64) of a radius word and an angle word (int64 tensors).

    ``r = sqrt(-2 log u)`` with ``u = (radius + 0.5) / 2**32`` (:func:`log_unit`,
    :func:`sqrt_positive`), and an angle ``theta`` uniform on the circle: the angle ``x`` in
    (0, pi/4) of the angle word's low 29 bits (:func:`sin_cos_octant`) is carried into one of
    the eight octants by its top three bits (bit 29 swaps cos and sin, i.e.
    ``theta = pi/2 - x``; bits 30 and 31 negate the first and the second number), and
    ``(first, second) = r (cos theta, sin theta)``: two independent N(0, 1) numbers.
    ``u >= 2**-33`` caps ``|first|, |second|`` at sqrt(66 log 2) ~ 6.76 (N(0, 1) exceeds it
    with probability 1.4e-11).
    """
    r = sqrt_positive(log_unit(radius) * -2.0)
    sin, cos = sin_cos_octant(angle)
    swap = (angle & (1 << 29)) != 0
    first = r * torch.where(swap, sin, cos)
    second = r * torch.where(swap, cos, sin)
    first = torch.where((angle & (1 << 30)) != 0, -first, first)
    second = torch.where(angle >= (1 << 31), -second, second)
    return first, second


# --------------------------------------------------------------------------------------------
# Fills.

GAUSSIAN = "gaussian"
RADEMACHER = "rademacher"


def _tile_rows(
    params: torch.Tensor, num_blocks: int, kind: str, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The fill values of ``num_blocks`` blocks for each of S seeds, as a (4, S, num_blocks)
    tensor: row ``j`` is computed from word ``j`` (Rademacher) or is the first/second number
    of the pair of words (0, 1) or (2, 3) (Gaussian). ``params`` ((P, S, 1) int64) holds per
    seed the first block's low counter word and the :func:`schedule_constants` of its high
    word and key. The same function runs eagerly and compiled ahead of time
    (:mod:`fpzo_ray.zo.execution.philox_kernels`; one int64 tensor: the seeds and offsets are data,
    not constants of the kernel)."""
    c0 = torch.arange(num_blocks, dtype=torch.int64, device=device) + params[0]
    x = _philox_low_counter(c0, params[1:])
    if kind == GAUSSIAN:  # the pairs of words (0, 1) and (2, 3) in one pass: half the ops
        first, second = gaussian_pairs(torch.stack([x[0], x[2]]), torch.stack([x[1], x[3]]))
        rows = [first[0], second[0], first[1], second[1]]
    else:
        rows = [(w >> 31) * -2 + 1 for w in x]
    return torch.stack([v.to(dtype) for v in rows])


def _place(rows: torch.Tensor, first_pos: int, out: torch.Tensor, offset: int) -> None:
    """Copy the stream positions of ``rows`` ((4, S, T * TILE_BLOCKS): T tiles from stream
    position ``first_pos``) that ``out`` ((S, n), positions ``offset, ..., offset + n - 1``)
    covers into it: whole tiles in runs of 256 numbers, partial ones (at most one at each
    end) cut from a reshaped copy of that tile alone."""
    num_seeds, n = out.shape
    per = TILE_POSITIONS
    tiles = rows.view(4, num_seeds, -1, TILE_BLOCKS).permute(1, 2, 0, 3)  # [s, t, j, l]
    lo, hi = max(offset, first_pos), min(offset + n, first_pos + per * tiles.shape[1])
    if lo >= hi:
        return
    whole_a, whole_b = -(-(lo - first_pos) // per), (hi - first_pos) // per
    if whole_a < whole_b:
        start = first_pos + per * whole_a - offset
        dst = out[:, start : start + per * (whole_b - whole_a)]
        dst.view(num_seeds, -1, 4, TILE_BLOCKS).copy_(tiles[:, whole_a:whole_b])
    for t in sorted({(lo - first_pos) // per, (hi - 1 - first_pos) // per}):
        if whole_a <= t < whole_b:
            continue
        tile_start = first_pos + per * t
        a, b = max(lo, tile_start), min(hi, tile_start + per)
        part = tiles[:, t].reshape(num_seeds, per)[:, a - tile_start : b - tile_start]
        out[:, a - offset : b - offset].copy_(part)


def fill_many(
    kind: str,
    out: torch.Tensor,
    seeds: Sequence[int],
    offset: int = 0,
    *,
    compiled: bool = False,
) -> torch.Tensor:
    """Row ``s`` of ``out`` ((len(seeds), n), float32 or float64, any device) overwritten with
    the ``kind`` (:data:`GAUSSIAN` or :data:`RADEMACHER`) numbers at stream positions
    ``offset, ..., offset + n - 1`` of ``seeds[s]``: what :func:`fill` gives row by row, the
    same bits, in one pass over all seeds (one call's overhead, not one per seed)."""
    if kind not in (GAUSSIAN, RADEMACHER):
        raise ValueError(f"kind must be {GAUSSIAN!r} or {RADEMACHER!r}, got {kind!r}")
    if out.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"out must be float32 or float64, got {out.dtype}")
    if out.ndim != 2 or out.shape[0] != len(seeds):
        raise ValueError(f"out must have shape ({len(seeds)}, n), got {tuple(out.shape)}")
    if compiled and out.device.type != "cpu":
        raise ValueError(
            "compiled fills are for the CPU (Triton's fused multiply-adds would change the "
            f"Gaussian bits); use the eager fill on {out.device}"
        )
    count = out.shape[1]
    _check_range(offset, count)
    for seed in seeds:
        seed_key(seed)
    if count == 0 or not seeds:
        return out
    first = offset // TILE_POSITIONS * TILE_BLOCKS
    end = -(-(offset + count) // TILE_POSITIONS) * TILE_BLOCKS
    most = end - first if compiled else max(TILE_BLOCKS, EAGER_CHUNK_BLOCKS // len(seeds))
    most = -(-most // TILE_BLOCKS) * TILE_BLOCKS
    kernel = philox_kernels.kernel(kind, out.dtype) if compiled else None
    for a, b in _pieces(first, end, most):
        values = [[a & _MASK32, *schedule_constants(seed, a >> 32)] for seed in seeds]
        # (P, S, 1); from a buffer: ~1.4 us, where torch.tensor(values) takes ~4.6 us
        flat = array.array("q", [v for column in zip(*values) for v in column])
        params = torch.frombuffer(flat, dtype=torch.int64).view(-1, len(seeds), 1)
        if kernel is not None:
            rows = kernel(params, b - a)
        else:
            rows = _tile_rows(params.to(out.device), b - a, kind, out.dtype, out.device)
        _place(rows, 4 * a, out, offset)
    return out


def fill(
    kind: str, out: torch.Tensor, seed: int, offset: int = 0, *, compiled: bool = False
) -> torch.Tensor:
    """``out`` (a vector) overwritten with the ``kind`` numbers at stream positions
    ``offset, ..., offset + len(out) - 1`` of ``seed`` (:func:`fill_gaussian`,
    :func:`fill_rademacher`)."""
    if out.ndim != 1:
        raise ValueError(f"out must be a vector, got shape {tuple(out.shape)}")
    fill_many(
        kind,
        out.view(1, -1) if out.is_contiguous() else out.unsqueeze(0),
        [seed],
        offset,
        compiled=compiled,
    )
    return out


def fill_gaussian(
    out: torch.Tensor, seed: int, offset: int = 0, *, compiled: bool = False
) -> torch.Tensor:
    """``out`` (a float32 or float64 vector, any device) overwritten in place with the N(0, 1)
    numbers at stream positions ``offset, ..., offset + len(out) - 1`` of ``seed``; returns it.

    Position ``1024 t + 256 j + l`` is computed from block ``256 t + l``: for ``j`` = 0, 1 the
    first/second number of :func:`gaussian_pairs` of its words 0 (radius) and 1 (angle), for
    ``j`` = 2, 3 of its words 2 and 3 (module docstring). Computed in float64 and rounded
    once into out's dtype; any offset works (no alignment rule). Made to be bit-identical on
    every device running eager torch (IEEE float64 +, -, *, / only; measured on the CPU, not
    yet on a GPU); ``compiled=True`` (CPU only) gives the same bits, fused by inductor.
    """
    return fill(GAUSSIAN, out, seed, offset, compiled=compiled)


def fill_rademacher(
    out: torch.Tensor, seed: int, offset: int = 0, *, compiled: bool = False
) -> torch.Tensor:
    """``out`` (a float32 or float64 vector, any device) overwritten in place with signs at
    stream positions ``offset, ..., offset + len(out) - 1`` of ``seed``: position
    ``1024 t + 256 j + l`` is ``+1.0`` if bit 31 of word ``j`` of block ``256 t + l`` is 0, else
    ``-1.0``. Exact on every device; any offset works; ``compiled=True`` as in
    :func:`fill_gaussian`."""
    return fill(RADEMACHER, out, seed, offset, compiled=compiled)


def position_words(seed: int, position: int, count: int) -> list[int]:
    """The words behind stream positions ``position, ..., + count - 1`` of ``seed`` (position
    ``1024 t + 256 j + l`` reads word ``j`` of block ``256 t + l``), as Python ints: for the
    few numbers drawn outside a fill (the layer-wise variant's block choice)."""
    out = []
    for p in range(position, position + count):
        tile, rest = divmod(p, TILE_POSITIONS)
        j, lane = divmod(rest, TILE_BLOCKS)
        out.append(int(words(seed, 4 * (TILE_BLOCKS * tile + lane) + j, 1)[0]))
    return out
