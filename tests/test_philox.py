"""Philox-4x32-10 streams (fpzo_ray.zo.philox): the block function against Random123's
known-answer vectors and independent scalar implementations, chunked draws against whole
ones, the fills' documented layout, the Gaussian transform against torch's and numpy's
float64 functions, and the distributions."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from fpzo_ray.zo import philox as P

MASK = 0xFFFFFFFF

# Random123 kat_vectors, philox4x32_10: (counter, key) -> output
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK, MASK, MASK, MASK), (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def scalar_philox(ctr: tuple[int, ...], key: tuple[int, int]) -> tuple[int, ...]:
    """Philox-4x32-10 in plain Python integers (Random123's philox4x32round)."""
    x0, x1, x2, x3 = ctr
    k0, k1 = key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * x0, 0xCD9E8D57 * x2
        x0, x1, x2, x3 = (p1 >> 32) ^ x1 ^ k0, p1 & MASK, (p0 >> 32) ^ x3 ^ k1, p0 & MASK
        k0, k1 = (k0 + 0x9E3779B9) & MASK, (k1 + 0xBB67AE85) & MASK
    return x0, x1, x2, x3


def scalar_words(seed: int, offset: int, count: int) -> list[int]:
    key = (seed & MASK, seed >> 32)
    out = []
    for i in range(offset, offset + count):
        b = i // 4
        out.append(scalar_philox((b & MASK, b >> 32, 0, 0), key)[i % 4])
    return out


def numpy_words(seed: int, offset: int, count: int) -> np.ndarray:
    """The stream in numpy uint64 (32x32-bit products never exceed 2**64 - 1)."""
    first = offset // 4
    b = np.arange(first, -(-(offset + count) // 4), dtype=np.uint64)
    m = np.uint64(MASK)
    x = [b & m, b >> np.uint64(32), np.zeros_like(b), np.zeros_like(b)]
    k0, k1 = seed & MASK, seed >> 32
    for _ in range(10):
        p0 = x[0] * np.uint64(0xD2511F53)
        p1 = x[2] * np.uint64(0xCD9E8D57)
        x = [
            (p1 >> np.uint64(32)) ^ x[1] ^ np.uint64(k0),
            p1 & m,
            (p0 >> np.uint64(32)) ^ x[3] ^ np.uint64(k1),
            p0 & m,
        ]
        k0, k1 = (k0 + 0x9E3779B9) & MASK, (k1 + 0xBB67AE85) & MASK
    flat = np.stack(x, axis=1).reshape(-1)
    return flat[offset - 4 * first : offset - 4 * first + count]


SEEDS = [0, 1, 0x0123456789ABCDEF, (1 << 64) - 1, 0xDEADBEEF00000000]


# ---------------------------------------------------------------------- block function


@pytest.mark.parametrize(("ctr", "key", "expected"), KAT)
def test_known_answer_vectors(ctr, key, expected):
    got = P.philox4x32_10(torch.tensor([ctr], dtype=torch.int64), key)
    assert tuple(got[0].tolist()) == expected
    assert scalar_philox(ctr, key) == expected  # the tests' own reference is right too


def test_block_function_matches_scalar_reference():
    gen = torch.Generator().manual_seed(0)
    ctrs = torch.randint(0, 1 << 32, (64, 4), generator=gen, dtype=torch.int64)
    ctrs[:8] = torch.tensor([0, MASK, 1 << 31, (1 << 31) - 1]).repeat(8, 1)  # edge words
    for key in [(0, 0), (MASK, MASK), (0x12345678, 0x9ABCDEF0)]:
        got = P.philox4x32_10(ctrs, key)
        for row, out in zip(ctrs.tolist(), got.tolist()):
            assert tuple(out) == scalar_philox(tuple(row), key)
    assert got.dtype == torch.int64 and got.shape == (64, 4)


def test_block_function_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        P.philox4x32_10(torch.zeros(3, dtype=torch.int64), (0, 0))
    with pytest.raises(ValueError, match="int64"):
        P.philox4x32_10(torch.zeros(3, 4, dtype=torch.int32), (0, 0))
    with pytest.raises(ValueError, match="key"):
        P.philox4x32_10(torch.zeros(3, 4, dtype=torch.int64), (1 << 32, 0))


# ------------------------------------------------------------------------------- words

#: offsets at block boundaries, inside blocks, and around block 2**32 (where the high
#: counter word changes: word 2**34)
OFFSETS = [0, 1, 3, 4, 5, 1023, 4 * (1 << 32) - 7, 4 * (1 << 32), (1 << 63) + 2]


@pytest.mark.parametrize("seed", SEEDS)
def test_words_match_scalar_and_numpy_references(seed):
    for offset in OFFSETS:
        got = P.words(seed, offset, 13)
        assert got.tolist() == scalar_words(seed, offset, 13), offset
        assert got.dtype == torch.int64
    big = P.words(seed, 4 * (1 << 32) - 3000, 6001)  # crosses the high-word change
    assert np.array_equal(big.numpy(), numpy_words(seed, 4 * (1 << 32) - 3000, 6001))


def test_words_chunked_equal_whole():
    seed = 0xC0FFEE
    whole = P.words(seed, 10, 5000)
    for cuts in [(1,), (3, 4, 5), (999, 1000, 2047), (17, 2500, 4999)]:
        edges = [0, *cuts, 5000]
        parts = [P.words(seed, 10 + a, b - a) for a, b in zip(edges, edges[1:])]
        assert torch.equal(torch.cat(parts), whole)
    assert P.words(seed, 7, 0).numel() == 0


def test_words_validate():
    with pytest.raises(ValueError, match="seed"):
        P.words(-1, 0, 4)
    with pytest.raises(ValueError, match="seed"):
        P.words(1 << 64, 0, 4)
    with pytest.raises(ValueError, match="offset"):
        P.words(0, -1, 4)
    with pytest.raises(ValueError, match="2\\*\\*64"):
        P.words(0, (1 << 64) - 2, 4)


# ------------------------------------------------------------------------------- fills

FILLS = [P.fill_gaussian, P.fill_rademacher]


def _layout_reference(kind: str, seed: int, offset: int, count: int) -> torch.Tensor:
    """The documented layout, from words(): position 1024 t + 256 j + l <- word j of block
    256 t + l; Gaussian pairs from words (0, 1) and (2, 3). float64."""
    p = torch.arange(offset, offset + count)
    j = (p // 256) % 4
    b = 256 * (p // 1024) + p % 256
    first = int(b.min())
    w = P.words(seed, 4 * first, 4 * (int(b.max()) - first + 1)).view(-1, 4)
    rows = b - first
    if kind == "rademacher":
        return 1.0 - 2.0 * (w[rows, j] >> 31).double()
    pair = 2 * (j // 2)
    first_number, second_number = P.gaussian_pairs(w[rows, pair], w[rows, pair + 1])
    return torch.where(j % 2 == 0, first_number, second_number)


@pytest.mark.parametrize("fill", FILLS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("offset", [0, 1, 255, 1024, 5000, 4 * (1 << 32) * 1 - 700])
def test_fill_layout_as_documented(fill, offset):
    kind = fill.__name__.removeprefix("fill_")
    out = fill(torch.empty(3000, dtype=torch.float64), 0xABCDEF, offset)
    assert torch.equal(out, _layout_reference(kind, 0xABCDEF, offset, 3000))


@pytest.mark.parametrize("fill", FILLS, ids=lambda f: f.__name__)
def test_fill_chunked_equal_whole(fill):
    seed, offset, n = 99, 7, 70_001
    whole = fill(torch.empty(n), seed, offset)
    for cuts in [(1,), (1017, 1018), (255, 256, 257, 1023, 1024, 1025), (33_333, 65_536)]:
        chunked = torch.full((n,), float("nan"))
        edges = [0, *cuts, n]
        for a, b in zip(edges, edges[1:]):
            fill(chunked[a:b], seed, offset + a)
        assert torch.equal(chunked, whole), cuts


@pytest.mark.parametrize("fill", FILLS, ids=lambda f: f.__name__)
def test_fill_across_eager_chunks_and_strides(fill, monkeypatch):
    """Results depend neither on the eager chunk size (so neither on where vectorized kernels
    switch to their scalar tails) nor on out's strides."""
    whole = fill(torch.empty(20_000), 5, 3)
    monkeypatch.setattr(P, "EAGER_CHUNK_BLOCKS", P.TILE_BLOCKS)
    assert torch.equal(fill(torch.empty(20_000), 5, 3), whole)
    strided = torch.empty(40_000)[::2]
    assert torch.equal(fill(strided, 5, 3), whole)


@pytest.mark.parametrize("fill", FILLS, ids=lambda f: f.__name__)
def test_float32_is_float64_rounded_once(fill):
    wide = fill(torch.empty(5000, dtype=torch.float64), 11, 1)
    assert torch.equal(fill(torch.empty(5000), 11, 1), wide.float())


@pytest.mark.parametrize("fill", FILLS, ids=lambda f: f.__name__)
def test_fill_validates(fill):
    with pytest.raises(ValueError, match="float32 or float64"):
        fill(torch.empty(8, dtype=torch.float16), 0)
    with pytest.raises(ValueError, match="vector"):
        fill(torch.empty(2, 4), 0)
    with pytest.raises(ValueError, match="offset"):
        fill(torch.empty(8), 0, -1)
    with pytest.raises(ValueError, match="seed"):
        fill(torch.empty(8), -5)
    with pytest.raises(ValueError, match="CPU"):
        fill(torch.empty(8, device="meta"), 0, compiled=True)
    assert fill(torch.empty(0), 0).numel() == 0


# ------------------------------------------------------------------- Gaussian transform


def test_literal_constants():
    assert math.log(2.0) == P.LN2
    assert math.sqrt(2.0) == P.SQRT2
    assert math.pi / 4 == P.QUARTER_PI


EDGE_WORDS = [0, 1, 2, 3, 1 << 29, (1 << 29) - 1, 1 << 31, (1 << 32) - 1, (1 << 32) - 2]
EDGE_WORDS += [0x6A09E667, 0x6A09E668, 0xB504F333, 0xB504F334]  # near sqrt(2) mantissas


@functools.cache
def _words_for_accuracy() -> torch.Tensor:
    return torch.cat([P.words(3, 0, 100_000), torch.tensor(EDGE_WORDS)])


def test_log_matches_torch_log():
    w = _words_for_accuracy()
    ref = torch.log((w.double() + 0.5) * 2.0**-32)
    got = P.log_unit(w)
    assert torch.all((got - ref).abs() <= 3 * 2.0**-52 * ref.abs())  # measured: <= 1.8 ulp


def test_sin_cos_match_torch():
    w = _words_for_accuracy()
    x = ((w & ((1 << 29) - 1)).double() + 0.5) * (P.QUARTER_PI * 2.0**-29)
    assert torch.all((x > 0) & (x < P.QUARTER_PI))
    sin, cos = P.sin_cos_octant(w)
    assert torch.all((sin - torch.sin(x)).abs() <= 2 * 2.0**-53 * torch.sin(x))
    assert torch.all((cos - torch.cos(x)).abs() <= 2 * 2.0**-53 * torch.cos(x))


def test_sqrt_matches_numpy_sqrt():
    """Within 2 ulp of the correctly rounded root (numpy's; torch's float64 CPU sqrt is not
    correctly rounded, which is why the module has its own)."""
    v = P.log_unit(_words_for_accuracy()) * -2.0
    v = torch.cat([v, torch.tensor([1.0, 2.0, 4.0, 0.25, 1e-300, 1e300], dtype=torch.float64)])
    ref = np.sqrt(v.numpy())
    got = P.sqrt_positive(v).numpy()
    assert np.all(np.abs(got - ref) <= 2 * 2.0**-52 * ref)


def test_gaussian_pairs_are_box_muller():
    """(first, second) = r (cos theta, sin theta) with the documented octant map, against
    torch's float64 log/sqrt/sin/cos."""
    radius, angle = P.words(8, 0, 100_000).view(-1, 2).unbind(1)
    r = torch.sqrt(-2 * torch.log((radius.double() + 0.5) * 2.0**-32))
    x = ((angle & ((1 << 29) - 1)).double() + 0.5) * (P.QUARTER_PI * 2.0**-29)
    swap = (angle & (1 << 29)) != 0  # theta = pi/2 - x: cos theta = sin x, sin theta = cos x
    first_sign = torch.where((angle & (1 << 30)) != 0, -1.0, 1.0).double()
    second_sign = torch.where(angle >= 1 << 31, -1.0, 1.0).double()
    cos_theta = torch.where(swap, torch.sin(x), torch.cos(x))
    sin_theta = torch.where(swap, torch.cos(x), torch.sin(x))
    first, second = P.gaussian_pairs(radius, angle)
    assert torch.allclose(first, first_sign * r * cos_theta, rtol=1e-14, atol=0)
    assert torch.allclose(second, second_sign * r * sin_theta, rtol=1e-14, atol=0)


def _numpy_gaussian_pairs(radius: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, ...]:
    """The same transform op by op in numpy float64 (another implementation of IEEE ops)."""
    u = (radius.astype(np.float64) + 0.5) * 2.0**-32
    bits = u.view(np.int64)
    e = (bits >> 52) - 1023
    m = ((bits & ((1 << 52) - 1)) | (1023 << 52)).view(np.float64)
    big = m > P.SQRT2
    m = np.where(big, m * 0.5, m)
    s = (m - 1.0) / (m + 1.0)

    def horner(y, coeffs):
        acc = y * coeffs[-1] + coeffs[-2]
        for c in reversed(coeffs[:-2]):
            acc = acc * y + c
        return acc

    t = s * horner(s * s, P.log_coeffs())
    log_u = (e + big).astype(np.float64) * P.LN2 + (t + t)
    v = log_u * -2.0
    z = (0x5FE6EB50C7B537A9 - (v.view(np.int64) >> 1)).view(np.float64)
    half = v * 0.5
    for _ in range(4):
        z = z * (1.5 - (half * z) * z)
    r = v * z
    x = ((angle & ((1 << 29) - 1)).astype(np.float64) + 0.5) * (P.QUARTER_PI * 2.0**-29)
    y = x * x
    sin = x + x * (y * horner(y, P.sin_coeffs()))
    cos = 1.0 + y * horner(y, P.cos_coeffs())
    swap = (angle & (1 << 29)) != 0
    first = r * np.where(swap, sin, cos)
    second = r * np.where(swap, cos, sin)
    first = np.where((angle & (1 << 30)) != 0, -first, first)
    second = np.where(angle >= 1 << 31, -second, second)
    return first, second


def test_gaussian_bits_equal_an_independent_numpy_evaluation():
    """Same IEEE float64 ops in the same order, another library: the same bits, which is the
    property that makes the Gaussians device independent (no libm call involved)."""
    w = torch.cat([P.words(21, 0, 200_000), torch.tensor(EDGE_WORDS + EDGE_WORDS[:1])])
    radius, angle = w.view(-1, 2).unbind(1)
    first, second = P.gaussian_pairs(radius, angle)
    np_first, np_second = _numpy_gaussian_pairs(radius.numpy(), angle.numpy())
    assert np.array_equal(first.numpy().view(np.int64), np_first.view(np.int64))
    assert np.array_equal(second.numpy().view(np.int64), np_second.view(np.int64))


# ----------------------------------------------------------------------- distributions


def _ks_statistic(x: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance between the sample x and N(0, 1)."""
    xs = np.sort(x.double().numpy())
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(xs / math.sqrt(2.0)))
    n = len(xs)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - cdf), np.max(cdf - (i - 1) / n)))


N_STATS = 1 << 17
#: the 0.1 % critical value of the KS distance for n samples (asymptotic 1.95 / sqrt(n))
KS_CRITICAL = 1.95 / math.sqrt(N_STATS)


def test_gaussian_moments_and_ks():
    z = P.fill_gaussian(torch.empty(N_STATS), 2024)
    assert abs(z.mean().item()) < 5 / math.sqrt(N_STATS)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / N_STATS)
    assert abs((z.double() ** 4).mean().item() - 3) < 0.1  # the kurtosis of N(0, 1)
    assert abs((z.abs() > 2).double().mean().item() - 0.0455) < 0.004
    assert z.abs().max().item() < 6.77  # sqrt(66 log 2): u >= 2**-33
    assert _ks_statistic(z) < KS_CRITICAL
    # pairs are uncorrelated, so are the two words' pairs of a block and neighbouring tiles
    assert abs((z[0::2] * z[1::2]).mean().item()) < 5 / math.sqrt(N_STATS / 2)
    assert abs((z[:-256] * z[256:]).mean().item()) < 5 / math.sqrt(N_STATS)


def test_ks_rejects_a_unit_variance_uniform():
    u = torch.rand(N_STATS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert _ks_statistic((u - 0.5) * math.sqrt(12)) > KS_CRITICAL


def test_rademacher_signs():
    s = P.fill_rademacher(torch.empty(N_STATS), 2024)
    assert set(s.unique().tolist()) == {-1.0, 1.0}
    assert abs(s.mean().item()) < 5 / math.sqrt(N_STATS)
    assert abs((s[:-1] * s[1:]).mean().item()) < 5 / math.sqrt(N_STATS)


def test_different_seeds_and_offsets_differ():
    a = P.fill_gaussian(torch.empty(4096), 1)
    assert not torch.equal(a, P.fill_gaussian(torch.empty(4096), 2))
    assert not torch.equal(a, P.fill_gaussian(torch.empty(4096), 1, 4096))
    assert not torch.equal(a, P.fill_gaussian(torch.empty(4096), 1 << 32))  # the key's high word


# ---------------------------------------------------------------------------- compiled


@pytest.mark.slow
@pytest.mark.parametrize("fill", FILLS, ids=lambda f: f.__name__)
def test_compiled_fill_equals_eager(fill):
    """Inductor's fused loop gives the eager bits, in float64 too (compiles for ~10-60 s)."""
    cases = [(1, 0, 61_706), (1 << 63, 5, 3000), (77, 4 * (1 << 32) - 2000, 5000)]
    for dtype in (torch.float32, torch.float64):
        for seed, offset, n in cases:
            eager = fill(torch.empty(n, dtype=dtype), seed, offset)
            compiled = fill(torch.empty(n, dtype=dtype), seed, offset, compiled=True)
            assert torch.equal(compiled, eager), (dtype, seed, offset)


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", [P.GAUSSIAN, P.RADEMACHER])
def test_fill_many_rows_equal_one_fill_per_seed(kind, compiled, monkeypatch):
    seeds = [3, 1 << 63, 3, 0xFFFF_FFFF_FFFF_FFFF, 12]
    monkeypatch.setattr(P, "EAGER_CHUNK_BLOCKS", 2 * P.TILE_BLOCKS)  # several eager pieces
    for offset, n in [(0, 1898), (2, 3000), (1024, 2048), (4 * (1 << 32) - 300, 700)]:
        many = P.fill_many(kind, torch.empty(len(seeds), n), seeds, offset, compiled=compiled)
        for row, seed in zip(many, seeds):
            assert torch.equal(row, P.fill(kind, torch.empty(n), seed, offset)), (seed, offset)


def test_fill_many_validates():
    with pytest.raises(ValueError, match=r"shape \(2, n\)"):
        P.fill_many(P.GAUSSIAN, torch.empty(3, 5), [1, 2])
    with pytest.raises(ValueError, match="kind"):
        P.fill_many("uniform", torch.empty(1, 5), [1])
    assert P.fill_many(P.GAUSSIAN, torch.empty(0, 5), []).shape == (0, 5)
