"""The cpu backend runs kernels that use cooperative groups and bfloat16 / half storage
unmodified (tests/kernels/coop_groups.cu, tests/kernels/bf16.cu), and its checks still apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gradcheck as gc
from gradcheck.backends.cpu import CpuSourceModule

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "tests" / "kernels"


@pytest.fixture(scope="module")
def mod() -> CpuSourceModule:
    """Both kernel files in one module: one g++ build and one nvcc cross-check for this file."""
    src = '#include "coop_groups.cu"\n#include "bf16.cu"\n'
    m = gc.SourceModule(src, no_extern_c=True, include_dirs=[str(KERNELS)], backend="cpu")
    assert isinstance(m, CpuSourceModule)
    return m


@pytest.fixture(scope="module")
def coop(mod: CpuSourceModule) -> CpuSourceModule:
    return mod


@pytest.fixture(scope="module")
def bf16(mod: CpuSourceModule) -> CpuSourceModule:
    return mod


@pytest.fixture(scope="module")
def bfloat16() -> Any:
    return pytest.importorskip("ml_dtypes").bfloat16


# ---- cooperative groups -------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["block_sum_cg", "block_sum_shfl"])
@pytest.mark.parametrize("block", [32, 96, 100, 1024])
def test_block_sum_with_tiles_of_32(coop: CpuSourceModule, kernel: str, block: int) -> None:
    blocks = 3
    n = blocks * block - 7  # the last block reads past n: zeros
    x = np.random.default_rng(block).standard_normal(n).astype(np.float32)
    out = np.zeros(blocks, np.float32)
    coop.get_function(kernel)(
        gc.In(x), gc.Out(out), np.int32(n), block=(block, 1, 1), grid=(blocks, 1)
    )
    want = [x[b * block : (b + 1) * block].astype(np.float64).sum() for b in range(blocks)]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)


def test_block_sum_does_not_depend_on_the_schedule(coop: CpuSourceModule) -> None:
    x = np.random.default_rng(0).standard_normal(200).astype(np.float32)
    out = np.zeros(2, np.float32)
    report = coop.get_function("block_sum_cg").compare_schedules(
        gc.In(x), gc.Out(out), np.int32(200), block=(100, 1, 1), grid=(2, 1)
    )
    report.raise_if_inconsistent()


def test_tile_reduce_on_a_partial_warp(coop: CpuSourceModule) -> None:
    """A block of 100: warps 0-2 are whole, warp 3 has 4 threads. Every lane of a whole tile gets
    the same bits; on the partial one a float butterfly reads lanes that do not exist (undefined on
    a GPU: NaN here), while an int sum, which a GPU does with redux.sync, adds the 4 that exist."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(100).astype(np.float32)
    xi = rng.integers(-50, 50, 100).astype(np.int32)
    out = np.zeros(100, np.float32)
    outi = np.zeros(100, np.int32)
    coop.get_function("tile_sum_each")(
        gc.In(x), gc.Out(out), gc.In(xi), gc.Out(outi), block=(100, 1, 1)
    )
    whole = out[:96].reshape(3, 32)
    assert (whole.view(np.uint32) == whole[:, :1].view(np.uint32)).all()
    np.testing.assert_allclose(whole[:, 0], x[:96].reshape(3, 32).sum(1), rtol=1e-5, atol=1e-5)
    assert np.isnan(out[96:]).all()
    tile_sums = [xi[i : i + 32].sum() for i in (0, 32, 64, 96)]
    assert outi.tolist() == np.repeat(tile_sums, 32)[:100].tolist()


@pytest.mark.parametrize("block", [64, 72])
def test_tiles_of_16_8_and_4_ranks_and_meta_groups(coop: CpuSourceModule, block: int) -> None:
    out = np.zeros((block, 8), np.int32)
    coop.get_function("tile_info")(gc.Out(out), block=(block, 1, 1))
    t = np.arange(block)
    assert out[:, 0].tolist() == (t % 16).tolist()
    assert out[:, 1].tolist() == (t // 16).tolist()
    assert (out[:, 2] == -(-block // 16)).all()  # meta_group_size counts a partial last tile
    assert out[:, 3].tolist() == (t // 8).tolist()
    assert (out[:, 4] == -(-block // 8) * 100 + 8).all()
    assert out[:, 5].tolist() == (t % 16 // 4).tolist()  # tiles of 4 cut from a tile of 16
    assert (out[:, 6] == 4 * 100 + 4).all()
    assert out[:, 7].tolist() == (t % 4 + 100 * block).tolist()


def test_greater_and_less_reductions(coop: CpuSourceModule) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal(64).astype(np.float32)
    xi = rng.integers(-1000, 1000, 64).astype(np.int32)
    mx, mn = np.zeros(64, np.float32), np.zeros(64, np.float32)
    mxi, mni = np.zeros(64, np.int32), np.zeros(64, np.int32)
    coop.get_function("tile_minmax")(
        gc.In(x), gc.Out(mx), gc.Out(mn), gc.In(xi), gc.Out(mxi), gc.Out(mni), block=(64, 1, 1)
    )
    for got, a, f in [(mx, x, np.max), (mn, x, np.min), (mxi, xi, np.max), (mni, xi, np.min)]:
        assert got.tolist() == np.repeat(f(a.reshape(4, 16), axis=1), 16).tolist()


def test_inclusive_and_exclusive_scans(coop: CpuSourceModule) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 10, 64).astype(np.int32)
    xf = rng.standard_normal(64).astype(np.float32)
    incl, excl = np.zeros(64, np.int32), np.zeros(64, np.int32)
    inclf, exclf = np.zeros(64, np.float32), np.zeros(64, np.float32)
    coop.get_function("tile_scan")(
        gc.In(x),
        gc.Out(incl),
        gc.Out(excl),
        gc.In(xf),
        gc.Out(inclf),
        gc.Out(exclf),
        block=(64, 1, 1),
    )
    want = np.cumsum(x.reshape(8, 8), axis=1).ravel()
    assert incl.tolist() == want.tolist()
    assert excl.tolist() == (want - x).tolist()
    wantf = np.cumsum(xf.reshape(2, 32).astype(np.float64), axis=1)
    np.testing.assert_allclose(inclf.reshape(2, 32), wantf, rtol=1e-5, atol=1e-5)
    assert exclf.reshape(2, 32)[:, 0].tolist() == [0.0, 0.0]
    assert (exclf.reshape(2, 32)[:, 1:] == inclf.reshape(2, 32)[:, :-1]).all()


def test_tile_votes_and_a_16_byte_shuffle(coop: CpuSourceModule) -> None:
    x = np.array([1, 0, 2, -1, 3, 0, 0, 5] * 4, np.int32)
    out = np.zeros((32, 4), np.uint32)
    v = np.random.default_rng(4).standard_normal((32, 4)).astype(np.float32)
    v0 = v.copy()
    coop.get_function("tile_votes")(gc.In(x), gc.Out(out), gc.InOut(v), block=(32, 1, 1))
    lane = np.arange(32) % 8
    assert (out[:, 0] == 0b10010101).all()  # ballot, in tile-relative lanes
    assert (out[:, 1] == 1).all()  # any, not all
    assert out[:8, 2].tolist() == [1, 0b1100010, 4, 8, 16, 0b1100010, 0b1100010, 128]
    t = np.arange(32)
    assert out[:, 3].tolist() == ((t ^ 1) + 1000 * np.where(lane > 0, t - 1, t)).tolist()  # xor, up
    # each tile's lane 7 float4 went to all 8 lanes
    assert (v.reshape(4, 8, 4) == v0.reshape(4, 8, 4)[:, 7:8]).all()


def test_dynamic_tiles_coalesced_and_labeled_groups(coop: CpuSourceModule) -> None:
    x = np.arange(32, dtype=np.int32)
    out = np.zeros((32, 6), np.int32)
    coop.get_function("dynamic_groups")(gc.In(x), gc.Out(out), block=(32, 1, 1))
    t = np.arange(32)
    assert out[:, 0].tolist() == (t % 4).tolist()  # tiled_partition(block, 4)
    assert (out[:, 1] == 4).all()
    assert out[:, 2].tolist() == (t * 100 + 32).tolist()  # coalesced_threads(): the whole warp
    assert (out[:, 3] == 3).all()
    assert out[:, 4].tolist() == (1600 + t // 2).tolist()  # labeled_partition by parity
    even, odd = x[::2].sum(), x[1::2].sum()
    assert out[:, 5].tolist() == np.where(t % 2, odd * 101, even * 101).tolist()


def test_grid_group_ranks_without_a_cooperative_launch(coop: CpuSourceModule) -> None:
    out = np.zeros((128, 3), np.uint64)
    coop.get_function("grid_info")(gc.Out(out), block=(64, 1, 1), grid=(2, 1))
    assert out[:, 0].tolist() == list(range(128))
    assert (out[:, 1] == 128 * 10 + 128).all()
    assert out[:, 2].tolist() == [0] * 64 + [10] * 64  # is_valid() is false, as on a GPU


def test_grid_sync_is_a_clear_fault(coop: CpuSourceModule) -> None:
    with pytest.raises(
        gc.KernelFault, match=r"this_grid\(\)\.sync\(\) needs a cooperative launch"
    ) as err:
        coop.get_function("grid_barrier")(
            gc.InOut(np.zeros(64, np.float32)), block=(32, 1, 1), grid=(2, 1)
        )
    assert "not support" in str(err.value)


def test_tile_shuffle_over_an_exited_lane_is_a_warp_collective_error(coop: CpuSourceModule) -> None:
    with pytest.raises(gc.WarpCollectiveError, match="exited lane"):
        coop.get_function("tile_shfl_after_exit")(
            gc.InOut(np.zeros(32, np.float32)), block=(32, 1, 1)
        )


def test_block_sync_in_a_branch_names_both_lines(coop: CpuSourceModule) -> None:
    with pytest.raises(
        gc.BarrierDivergence, match=r"coop_groups\.cu:(\d+).*coop_groups\.cu:(\d+)"
    ) as err:
        coop.get_function("block_sync_in_branch")(
            gc.InOut(np.zeros(32, np.float32)), block=(32, 1, 1)
        )
    lines = [ln.split(" ")[0] for ln in str(err.value).split("coop_groups.cu:")[1:]]
    assert len(set(lines)) == 2  # the two block.sync() calls, not a line of cooperative_groups.h


# ---- bfloat16 and half --------------------------------------------------------------------------


def _awkward_floats(rng: np.random.Generator) -> np.ndarray:
    """Random bit patterns (NaN, inf, subnormals included), exact ties and near-ties for bf16."""
    upper = rng.integers(0, 1 << 16, 600, dtype=np.uint32) << 16
    special = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF, 1]
    special += [0x807FFFFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x00008000, 0x00018000, 0x3F808000]
    special += [0x3F818000, 0x7F7F8000]
    bits = np.concatenate(
        [
            rng.integers(0, 1 << 32, 3000, dtype=np.uint64).astype(np.uint32),
            upper | 0x8000,  # exactly halfway: ties to even
            upper | 0x8001,
            upper | 0x7FFF,
            np.array(special, np.uint32),
        ]
    )
    out: np.ndarray = bits.view(np.float32)
    return out


def test_bf16_round_trip_matches_ml_dtypes(bf16: CpuSourceModule, bfloat16: Any) -> None:
    x = _awkward_floats(np.random.default_rng(5))
    n = x.size
    y = np.zeros(n, bfloat16)
    back = np.zeros(n, np.float32)
    modes = np.zeros((n, 4), np.uint16)
    bf16.get_function("bf16_round")(
        gc.In(x),
        gc.Out(y),
        gc.Out(back),
        gc.Out(modes),
        np.int32(n),
        block=(128, 1, 1),
        grid=(-(-n // 128), 1),
    )
    nan = np.isnan(x)
    with np.errstate(invalid="ignore", over="ignore"):
        want = x.astype(bfloat16).view(np.uint16)
    got = y.view(np.uint16)
    assert (got[~nan] == want[~nan]).all()
    assert (got[nan] == 0x7FFF).all()  # NaN stays NaN (CUDA's canonical NaN)
    assert (back[~nan].view(np.uint32) == got[~nan].astype(np.uint32) << 16).all()
    assert np.isnan(back[nan]).all()
    # _rn, _rz, _rd, _ru: truncate the low 16 bits, then step away from zero when the mode says so
    bits = x.view(np.uint32)
    high, rest, neg = (bits >> 16).astype(np.uint16), (bits & 0xFFFF) != 0, (bits >> 31) == 1
    assert (modes[:, 0] == got).all()
    for col, away in [(1, np.zeros(n, bool)), (2, rest & neg), (3, rest & ~neg)]:
        assert (modes[~nan, col] == (high + away)[~nan]).all()
        assert (modes[nan, col] == 0x7FFF).all()


def test_bf16_arithmetic_rounds_like_ml_dtypes(bf16: CpuSourceModule, bfloat16: Any) -> None:
    rng = np.random.default_rng(6)
    n = 256
    a = (rng.standard_normal(n) * 4).astype(bfloat16)
    b = (rng.standard_normal(n) * 4).astype(bfloat16)
    out = np.zeros((n, 12), bfloat16)
    bf16.get_function("bf16_arith")(
        gc.In(a), gc.In(b), gc.Out(out), np.int32(n), block=(64, 1, 1), grid=(4, 1)
    )
    a64, b64 = a.astype(np.float64), b.astype(np.float64)

    def rnd(v: np.ndarray) -> np.ndarray:  # exact in float64 here, rounded once to bfloat16
        r: np.ndarray = v.astype(bfloat16)
        return r

    q = rnd(a64 * b64 + rnd(a64 * a64).astype(np.float64))  # __hfma2(p, (y, y), p * p), low lane
    q_hi = rnd(b64 * b64 + rnd(b64 * b64).astype(np.float64))
    s, d = rnd(a64 + b64), rnd(a64 - b64)
    want = [s, d, rnd(a64 * b64), rnd(a64 / b64), rnd(a64 * b64 + a64), -a, abs(a), s]
    want += [q, rnd(b64 + q_hi.astype(np.float64)), s, rnd(a64 * 2 - b64)]
    for k, w in enumerate(want):
        assert (out[:, k].view(np.uint16) == np.asarray(w).view(np.uint16)).all(), f"column {k}"


def test_bf16_comparisons_follow_ieee(bf16: CpuSourceModule, bfloat16: Any) -> None:
    a = np.array([np.nan, 1, 2, np.nan, -0.0, 3, -1, 5], bfloat16)
    b = np.array([1, np.nan, 2, np.nan, 0.0, 2, 1, 5.5], bfloat16)
    out = np.zeros(8, np.int32)
    bf16.get_function("bf16_compare")(gc.In(a), gc.In(b), gc.Out(out), np.int32(8), block=(8, 1, 1))
    x, y = a.astype(np.float32), b.astype(np.float32)
    with np.errstate(invalid="ignore"):
        want = (
            (x == y) | (x != y) << 1 | (x < y) << 2 | (x > y) << 3 | (x <= y) << 4 | (x >= y) << 5
        )
        want |= np.isnan(x) << 6 | ((x == y) | np.isnan(x) | np.isnan(y)) << 7
    assert out.tolist() == want.tolist()


def test_bf16_atomic_add_from_many_blocks(bf16: CpuSourceModule, bfloat16: Any) -> None:
    """256 threads in 8 blocks on 2 OS threads add 1 into 3 adjacent counters: each count is exact
    (bf16 holds integers to 256), and no update is lost or spills into a neighbour."""
    x = np.ones(256, bfloat16)
    sums = np.zeros(4, bfloat16)
    sums[3] = 7
    bf16.get_function("bf16_atomic_count")(
        gc.In(x),
        gc.InOut(sums),
        np.int32(256),
        np.int32(3),
        block=(32, 1, 1),
        grid=(8, 1),
        workers=2,
    )
    assert sums.astype(np.float32).tolist() == [86.0, 85.0, 85.0, 7.0]


def test_bf16_scalars_bits_and_warp_shuffles(bf16: CpuSourceModule, bfloat16: Any) -> None:
    x = np.random.default_rng(7).standard_normal(64).astype(bfloat16)
    want = (x.astype(np.float32) * 2).astype(bfloat16)
    f = bf16.get_function("bf16_warp_axpy")
    y = np.zeros(64, bfloat16)
    sums = np.zeros(2, np.float32)
    f(bfloat16(2.0), gc.In(x), gc.Out(y), gc.Out(sums), block=(64, 1, 1))
    assert (y == want).all()
    np.testing.assert_allclose(
        sums, x.astype(np.float64).reshape(2, 32).sum(1), rtol=0.02, atol=0.05
    )
    bits = np.zeros(64, np.uint16)  # the raw bits travel as uint16 too
    f(np.uint16(0x4000), gc.In(x.view(np.uint16)), gc.Out(bits), gc.Out(sums), block=(64, 1, 1))
    assert (bits == want.view(np.uint16)).all()


def test_float32_for_a_bf16_parameter_is_a_usage_error(
    bf16: CpuSourceModule, bfloat16: Any
) -> None:
    f = bf16.get_function("bf16_warp_axpy")
    x = np.zeros(64, np.float32)
    y = np.zeros(64, bfloat16)
    sums = np.zeros(2, np.float32)
    with pytest.raises(gc.UsageError, match=r"`const __nv_bfloat16\*`.*float32 array.*bfloat16"):
        f(bfloat16(2.0), gc.In(x), gc.Out(y), gc.Out(sums), block=(64, 1, 1))
    with pytest.raises(gc.UsageError, match=r"`__nv_bfloat16` .*float32.*bfloat16"):
        f(np.float32(2.0), gc.In(x.astype(bfloat16)), gc.Out(y), gc.Out(sums), block=(64, 1, 1))


def test_half_round_trip_and_fma_match_numpy(bf16: CpuSourceModule) -> None:
    x = _awkward_floats(np.random.default_rng(8))
    x = np.concatenate(
        [x, np.float32([65504, 65519.99, 65520, 6e-8, 2.98e-8, 2.9802322e-08, 1e-3])]
    )
    n = x.size
    h, fma = np.zeros(n, np.float16), np.zeros(n, np.float16)
    back = np.zeros(n, np.float32)
    bf16.get_function("half_round")(
        gc.In(x),
        gc.Out(h),
        gc.Out(back),
        gc.Out(fma),
        np.int32(n),
        block=(128, 1, 1),
        grid=(-(-n // 128), 1),
    )
    nan = np.isnan(x)
    with np.errstate(invalid="ignore", over="ignore"):
        want = x.astype(np.float16)
        want_fma = (h.astype(np.float64) ** 2 + 1).astype(np.float16)
    assert (h.view(np.uint16)[~nan] == want.view(np.uint16)[~nan]).all()
    assert np.isnan(h[nan]).all()
    assert (back[~nan] == h[~nan].astype(np.float32)).all()
    assert (fma.view(np.uint16)[~nan] == want_fma.view(np.uint16)[~nan]).all()
    with pytest.raises(gc.UsageError, match=r"`__half\*`.*uint16 array.*float16"):
        bf16.get_function("half_round")(
            gc.In(x),
            gc.Out(h.view(np.uint16)),
            gc.Out(back),
            gc.Out(fma),
            np.int32(n),
            block=(128, 1, 1),
        )
