"""The cpu backend gives the prototype's findings on the prototype's own kernels.

The prototype lives in the team's shared folder beside the checkout (../shared/prototypes/cuda_cpu);
where it is absent (an installed copy, a user's machine) these tests skip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gradcheck as gc

PROTO = Path(__file__).resolve().parents[3] / "shared" / "prototypes" / "cuda_cpu"
pytestmark = pytest.mark.skipif(
    not (PROTO / "ce_grad.cu").exists(), reason=f"the prototype is not at {PROTO}"
)


def ce_args(rows: int, vocab: int) -> tuple[np.ndarray, np.ndarray, list[object]]:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((rows, vocab)) * 3).astype(np.float32)
    y = rng.integers(0, vocab, rows).astype(np.int32)
    g = np.zeros_like(x)
    return (
        x,
        g,
        [gc.In(x), gc.In(y), gc.Out(g), np.int32(rows), np.int32(vocab), np.float32(1 / rows)],
    )


def ce_ref(x: np.ndarray, args: list[object]) -> np.ndarray:
    y = args[1].array  # type: ignore[attr-defined]
    p = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    return p / len(y)


@pytest.mark.parametrize(
    ("source", "kernels"),
    [
        ("ce_grad.cu", ("ce_grad_smem", "ce_grad_warp")),
        ("ce_grad_portable.cu", ("ce_grad_portable",)),
    ],
)
def test_correct_kernels_match_and_race_variant_is_schedule_dependent(
    source: str, kernels: tuple[str, ...]
) -> None:
    good = gc.SourceModule(PROTO / source, options=[f"-I{PROTO}"], no_extern_c=True, backend="cpu")
    racy = gc.SourceModule(
        PROTO / source, options=[f"-I{PROTO}", "-DRACE_BUG"], no_extern_c=True, backend="cpu"
    )
    launch = dict(block=(256, 1, 1), grid=(64, 1))
    for name in kernels:
        x, g, args = ce_args(64, 2000)
        report = good.get_function(name).compare_schedules(*args, **launch)  # type: ignore[attr-defined]
        assert report.consistent
        assert np.abs(g - ce_ref(x, args)).max() < 1e-6
    if source == "ce_grad.cu":  # the race sits in the shared-memory variant only
        _, _, args = ce_args(64, 2000)
        report = racy.get_function("ce_grad_smem").compare_schedules(*args, **launch)  # type: ignore[attr-defined]
        assert not report.consistent
    else:
        _, _, args = ce_args(64, 2000)
        report = racy.get_function("ce_grad_portable").compare_schedules(*args, **launch)  # type: ignore[attr-defined]
        assert not report.consistent


def test_off_by_one_is_an_out_of_bounds_access() -> None:
    mod = gc.SourceModule(
        PROTO / "ce_grad.cu", options=[f"-I{PROTO}", "-DOOB_BUG"], no_extern_c=True, backend="cpu"
    )
    _, _, args = ce_args(64, 2000)
    with pytest.raises(
        gc.OutOfBounds, match=r"block \(63,0,0\).*element \[128000\], just past the end"
    ):
        mod.get_function("ce_grad_smem")(*args, block=(256, 1, 1), grid=(64, 1))


def test_extra_idioms() -> None:
    mod = gc.SourceModule(PROTO / "extra.cu", no_extern_c=True, backend="cpu")
    x = np.random.default_rng(0).standard_normal(256 * 8).astype(np.float32)
    n = np.int32(x.size)
    launch = dict(block=(256, 1, 1), grid=(8, 1))
    for name, consistent in (("legacy_warp_sum", False), ("syncwarp_sum", True)):
        out = np.zeros(8, np.float32)
        report = mod.get_function(name).compare_schedules(gc.In(x), gc.Out(out), n, **launch)  # type: ignore[attr-defined]
        assert report.consistent is consistent, name
    assert np.allclose(out, x.reshape(8, 256).sum(1), atol=1e-4)
    total, npos = np.zeros(1, np.float32), np.zeros(1, np.int32)
    mod.get_function("dyn_sum_atomic")(
        gc.In(x), gc.InOut(total), gc.InOut(npos), n, shared=32, **launch
    )
    assert abs(total[0] - x.sum()) < 1e-3 and npos[0] == (x > 0).sum()
    y = np.zeros(256, np.float32)
    with pytest.raises(gc.BarrierDivergence):
        mod.get_function("early_exit_barrier")(gc.InOut(y), np.int32(200), block=(256, 1, 1))
    with pytest.raises(gc.WarpCollectiveError):
        mod.get_function("shfl_after_exit")(gc.InOut(np.zeros(32, np.float32)), block=(32, 1, 1))
    with pytest.raises(gc.OutOfBounds, match="before the start"):
        mod.get_function("underflow_write")(
            gc.InOut(np.zeros(100, np.float32)), np.int32(100), block=(128, 1, 1)
        )
