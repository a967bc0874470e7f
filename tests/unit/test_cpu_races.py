"""The cpu backend's race check (``races=True``): the lost updates a GPU makes, reported
deterministically, and no false alarms on correct kernels (see tests/kernels/races.cu)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gradcheck as gc
from gradcheck.backends.cpu import CpuSourceModule

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "tests" / "kernels"


@pytest.fixture(scope="module")
def races() -> CpuSourceModule:
    mod = gc.SourceModule(KERNELS / "races.cu", no_extern_c=True, backend="cpu")
    assert isinstance(mod, CpuSourceModule)
    return mod


@pytest.fixture(scope="module")
def ce() -> CpuSourceModule:
    mod = gc.SourceModule(ROOT / "kernels_cuda/loss_ce/ce_grad.cu", no_extern_c=True, backend="cpu")
    assert isinstance(mod, CpuSourceModule)
    return mod


def col_sum_args(acc: np.ndarray, rows: int = 6, h: int = 768) -> tuple[object, ...]:
    dy = np.random.default_rng(0).standard_normal((rows, h)).astype(np.float32)
    return gc.In(dy), gc.InOut(acc), np.int32(rows), np.int32(h)


# ---- lost updates on global memory ---------------------------------------------------------------


def test_cross_block_read_modify_write_is_a_data_race(races: CpuSourceModule) -> None:
    f = races.get_function("col_sum_plain")
    geometry = dict(block=(256, 1, 1), grid=(6, 1))
    ok = np.zeros(768, np.float32)
    f(*col_sum_args(ok), **geometry)  # blocks run in turn here: exactly right, the bug hides
    acc = np.zeros(768, np.float32)
    with pytest.raises(gc.DataRace) as err:
        f(*col_sum_args(acc), races=True, **geometry)
    e = err.value
    assert isinstance(e, gc.KernelFault) and e.kind == "data-race"
    assert (e.scope, e.arg_index, e.arg_name, e.element, e.n_elements) == (
        "global",
        1,
        "acc",
        0,
        768,
    )
    assert (e.other_block, e.other_thread) == ((0, 0, 0), (0, 0, 0))
    assert (e.block, e.thread, e.same_block) == ((1, 0, 0), (0, 0, 0), False)
    msg = str(e)
    assert "kernel arg 1 (acc) `float*` element [0]" in msg
    assert "block (0,0,0) thread (0,0,0) and then, with a different value, by block (1,0,0)" in msg
    assert "different blocks" in msg and "768 of 768 elements of acc raced" in msg
    assert "acc[j] += v from several blocks; use atomicAdd" in msg
    assert not acc.any(), "a failed launch leaves the caller's array as it was"


def test_the_atomic_version_passes_with_the_same_values(races: CpuSourceModule) -> None:
    geometry = dict(block=(256, 1, 1), grid=(6, 1))
    plain, atomic = np.zeros(768, np.float32), np.zeros(768, np.float32)
    # One OS thread: with blocks on several, the plain version really loses updates.
    races.get_function("col_sum_plain")(*col_sum_args(plain), workers=1, **geometry)
    launch = races.get_function("col_sum_atomic").launch(
        *col_sum_args(atomic), races=True, **geometry
    )
    assert launch.unwritten == {}
    assert np.array_equal(atomic, plain)  # blocks in order: the same additions in the same order
    dy = col_sum_args(plain)[0].array  # type: ignore[attr-defined]
    assert np.allclose(atomic, dy.sum(0), atol=1e-5)


def test_two_threads_of_a_block_between_barriers(races: CpuSourceModule) -> None:
    f = races.get_function("two_writers")
    with pytest.raises(gc.DataRace) as err:
        f(gc.Out(np.zeros(1, np.float32)), np.int32(0), block=(64, 1, 1), races=True)
    e = err.value
    assert (e.scope, e.same_block, e.element, e.n_elements) == ("global", True, 0, 1)
    assert (e.other_thread, e.thread) == ((3, 0, 0), (40, 0, 0))
    assert "the same block, with no __syncthreads() between" in str(e)
    out = np.zeros(1, np.float32)
    f(gc.Out(out), np.int32(1), block=(64, 1, 1), races=True)  # a barrier between: ordered
    assert out[0] == 40


@pytest.mark.parametrize("sync", [0, 1])
def test_two_lanes_of_a_warp_need_a_syncwarp(races: CpuSourceModule, sync: int) -> None:
    f = races.get_function("two_lanes")
    out = np.zeros(1, np.int32)
    if sync:
        f(gc.Out(out), np.int32(1), block=(32, 1, 1), races=True)
        assert out[0] == 2
        return
    with pytest.raises(gc.DataRace, match=r"the same warp, with no __syncwarp\(\)"):
        f(gc.Out(out), np.int32(0), block=(32, 1, 1), races=True)


def test_identical_values_are_a_benign_race(races: CpuSourceModule) -> None:
    out = np.zeros(5, np.float32)
    races.get_function("same_value")(
        gc.Out(out), np.float32(3), block=(64, 1, 1), grid=(4, 1), races=True
    )
    assert out.tolist() == [3, 6, 6, 6, 6]


def test_one_writer_per_element_is_no_race(races: CpuSourceModule, ce: CpuSourceModule) -> None:
    x = np.arange(1000, dtype=np.float32)
    y = np.zeros_like(x)
    races.get_function("one_writer")(
        gc.In(x), gc.Out(y), np.int32(1000), block=(128, 1, 1), grid=(3, 1), races=True
    )
    assert np.array_equal(y, 2 * x)
    g = np.empty((4, 300), np.float32)
    ce.get_function("ce_grad")(
        gc.In(np.zeros((4, 300), np.float32)), gc.In(np.zeros(4, np.int32)),
        gc.In(np.ones(4, np.float32)), gc.Out(g), np.int32(4), np.int32(300), np.float32(0.25),
        block=(256, 1, 1), grid=(4, 1), races=True,
    )  # fmt: skip
    assert not np.isnan(g).any()


def test_plain_write_mixed_with_atomics_of_other_blocks(races: CpuSourceModule) -> None:
    with pytest.raises(gc.DataRace) as err:
        races.get_function("reset_while_counting")(
            gc.InOut(np.zeros(1, np.uint32)), block=(32, 1, 1), grid=(4, 1), races=True
        )
    e = err.value
    assert (e.other_block, e.block, e.arg_name) == ((0, 0, 0), (1, 0, 0), "count")
    assert (
        "(an atomic) and then, with a different value, by block (1,0,0) thread (0,0,0) (a plain"
        in str(e)
    )


# ---- shared memory --------------------------------------------------------------------------------


def test_shared_memory_write_write_conflict(races: CpuSourceModule) -> None:
    x = np.arange(512, dtype=np.float32)  # ascending: each thread raises the maximum in turn
    out = np.zeros(2, np.float32)
    f = races.get_function("shared_max")
    f(gc.In(x), gc.Out(out), block=(256, 1, 1), grid=(2, 1))
    assert out.tolist() == [255, 511]  # right here, whatever a GPU makes of it
    with pytest.raises(gc.DataRace) as err:
        f(gc.In(x), gc.Out(out), block=(256, 1, 1), grid=(2, 1), races=True)
    e = err.value
    assert (e.scope, e.shared_array, e.offset_bytes, e.arg_index, e.n_elements) == (
        "shared", "s_max", 0, None, 1,
    )  # fmt: skip
    assert (e.block, e.other_thread, e.thread, e.same_block) == (
        (0, 0, 0),
        (0, 0, 0),
        (1, 0, 0),
        True,
    )
    assert "data race on shared memory in shared_max: shared array `s_max` at byte offset 0" in str(
        e
    )


def test_dynamic_shared_memory_conflict(races: CpuSourceModule) -> None:
    with pytest.raises(gc.DataRace, match="dynamic shared memory at byte offset 0") as err:
        races.get_function("dyn_shared_sum")(
            gc.In(np.ones(64, np.float32)), gc.Out(np.zeros(1, np.float32)),
            block=(64, 1, 1), shared=16, races=True,
        )  # fmt: skip
    assert err.value.scope == "shared" and err.value.shared_array == ""


# ---- synchronisation between blocks ------------------------------------------------------------


def test_threadfence_reduction_is_ordered_and_needs_the_fence(races: CpuSourceModule) -> None:
    f = races.get_function("fence_sum")
    x = np.random.default_rng(3).standard_normal(4 * 256).astype(np.float32)
    partial, count = np.zeros(4, np.float32), np.zeros(1, np.uint32)
    args = (gc.In(x), gc.InOut(partial), gc.InOut(count))
    f(*args, np.int32(1), block=(256, 1, 1), grid=(4, 1), races=True)
    assert abs(partial[0] - x.sum(dtype=np.float64)) < 1e-3 and count[0] == 0
    with pytest.raises(gc.DataRace) as err:  # without the __threadfence() nothing orders them
        f(*args, np.int32(0), block=(256, 1, 1), grid=(4, 1), races=True)
    e = err.value
    assert (e.arg_name, e.element, e.other_block, e.block) == ("partial", 0, (0, 0, 0), (3, 0, 0))
    data = np.zeros(4 * 64, np.float32)  # every thread fences, then one takes the ticket
    races.get_function("fence_then_ticket")(
        gc.InOut(data), gc.InOut(count), block=(64, 1, 1), grid=(4, 1), races=True
    )
    assert np.array_equal(data, 2 * np.arange(4 * 64, dtype=np.float32))


# ---- race mode is otherwise a normal launch ------------------------------------------------------


def test_race_mode_outputs_are_bit_identical(ce: CpuSourceModule) -> None:
    rng = np.random.default_rng(0)
    rows, vocab = 16, 2000
    x = (rng.standard_normal((rows, vocab)) * 4).astype(np.float32)
    t = rng.integers(0, vocab, rows).astype(np.int32)
    mask = np.ones(rows, np.float32)
    mask[1] = 0
    outs = []
    for races in (False, True):
        g = np.empty_like(x)
        ce.get_function("ce_grad")(
            gc.In(x), gc.In(t), gc.In(mask), gc.Out(g), np.int32(rows), np.int32(vocab),
            np.float32(1 / mask.sum()), block=(256, 1, 1), grid=(rows, 1), races=races,
        )  # fmt: skip
        outs.append(g)
    assert np.array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))


def test_faults_are_still_reported_in_race_mode(races: CpuSourceModule) -> None:
    with pytest.raises(gc.OutOfBounds) as err:
        races.get_function("write_past_end")(
            gc.Out(np.zeros(1000, np.float32)), np.int32(1000), block=(256, 1, 1), grid=(4, 1),
            races=True,
        )  # fmt: skip
    e = err.value
    assert (e.arg_index, e.access, e.block, e.thread) == (0, "write", (3, 0, 0), (232, 0, 0))
    y = np.zeros(4, np.float32)  # the worker is fine afterwards
    races.get_function("one_writer")(
        gc.In(np.ones(4, np.float32)), gc.Out(y), np.int32(4), block=(4, 1, 1), races=True
    )
    assert y.tolist() == [2.0] * 4


def test_races_must_be_a_bool(races: CpuSourceModule) -> None:
    with pytest.raises(gc.UsageError, match="races='yes' must be True or False"):
        races.get_function("one_writer")(
            gc.In(np.ones(4, np.float32)), gc.Out(np.zeros(4, np.float32)), np.int32(4),
            block=(4, 1, 1), races="yes",
        )  # fmt: skip
