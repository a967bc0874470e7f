"""Run CUDA kernels through gradcheck on whatever this machine has (a GPU, or only a CPU).

1. The shipped cross-entropy gradient kernel, launched exactly as with PyCUDA, against a float64
   reference, under three thread schedules on the cpu backend.
2. The old "one thread per vocab entry" kernel from the field notes, at vocab 2000 > blockDim.x:
   the elements it never writes come back as NaN poison and are counted.

    python examples/run_kernel_on_cpu.py [--rows 64] [--vocab 2000] [--block 256] [--backend auto]

Exits 0 when the shipped kernel is right and the old kernel's bug is found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import gradcheck as gc

ROOT = Path(__file__).resolve().parent.parent

OLD_LAYOUT = r"""
// Before the rewrite: one thread per vocab entry; every thread recomputes the row's max and sum.
extern "C" __global__ void ce_grad_thread_per_vocab(
    const float* logits, const int* targets, const float* mask, float* grad,
    int rows, int vocab, float inv_n_valid)
{
    const int row = blockIdx.x, v = threadIdx.x;
    if (row >= rows || v >= vocab) return;
    const float* x = logits + (size_t)row * vocab;
    float m = -INFINITY, s = 0.f;
    for (int j = 0; j < vocab; ++j) m = fmaxf(m, x[j]);
    for (int j = 0; j < vocab; ++j) s += expf(x[j] - m);
    grad[(size_t)row * vocab + v] =
        mask[row] * inv_n_valid * (expf(x[v] - m) / s - (v == targets[row] ? 1.f : 0.f));
}
"""


def reference(x: np.ndarray, t: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float64 softmax cross-entropy gradient, mean over unmasked rows."""
    xd = x.astype(np.float64)
    p = np.exp(xd - xd.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(t)), t] -= 1.0
    n_valid = mask.sum()
    return p * (mask[:, None] / n_valid) if n_valid else np.zeros_like(p)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    x = (rng.standard_normal((a.rows, a.vocab)) * 3).astype(np.float32)
    t = rng.integers(0, a.vocab, a.rows).astype(np.int32)
    mask = (rng.random(a.rows) > 0.25).astype(np.float32)
    inv_n = np.float32(1.0 / mask.sum()) if mask.sum() else np.float32(0.0)
    ref = reference(x, t, mask)
    launch = dict(block=(a.block, 1, 1), grid=(a.rows, 1))

    def args(grad: np.ndarray) -> tuple[object, ...]:
        return (
            gc.In(x), gc.In(t), gc.In(mask), gc.Out(grad),
            np.int32(a.rows), np.int32(a.vocab), inv_n,
        )  # fmt: skip

    mod = gc.SourceModule(
        ROOT / "kernels_cuda/loss_ce/ce_grad.cu", no_extern_c=True, backend=a.backend
    )
    print(f"backend: {mod.backend} ({getattr(mod, 'backend_reason', '')})")
    grad = np.empty_like(x)
    ran = mod.get_function("ce_grad").launch(*args(grad), **launch)
    # float32 softmax: a few ulps of the largest entry bound a correct kernel's error.
    bound = 8 * float(np.finfo(np.float32).eps) * float(np.abs(ref).max())
    err = float(np.abs(grad - ref).max())
    ok = err <= bound and not ran.unwritten
    print(
        f"shipped ce_grad, rows={a.rows} vocab={a.vocab} block={a.block}: max abs error "
        f"{err:.2e} (bound {bound:.2e}), {ran.elapsed_s * 1e3:.1f} ms -> {'right' if ok else 'WRONG'}"
    )
    if mod.backend == "cpu":
        report = mod.get_function("ce_grad").compare_schedules(*args(np.empty_like(x)), **launch)  # type: ignore[attr-defined]
        ok = ok and report.consistent
        names = ", ".join(r.schedule for r in report.launches)
        print(f"  same output under schedules {names}: {'yes' if report.consistent else 'NO'}")

    old = gc.SourceModule(OLD_LAYOUT, no_extern_c=True, backend=a.backend)
    grad_old = np.empty_like(x)
    ran_old = old.get_function("ce_grad_thread_per_vocab").launch(*args(grad_old), **launch)
    unwritten = ran_old.unwritten.get(3, 0)
    cols = np.flatnonzero(np.isnan(grad_old).any(axis=0))
    found = unwritten > 0
    where = f"vocab index {cols.min()} and up (blockDim.x = {a.block})" if cols.size else "none"
    print(
        f"old thread-per-vocab kernel: {unwritten:,} of {grad_old.size:,} gradient elements never "
        f"written; where: {where} -> {'bug found' if found else 'no bug visible at this size'}"
    )
    expect_bug = a.vocab > a.block
    return 0 if ok and (found == expect_bug) else 1


if __name__ == "__main__":
    sys.exit(main())
