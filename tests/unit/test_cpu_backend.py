"""The cpu backend as a user meets it: PyCUDA's calling convention, CUDA features, and the bugs it
must catch by default (see tests/kernels/bugs.cu)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

import gradcheck as gc
from gradcheck.backends.cpu import CpuSourceModule

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "tests" / "kernels"


@pytest.fixture(scope="module")
def features() -> CpuSourceModule:
    mod = gc.SourceModule(
        KERNELS / "features.cu",
        no_extern_c=True,
        include_dirs=[str(KERNELS / "include")],
        options=["-DSCALE=3", "-O3", "--use_fast_math"],
        backend="cpu",
    )
    assert isinstance(mod, CpuSourceModule)
    return mod


@pytest.fixture(scope="module")
def bugs() -> CpuSourceModule:
    mod = gc.SourceModule(KERNELS / "bugs.cu", no_extern_c=True, backend="cpu")
    assert isinstance(mod, CpuSourceModule)
    return mod


@pytest.fixture(scope="module")
def ce() -> CpuSourceModule:
    mod = gc.SourceModule(ROOT / "kernels_cuda/loss_ce/ce_grad.cu", no_extern_c=True, backend="cpu")
    assert isinstance(mod, CpuSourceModule)
    return mod


def ce_reference(x: np.ndarray, t: np.ndarray, mask: np.ndarray) -> np.ndarray:
    xd = x.astype(np.float64)
    p = np.exp(xd - xd.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(t)), t] -= 1.0
    n = mask.sum()
    return p * (mask[:, None] / n) if n else np.zeros_like(p)


# ---- the calling convention and the backend record ---------------------------------------------


def test_source_text_pycuda_style_wraps_in_extern_c() -> None:
    mod = gc.SourceModule("__global__ void twice(float* x) { x[threadIdx.x] *= 2; }", backend="cpu")
    assert mod.backend == "cpu"
    x = np.arange(4, dtype=np.float32)
    assert mod.get_function("twice")(gc.InOut(x), block=(4, 1, 1)) is None
    assert x.tolist() == [0.0, 2.0, 4.0, 6.0]


def test_auto_backend_records_which_ran_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADCHECK_BACKEND", raising=False)
    if gc.cuda_status().available:
        pytest.skip("a GPU is usable here, so auto picks cuda")
    mod = gc.SourceModule("__global__ void k(float* x) { x[0] = 1; }")
    assert mod.backend == "cpu"
    assert mod.backend_reason.startswith("auto: ")  # type: ignore[attr-defined]
    launch = mod.get_function("k").launch(gc.Out(np.zeros(1, np.float32)), block=(1, 1, 1))
    assert launch.backend == "cpu"


def test_cross_entropy_kernel_matches_float64_reference(ce: CpuSourceModule) -> None:
    f = ce.get_function("ce_grad")
    rng = np.random.default_rng(0)
    for rows, vocab, block in ((64, 2000, 256), (4, 50, 256), (3, 1025, 1024), (2, 1, 32)):
        x = (rng.standard_normal((rows, vocab)) * 4).astype(np.float32)
        t = rng.integers(0, vocab, rows).astype(np.int32)
        mask = np.ones(rows, np.float32)
        mask[0] = 0.0
        g = np.empty_like(x)
        launch = f.launch(
            gc.In(x), gc.In(t), gc.In(mask), gc.Out(g), np.int32(rows), np.int32(vocab),
            np.float32(1.0 / mask.sum()), block=(block, 1, 1), grid=(rows, 1),
        )  # fmt: skip
        ref = ce_reference(x, t, mask)
        # float32 softmax: a few ulps of the largest entry (1/n_valid) bound the error.
        assert np.abs(g - ref).max() <= 8 * np.finfo(np.float32).eps * np.abs(ref).max()
        assert launch.unwritten == {}
        assert launch.elapsed_s > 0


def test_time_kernel_returns_seconds(ce: CpuSourceModule) -> None:
    g = np.empty((1, 8), np.float32)
    elapsed = ce.get_function("ce_grad")(
        gc.In(np.zeros((1, 8), np.float32)), gc.In(np.zeros(1, np.int32)),
        gc.In(np.ones(1, np.float32)), gc.Out(g), np.int32(1), np.int32(8), np.float32(1.0),
        block=(32, 1, 1), grid=(1, 1), time_kernel=True,
    )  # fmt: skip
    assert isinstance(elapsed, float) and elapsed > 0
    assert np.allclose(g, 1 / 8 - np.eye(1, 8))


# ---- CUDA features, unmodified ------------------------------------------------------------------


def test_namespace_include_and_define(features: CpuSourceModule) -> None:
    y = np.arange(300, dtype=np.float32)
    features.get_function("ns_scale")(gc.InOut(y), np.int32(300), block=(128, 1, 1), grid=(3, 1))
    assert np.array_equal(y, 3 * np.arange(300, dtype=np.float32))  # SCALE=3 from -D


def test_nvcc_only_options_are_reported_not_passed_to_gxx(features: CpuSourceModule) -> None:
    assert features.build.ignored_options == ("-O3", "--use_fast_math")


def test_cpp_linkage_kernels_by_mangled_name(features: CpuSourceModule) -> None:
    y = np.ones(4, np.float32)
    features.get_function("_Z9cpp_scalePfi")(gc.InOut(y), np.int32(4), block=(4, 1, 1))
    assert y.tolist() == [2.0] * 4
    with pytest.raises(gc.KernelNotFound) as err:
        features.get_function("cpp_scale")
    assert "its symbol is '_Z9cpp_scalePfi'" in str(err.value)
    assert 'extern "C"' in str(err.value)


def test_template_instantiation_and_overloads(features: CpuSourceModule) -> None:
    y = np.zeros(128, np.float32)
    features.get_function("_Z9tmpl_fillILi64EEvPf")(gc.Out(y), block=(64, 1, 1), grid=(2, 1))
    assert np.all(y == 64)
    f32, f64 = np.zeros(3, np.float32), np.zeros(3, np.float64)
    features.get_function("_Z4overPfi")(gc.Out(f32), np.int32(3), block=(3, 1, 1))
    features.get_function("_Z4overPdi")(gc.Out(f64), np.int32(3), block=(3, 1, 1))
    assert f32.tolist() == [1.0] * 3 and f64.tolist() == [2.0] * 3


def test_dynamic_shared_memory_in_function_and_file_scope(features: CpuSourceModule) -> None:
    x = np.arange(100, dtype=np.float32)
    y = np.empty(100, np.float32)
    features.get_function("dyn_reverse")(
        gc.In(x), gc.Out(y), np.int32(100), block=(128, 1, 1), shared=128 * 4
    )
    assert np.array_equal(y, x[::-1])
    y = np.empty(64, np.float32)
    features.get_function("dyn_file_scope")(
        gc.In(x[:64]), gc.Out(y), np.int32(64), block=(64, 1, 1), shared=64 * 4
    )
    assert np.array_equal(y, np.roll(x[:64], -1))


def test_atomics_ballot_and_syncthreads_count(features: CpuSourceModule) -> None:
    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    s, pos, cnt = np.zeros(1, np.float32), np.zeros(1, np.int32), np.zeros(1, np.int32)
    features.get_function("reductions")(
        gc.In(x), gc.InOut(s), gc.InOut(pos), gc.InOut(cnt), np.int32(1000),
        block=(256, 1, 1), grid=(4, 1),
    )  # fmt: skip
    assert abs(s[0] - x.sum(dtype=np.float64)) < 1e-3
    assert pos[0] == cnt[0] == int((x > 0).sum())


def test_warp_shuffles_match_cuda_semantics(features: CpuSourceModule) -> None:
    x = np.arange(32, dtype=np.int32) * 10
    out = np.zeros(6 * 32, np.int32)
    features.get_function("shuffles")(gc.In(x), gc.Out(out), block=(32, 1, 1))
    lane = np.arange(32)
    r = out.reshape(6, 32)
    assert np.all(r[0] == 50)
    assert np.array_equal(r[1], np.where(lane >= 1, x[lane - 1], x))
    down = np.where((lane % 8) + 2 < 8, lane + 2, lane)  # width 8: stays inside its group of 8
    assert np.array_equal(r[2], x[down])
    assert np.array_equal(r[3], x[lane ^ 3])
    assert np.all(r[4] == x.sum())
    groups = x % 3  # __match_any_sync: the lanes holding the same value as mine
    expect = [sum(1 << j for j in range(32) if groups[j] == groups[i]) for i in range(32)]
    assert r[5].astype(np.uint32).tolist() == expect


def test_three_dimensional_grid_and_block(features: CpuSourceModule) -> None:
    out = np.full(2 * 3 * 2 * 4 * 2 * 2, -1, np.int32)
    features.get_function("grid3d")(gc.Out(out), block=(4, 2, 2), grid=(2, 3, 2))
    assert np.array_equal(out, np.arange(out.size))


def test_scalars_of_every_width(features: CpuSourceModule) -> None:
    out = np.zeros(5, np.float64)
    features.get_function("scalars")(
        gc.Out(out), np.int8(-3), np.int16(300), np.int64(2**40), np.uint32(4_000_000_000),
        np.float64(0.1), block=(1, 1, 1),
    )  # fmt: skip
    assert out.tolist() == [-3.0, 300.0, 2.0**40, 4e9, 0.1]


# ---- bugs found by default ------------------------------------------------------------------------


def test_missing_barrier_is_schedule_dependent(bugs: CpuSourceModule) -> None:
    x = np.random.default_rng(2).standard_normal(4 * 256).astype(np.float32)
    args = (gc.In(x), gc.Out(np.zeros(4, np.float32)))
    report = bugs.get_function("missing_barrier").compare_schedules(
        *args, block=(256, 1, 1), grid=(4, 1)
    )
    assert not report.consistent
    with pytest.raises(gc.ScheduleDependentOutput, match="missing __syncthreads"):
        report.raise_if_inconsistent()
    good = bugs.get_function("block_sum").compare_schedules(*args, block=(256, 1, 1), grid=(4, 1))
    assert good.consistent
    assert [launch.schedule for launch in good.launches] == ["asc", "desc", "random:1"]
    assert np.allclose(args[1].array, x.reshape(4, 256).sum(1), atol=1e-4)


def test_write_one_past_the_end_names_argument_block_and_thread(bugs: CpuSourceModule) -> None:
    with pytest.raises(gc.OutOfBounds) as err:
        bugs.get_function("write_past_end")(
            gc.Out(np.zeros(1000, np.float32)), np.int32(1000), block=(256, 1, 1), grid=(4, 1)
        )
    e = err.value
    assert (e.arg_index, e.arg_name, e.access) == (0, "y", "write")
    assert e.block == (3, 0, 0) and e.thread == (232, 0, 0)  # 3 * 256 + 232 == 1000
    assert "element [1000], just past the end (it has 1000 elements)" in str(e)


def test_read_past_the_row_when_vocab_is_below_the_block_size(bugs: CpuSourceModule) -> None:
    f = bugs.get_function("read_past_small_vocab")
    ok = np.zeros(2, np.float32)
    f(
        gc.In(np.ones((2, 256), np.float32)),
        gc.Out(ok),
        np.int32(256),
        block=(256, 1, 1),
        grid=(2, 1),
    )
    assert ok.tolist() == [1.0, 1.0]
    # Row 0 silently reads row 1; the first read past the whole buffer is caught.
    with pytest.raises(
        gc.OutOfBounds, match=r"read in read_past_small_vocab: block \(0,0,0\) thread \(100"
    ):
        f(
            gc.In(np.ones((2, 50), np.float32)),
            gc.Out(ok),
            np.int32(50),
            block=(256, 1, 1),
            grid=(2, 1),
        )


def test_a_fault_in_several_blocks_is_reported_in_the_lowest_block(bugs: CpuSourceModule) -> None:
    # Block 0 faults last in time (it is busy first), on the other worker the later blocks fault at
    # once: the report names block 0 all the same, on every run and any number of workers.
    f = bugs.get_function("every_block_reads_past_end")
    for workers in (2, 2, 2, 1):
        with pytest.raises(gc.OutOfBounds) as err:
            f(
                gc.In(np.ones(100, np.float32)),
                gc.Out(np.zeros(8, np.float32)),
                np.int32(100),
                np.int32(20_000_000),
                block=(32, 1, 1),
                grid=(8, 1),
                workers=workers,
            )
        assert (err.value.block, err.value.thread) == ((0, 0, 0), (0, 0, 0))


def test_write_before_the_start(bugs: CpuSourceModule) -> None:
    y = np.zeros(100, np.float32)
    f = bugs.get_function("write_before_start")
    with pytest.raises(gc.OutOfBounds, match="up to 4 bytes before the start"):
        f(gc.InOut(y), np.int32(100), block=(128, 1, 1))  # found in the canary after the launch
    with pytest.raises(gc.OutOfBounds, match=r"thread \(0,0,0\) writes .* element \[-1\]"):
        f(gc.InOut(y), np.int32(100), block=(128, 1, 1), guard="start")  # found as it happens
    assert not y.any(), "a failed launch leaves the caller's array as it was"


def test_unwritten_outputs_are_poison_and_counted(bugs: CpuSourceModule) -> None:
    y = np.zeros(256, np.float32)
    launch = bugs.get_function("skip_last").launch(
        gc.In(np.ones(256, np.float32)), gc.Out(y), np.int32(256), block=(256, 1, 1)
    )
    assert launch.unwritten == {1: 1}
    assert np.isnan(y[-1]) and np.all(y[:-1] == 2)


def test_reading_unwritten_shared_memory_gives_nan(bugs: CpuSourceModule) -> None:
    y = np.zeros(256, np.float32)
    bugs.get_function("uninit_shared")(
        gc.In(np.ones(128, np.float32)), gc.Out(y), block=(256, 1, 1)
    )
    assert np.all(y[:128] == 1)
    assert np.isnan(y[128:]).all()  # exactly the half that was never written


def test_early_exit_before_barrier(bugs: CpuSourceModule) -> None:
    f = bugs.get_function("early_exit_barrier")
    y = np.zeros(256, np.float32)
    with pytest.raises(gc.BarrierDivergence, match=r"56 threads returned .* 200 threads wait"):
        f(gc.InOut(y), np.int32(200), block=(256, 1, 1))
    f(gc.InOut(y), np.int32(200), block=(256, 1, 1), strict=False)
    assert y[0] == 199


def test_barriers_at_different_call_sites(bugs: CpuSourceModule) -> None:
    with pytest.raises(gc.BarrierDivergence, match="different __syncthreads"):
        bugs.get_function("divergent_barrier")(gc.Out(np.zeros(64, np.float32)), block=(64, 1, 1))


def test_shuffle_naming_exited_lanes(bugs: CpuSourceModule) -> None:
    with pytest.raises(gc.WarpCollectiveError, match=r"names lane 16 .* already returned"):
        bugs.get_function("shfl_after_exit")(gc.Out(np.zeros(32, np.float32)), block=(32, 1, 1))


def test_device_assert_and_division_by_zero(bugs: CpuSourceModule) -> None:
    with pytest.raises(gc.DeviceAssert, match=r"`n > 1000` at .*bugs.cu:\d+"):
        bugs.get_function("device_assert")(
            gc.Out(np.zeros(4, np.float32)), np.int32(5), block=(4, 1, 1)
        )
    with pytest.raises(gc.ArithmeticFault, match="division by zero"):
        bugs.get_function("int_div")(
            gc.In(np.ones(4, np.int32)), gc.Out(np.zeros(4, np.int32)), np.int32(0), block=(4, 1, 1)
        )


def test_stack_overflow(bugs: CpuSourceModule) -> None:
    with pytest.raises(gc.StackOverflow, match="more than its 65536-byte stack"):
        bugs.get_function("stack_overflow")(
            gc.Out(np.zeros(2, np.int32)), np.int32(10_000), block=(2, 1, 1)
        )


SLOW = """
extern "C" __global__ void slow(float* y, int n) {
    float a = 0.0f;
    for (int i = 0; i < n; ++i) a = a * 0.5f + (float)i;  // ~30 ms a block at n = 2e7
    y[blockIdx.x] = a;
}
"""


def test_a_launch_reports_its_blocks_while_it_runs() -> None:
    """on_blocks: (blocks finished, blocks in the grid) at the start and every quarter second, for
    a progress display; one that raises is dropped and the launch goes on."""
    fn = gc.SourceModule(SLOW, backend="cpu").get_function("slow")
    y = np.zeros(40, np.float32)
    seen: list[tuple[int, int]] = []
    fn(gc.InOut(y), np.int32(20_000_000), block=(1, 1, 1), grid=(40, 1), workers=1,
       on_blocks=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert len(seen) >= 2 and {total for _, total in seen} == {40}
    done = [d for d, _ in seen]
    assert done == sorted(done) and 0 < done[-1] <= 40 and np.all(y > 0)

    def broken(done: int, total: int) -> None:
        raise RuntimeError("a progress display that fails")

    y[...] = 0
    fn(gc.InOut(y), np.int32(2_000_000), block=(1, 1, 1), grid=(40, 1), workers=1, on_blocks=broken)
    assert np.all(y > 0)
    fn(gc.InOut(y), np.int32(2), block=(1, 1, 1), grid=(40, 1))  # the worker still answers


MARK = """
extern "C" __global__ void mark(float* y, int* dims) {
    const int b = blockIdx.x + gridDim.x * blockIdx.y;
    if (threadIdx.x == 0) y[b] = (float)b;
    if (b == 0 && threadIdx.x == 0) dims[0] = gridDim.x, dims[1] = gridDim.y;
}
"""


def test_only_blocks_runs_those_blocks_of_the_whole_grid() -> None:
    fn = gc.SourceModule(MARK, backend="cpu", no_extern_c=True).get_function("mark")
    y, dims = np.zeros(12, np.float32), np.zeros(2, np.int32)
    seen: list[tuple[int, int]] = []
    done = fn.launch(gc.Out(y), gc.InOut(dims), block=(32, 1, 1), grid=(4, 3),
                     only_blocks=[11, 0, 5, 5], on_blocks=lambda d, t: seen.append((d, t)))  # fmt: skip
    assert y[[0, 5, 11]].tolist() == [0.0, 5.0, 11.0]
    assert np.isnan(np.delete(y, [0, 5, 11])).all() and done.unwritten == {0: 9}  # left out: poison
    assert dims.tolist() == [4, 3] and {t for _, t in seen} == {3}  # gridDim is the whole grid
    with pytest.raises(gc.UsageError, match=r"only_blocks= names block 12, outside the grid"):
        fn.launch(gc.Out(y), gc.InOut(dims), block=(32, 1, 1), grid=(4, 3), only_blocks=[12])
    with pytest.raises(gc.UsageError, match=r"only_blocks= must be a non-empty sequence"):
        fn.launch(gc.Out(y), gc.InOut(dims), block=(32, 1, 1), grid=(4, 3), only_blocks=[])


def test_only_blocks_with_a_fault_names_the_lowest_block_run(bugs: CpuSourceModule) -> None:
    f = bugs.get_function("every_block_reads_past_end")
    with pytest.raises(gc.OutOfBounds) as err:
        f(gc.In(np.ones(100, np.float32)), gc.Out(np.zeros(8, np.float32)), np.int32(100),
          np.int32(20_000_000), block=(32, 1, 1), grid=(8, 1), workers=2, only_blocks=[6, 3, 7])  # fmt: skip
    assert err.value.block == (3, 0, 0)


def test_hang_times_out_and_caller_keeps_running(bugs: CpuSourceModule) -> None:
    t0 = time.monotonic()
    with pytest.raises(gc.KernelTimeout, match=r"block \(0,0,0\) was running thread \(3,0,0\)"):
        bugs.get_function("spin_forever")(
            gc.In(np.zeros(1, np.float32)), block=(64, 1, 1), timeout=1.0
        )
    assert time.monotonic() - t0 < 20
    test_unwritten_outputs_are_poison_and_counted(bugs)  # the next launch works


def test_wild_pointer_is_reported_with_block_and_thread(bugs: CpuSourceModule) -> None:
    with pytest.raises(gc.OutOfBounds, match=r"block \(2,0,0\) thread \(5,0,0\) touched address"):
        bugs.get_function("wild_pointer")(
            gc.Out(np.zeros(64, np.float32)), block=(64, 1, 1), grid=(4, 1)
        )


def test_crash_of_the_worker_leaves_the_caller_running() -> None:
    src = """
    extern "C" __global__ void crash(float* y) { if (blockIdx.x == 1) abort(); y[threadIdx.x] = 1; }
    extern "C" __global__ void fine(float* y) { y[threadIdx.x] = 1; }
    """
    # abort() is host-only: nvcc would rightly refuse it, so skip the cross-check for this test.
    mod = gc.SourceModule(src, no_extern_c=True, backend="cpu", nvcc_check="off")
    pid = os.getpid()
    with pytest.raises(
        gc.KernelCrash, match=r"SIGABRT.*block \(1,0,0\).*your process is unaffected"
    ):
        mod.get_function("crash")(gc.Out(np.zeros(8, np.float32)), block=(8, 1, 1), grid=(2, 1))
    y = np.zeros(8, np.float32)
    mod.get_function("fine")(gc.Out(y), block=(8, 1, 1))
    assert os.getpid() == pid and y.sum() == 8


# ---- bad input: named errors, never a ctypes traceback ------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda f: f([1.0, 2.0], np.int32(2), block=(2, 1, 1)), gc.UsageError, "is a list"),
        (
            lambda f: f(gc.InOut(np.zeros(2)), np.int32(2), block=(2, 1, 1)),
            gc.UsageError,
            r"argument 0 \(y\) is `float\*` .* got a float64 array. Convert it: x.astype\(np.float32\)",
        ),
        (
            lambda f: f(gc.InOut(np.zeros(2, np.float32)), 2, block=(2, 1, 1)),
            gc.UsageError,
            r"argument 1 \(n\) is a Python int .* np.int32\(2\)",
        ),
        (
            lambda f: f(gc.InOut(np.zeros(2, np.float32)), np.float32(2), block=(2, 1, 1)),
            gc.UsageError,
            r"argument 1 \(n\) is `int` .* Pass np.int32",
        ),
        (
            lambda f: f(gc.InOut(np.zeros(2, np.float32)), block=(2, 1, 1)),
            gc.UsageError,
            r"takes 2 arguments, got 1",
        ),
        (
            lambda f: f(gc.InOut(np.zeros(2, np.float32)), np.int32(2), block=(64, 32, 1)),
            gc.UsageError,
            "2048 threads; CUDA allows at most 1024",
        ),
        (
            lambda f: f(gc.InOut(np.zeros(2, np.float32)), np.int32(2), block=(2048, 1, 1)),
            gc.UsageError,
            "the x dimension 2048 exceeds CUDA's limit 1024",
        ),
        (
            lambda f: f(
                gc.InOut(np.zeros(2, np.float32)), np.int32(2), block=(2, 1, 1), grid=(0, 1)
            ),
            gc.UsageError,
            "the x dimension is 0",
        ),
        (
            lambda f: f(gc.InOut(np.zeros(2, np.float32)), np.int32(2)),
            gc.UsageError,
            "block= is required",
        ),
        (
            lambda f: f(
                gc.InOut(np.zeros(2, np.float32)), np.int32(2), block=(2, 1, 1), shedule="asc"
            ),
            gc.UsageError,
            "Did you mean 'schedule'",
        ),
        (
            lambda f: f(
                gc.InOut(np.zeros(2, np.float32)), np.int32(2), block=(2, 1, 1), schedule="rand"
            ),
            gc.UsageError,
            "Did you mean 'random'",
        ),
        (
            lambda f: f(gc.In(np.zeros((4, 4), np.float32)[:, :2]), np.int32(2), block=(2, 1, 1)),
            gc.UsageError,
            "non-contiguous",
        ),
    ],
)
def test_bad_launch_input(bugs: CpuSourceModule, call: object, error: type, message: str) -> None:
    f = bugs.get_function("write_past_end")
    with pytest.raises(error, match=message):
        call(f)  # type: ignore[operator]


def test_const_buffer_passed_as_output_is_refused(bugs: CpuSourceModule) -> None:
    with pytest.raises(gc.UsageError, match=r"`const float\*`: the kernel cannot write it"):
        bugs.get_function("skip_last")(
            gc.Out(np.zeros(4, np.float32)),
            gc.Out(np.zeros(4, np.float32)),
            np.int32(4),
            block=(4, 1, 1),
        )


def test_unknown_kernel_suggests_close_names(bugs: CpuSourceModule) -> None:
    with pytest.raises(gc.KernelNotFound, match="Did you mean 'skip_last'"):
        bugs.get_function("skip_lst")


def test_compile_error_names_the_users_file_and_line(tmp_path: os.PathLike[str]) -> None:
    src = tmp_path / "broken.cu"  # type: ignore[operator]
    src.write_text('extern "C" __global__ void k(float* y) {\n  y[0] = undefined_name;\n}\n')
    with pytest.raises(gc.CompileError) as err:
        gc.SourceModule(src, backend="cpu")
    e = err.value
    assert e.compiler == "g++" and e.command[0].endswith("g++")
    assert "broken.cu:2:" in str(e) and "undefined_name" in str(e)


def test_missing_source_file() -> None:
    with pytest.raises(gc.UsageError, match="does not exist"):
        gc.SourceModule("no/such/kernel.cu", backend="cpu")


def test_unsupported_header_says_so_clearly() -> None:
    with pytest.raises(gc.CompileError, match=r"warp matrix \(wmma\) .* is not supported yet"):
        gc.SourceModule("#include <mma.h>\n__global__ void k(float* y) {}", backend="cpu")


# ---- kernel printf -------------------------------------------------------------------------------


def test_kernel_printf_reaches_sys_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    mod = gc.SourceModule(
        '__global__ void hello(int n) { if (threadIdx.x < n) printf("thread %d of block %d\\n", '
        "threadIdx.x, blockIdx.x); }",
        backend="cpu",
    )
    mod.get_function("hello")(np.int32(2), block=(4, 1, 1), grid=(1, 1))
    assert capsys.readouterr().out == "thread 0 of block 0\nthread 1 of block 0\n"


def test_printf_before_a_crash_is_not_lost(capsys: pytest.CaptureFixture[str]) -> None:
    src = 'extern "C" __global__ void k(int* y) { printf("about to fail\\n"); abort(); }'
    mod = gc.SourceModule(
        src, no_extern_c=True, backend="cpu", nvcc_check="off"
    )  # abort: host-only
    with pytest.raises(gc.KernelCrash):
        mod.get_function("k")(gc.Out(np.zeros(1, np.int32)), block=(1, 1, 1))
    assert capsys.readouterr().out == "about to fail\n"


def test_same_kernel_name_in_two_modules_keeps_each_signature() -> None:
    """Two sources that both define extern "C" k, loaded into one worker, stay apart."""
    first = gc.SourceModule(
        'extern "C" __global__ void k(const float* a, float* b, int n) {'
        " if (threadIdx.x < n) b[threadIdx.x] = 2 * a[threadIdx.x]; }",
        backend="cpu",
    )
    second = gc.SourceModule('extern "C" __global__ void k(float* x) { x[0] = 7; }', backend="cpu")
    assert [p.c_type for p in first.kernels[0].params] == ["const float*", "float*", "int"]
    assert [p.c_type for p in second.kernels[0].params] == ["float*"]
    x = np.zeros(1, np.float32)
    second.get_function("k").launch(gc.Out(x), block=(1, 1, 1))
    a, b = np.arange(3, dtype=np.float32), np.zeros(3, np.float32)
    first.get_function("k").launch(gc.In(a), gc.Out(b), np.int32(3), block=(4, 1, 1))
    assert x.tolist() == [7.0] and b.tolist() == [0.0, 2.0, 4.0]
