"""loss-ce: the gradient of mean softmax cross entropy with respect to the logits."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from ._spec import (
    SAMPLE_ELEMENTS,
    Arrays,
    Case,
    Dim,
    KernelParam,
    Op,
    Output,
    ShippedKernel,
    sample_count,
    sample_note,
)

U32 = 2.0**-24  # unit roundoff of float32
TINY32 = 2.0**-126  # smallest normal float32: below it a flush-to-zero kernel writes 0
# Relative error a correct float32 softmax may make in p[v] = exp(x[v] - m) / S, in units of U32
# (first-order rounding analysis, written out in DIAGNOSTIC_GUIDE.md#noise-bound):
FIXED_ULPS = 16.0  # exp (CUDA's __expf: 2 ulp + argument term below), reciprocal/divide, scale
ARG_ULPS = 3.5  # per unit of |x - m|: rounding of x - m, and __expf's 1.173 |x| ulp
SUM_LAMBDA = 8.0  # probabilistic bound on a sum of V terms: lambda * sqrt(V) * U32 (Higham & Mary)

KERNELS = (
    ShippedKernel(
        "ce-grad",
        "loss_ce/ce_grad.cu",
        "ce_grad",
        "pass",
        "warp-shuffle block reductions (max, sum of exp), block-stride loop: any vocab",
    ),
    ShippedKernel(
        "online-softmax",
        "loss_ce/online_softmax.cu",
        "ce_grad_online",
        "pass",
        "one pass keeping a running (max, sum) rescaled as the max grows, then a write pass",
    ),
    ShippedKernel(
        "fast-math",
        "loss_ce/fast_math.cu",
        "ce_grad_fast",
        "pass",
        "__expf / __fdividef intrinsics with __shfl_down_sync reductions",
    ),
    ShippedKernel(
        "shared-tree",
        "loss_ce/shared_tree.cu",
        "ce_grad_tree",
        "pass",
        "s_max / s_sum shared-memory tree reductions with a barrier per step (any block size)",
    ),
    ShippedKernel(
        "legacy-thread-per-vocab",
        "loss_ce/bugs/legacy_thread_per_vocab.cu",
        "ce_grad_legacy",
        "kernel-bug",
        "the old layout: one thread per vocab entry; entries >= blockDim.x are never written",
    ),
    ShippedKernel(
        "missing-barrier",
        "loss_ce/bugs/missing_barrier.cu",
        "ce_grad_missing_barrier",
        "kernel-bug",
        "max and sum reuse one shared buffer with no __syncthreads() between: a race",
    ),
    ShippedKernel(
        "oob-small-vocab",
        "loss_ce/bugs/oob_small_vocab.cu",
        "ce_grad_oob",
        "kernel-bug",
        "seeds the reductions with x[threadIdx.x] unchecked: reads past the row when vocab < blockDim.x",
    ),
    ShippedKernel(
        "mask-ignored-norm",
        "loss_ce/bugs/mask_ignored_norm.cu",
        "ce_grad_mask_ignored",
        "kernel-bug",
        "divides by rows instead of unmasked rows: off by n_valid / rows when rows are masked",
    ),
    ShippedKernel(
        "masked-rows-skipped",
        "loss_ce/bugs/masked_rows_skipped.cu",
        "ce_grad_masked_skipped",
        "kernel-bug",
        "returns early for masked rows without writing their zeros",
    ),
    ShippedKernel(
        "naive-exp",
        "loss_ce/bugs/naive_exp.cu",
        "ce_grad_naive_exp",
        "kernel-bug",
        "exp(x) without subtracting the row max: inf / NaN for large-magnitude logits",
    ),
    ShippedKernel(
        "vec4-tail",
        "loss_ce/bugs/vec4_tail.cu",
        "ce_grad_vec4_tail",
        "kernel-bug",
        "float4 loads on aligned rows forget the vocab % 4 tail",
    ),
    ShippedKernel(
        "sign-flipped",
        "loss_ce/bugs/sign_flipped.cu",
        "ce_grad_sign_flipped",
        "kernel-bug",
        "writes onehot - softmax: the gradient of the log-likelihood, not of the loss",
    ),
)


class LossCE(Op):
    id = "loss-ce"
    summary = "softmax cross entropy, mean over unmasked rows: d loss / d logits"
    dims = (
        Dim("rows", 64, "positions (one block each)"),
        Dim("vocab", 2000, "classes per position", maximum=1 << 24),
    )
    params = (
        KernelParam("logits", "in", "float32"),
        KernelParam("targets", "in", "int32"),
        KernelParam("mask", "in", "float32"),
        KernelParam("grad", "out", "float32"),
        KernelParam("rows", "scalar", "int32"),
        KernelParam("vocab", "scalar", "int32"),
        KernelParam("inv_n_valid", "scalar", "float32"),
    )
    outputs = (Output("grad", "logits", ("row", "vocab")),)
    kernels = KERNELS
    default_kernel = "ce-grad"
    fd32_cases = ("plain", "masked")
    causes = (
        (
            "sign",
            "softmax and one-hot swapped (a log-likelihood gradient); DIAGNOSTIC_GUIDE.md#sign",
        ),
        (
            "normalised-by-rows",
            "the mean divides by rows, not unmasked rows; DIAGNOSTIC_GUIDE.md#scale",
        ),
        ("only:masked rows", "masked rows not written as zeros; DIAGNOSTIC_GUIDE.md#masked-rows"),
        (
            "non-finite",
            "exp overflow or a division by zero (subtract the row max first); "
            "DIAGNOSTIC_GUIDE.md#non-finite",
        ),
    )

    # Peak RSS of `gradcheck run loss-ce`: 2.75 GB at rows 1024 x vocab 128256, 5.84 GB at 4096 x
    # 128256, i.e. 7.8 bytes per element: the logits and the gradient (4 each), which the cpu
    # backend uses in place, while the references are computed a block of rows at a time; the
    # refusal assumes 12 (3x the gradient). A case held whole (the sampled cases; every case when
    # no fewer rows can be sampled, 8 or fewer) costs more: peak PSS 1.27 GiB at rows 8 x vocab
    # 100000, 1.47 GiB at 8 x 500000, 67 bytes an element; the refusal assumes 80.
    work_unit = "rows * vocab elements"
    bytes_per_unit = 80
    bytes_per_streamed_unit = 12

    def held_whole(self, dims: dict[str, int]) -> int:
        return sample_count(dims["rows"], dims["vocab"]) * dims["vocab"]

    smaller = "Use fewer rows: each row is one block running the same code, so a few hundred rows at your vocab check it as well."

    def validate(self, dims: dict[str, int], block: int) -> None:
        self.limit_elements(dims, ("rows", "vocab"), 1 << 30)

    def cases(
        self, dims: dict[str, int], block: int, seed: int, options: dict[str, Any]
    ) -> list[Case]:
        rows, vocab = dims["rows"], dims["vocab"]
        rng = np.random.default_rng(seed)
        out: list[Case] = []

        def add(
            name: str, why: str, logits: np.ndarray, targets: np.ndarray, mask: np.ndarray
        ) -> None:
            out.append(self._case(name, why, logits, targets, mask))

        def normal(r: int, v: int, scale: float = 2.0) -> np.ndarray:
            # A block of rows at a time: the same numbers as one call, without float64 temporaries
            # of the whole problem (8 GiB at 4096 x 128256).
            x = np.empty((r, v), np.float32)
            step = max(1, SAMPLE_ELEMENTS // v)
            for lo in range(0, r, step):
                hi = min(r, lo + step)
                x[lo:hi] = rng.standard_normal((hi - lo, v)) * scale
            return x

        def targets(r: int, v: int) -> np.ndarray:
            return rng.integers(0, v, r).astype(np.int32)

        # The other distributions on a sample of the rows when the problem is large (_spec.py).
        sr = sample_count(rows, vocab)
        add(
            "plain",
            "logits ~ N(0, 2^2), every row unmasked",
            normal(rows, vocab),
            targets(rows, vocab),
            np.ones(rows, np.float32),
        )
        out[-1] = replace(out[-1], run_once=sr < rows)
        note = sample_note(sr, rows, "rows", "vocab")
        ones = np.ones(sr, np.float32)
        if sr >= 2:
            mask = (rng.random(sr) >= 0.25).astype(np.float32)
            mask[rng.integers(0, sr)] = 0.0  # at least one masked row ...
            if not mask.any():
                mask[-1] = 1.0  # ... and at least one that is not
            add(
                "masked",
                f"{int(sr - mask.sum())} of {sr} rows masked" + note,
                normal(sr, vocab),
                targets(sr, vocab),
                mask,
            )
        add(
            "all-masked",
            "every row masked: n_valid = 0, the gradient is all zeros" + note,
            normal(sr, vocab),
            targets(sr, vocab),
            np.zeros(sr, np.float32),
        )
        big = (
            normal(sr, vocab, 3.0)
            + np.where(np.arange(sr) % 2 == 0, 200.0, -200.0).astype(np.float32)[:, None]
        )
        add(
            "large-logits",
            "logits near +200 / -200: exp overflows or underflows without the row max" + note,
            big.astype(np.float32),
            targets(sr, vocab),
            ones,
        )
        edge = np.where(np.arange(sr) % 2 == 0, 0, vocab - 1).astype(np.int32)
        add("edge-targets", "targets at 0 and vocab-1" + note, normal(sr, vocab), edge, ones)
        # Shapes around the block size, whatever the user asked: most layout bugs live there.
        probe_rows = 3
        probe_mask = np.array([1.0, 0.0, 1.0], np.float32)
        for v in sorted({max(1, block // 5), block + 1} - {vocab}):
            rel = "<" if v < block else ">"
            add(
                f"vocab={v}",
                f"vocab {rel} blockDim.x ({block}), {probe_rows} rows, the middle one masked",
                normal(probe_rows, v),
                targets(probe_rows, v),
                probe_mask,
            )
        return out

    def _case(
        self,
        name: str,
        why: str,
        logits: np.ndarray,
        targets: np.ndarray,
        mask: np.ndarray,
        n_valid: int | None = None,
    ) -> Case:
        rows, vocab = logits.shape
        if n_valid is None:
            n_valid = int(np.count_nonzero(mask))
        inv = 1.0 / n_valid if n_valid else 0.0

        def onehot() -> np.ndarray:
            out = np.zeros((rows, vocab), bool)
            out[np.arange(rows), targets] = True
            return out

        return Case(
            name=name,
            description=why,
            dims={"rows": rows, "vocab": vocab},
            arrays={"logits": logits, "targets": targets, "mask": mask},
            scalars={
                "rows": rows,
                "vocab": vocab,
                "inv_n_valid": float(np.float32(inv)),
                "n_valid": n_valid,
            },
            output_shapes={"grad": (rows, vocab)},
            labels={
                "grad": {
                    "masked rows": np.broadcast_to((mask == 0)[:, None], (rows, vocab)),
                    "target entries": onehot,
                }
            },
        )

    def geometry(self, case: Case, block: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
        return (block, 1, 1), (case.dims["rows"], 1)

    def reference(self, case: Case, dtype: type[np.floating[Any]]) -> Arrays:
        from ..reference import loss_ce

        a = case.arrays
        n = int(case.scalars["n_valid"])
        return {"grad": loss_ce.grad(a["logits"], a["targets"], a["mask"], dtype, n)}

    def loss_values(self, case: Case, points: Arrays, dtype: type[np.floating[Any]]) -> np.ndarray:
        from ..reference import loss_ce

        a = case.arrays
        n = int(case.scalars["n_valid"])
        out: np.ndarray = loss_ce.loss_values(points["logits"], a["targets"], a["mask"], dtype, n)
        return out

    def stream_rows(self, case: Case) -> int | None:
        return case.dims["rows"]

    def rows(self, case: Case, lo: int, hi: int) -> Case:
        a = case.arrays
        return self._case(
            case.name,
            f"rows {lo}..{hi - 1} of {case.name}",
            a["logits"][lo:hi],
            a["targets"][lo:hi],
            a["mask"][lo:hi],
            n_valid=int(case.scalars["n_valid"]),
        )

    def noise_floor(self, case: Case, ref64: Arrays) -> Arrays:
        x = case.arrays["logits"].astype(np.float64)
        mask = case.arrays["mask"]
        vocab = case.dims["vocab"]
        inv = float(case.scalars["inv_n_valid"])
        arg = x - x.max(axis=1, keepdims=True)
        p = np.exp(arg)
        p /= p.sum(axis=1, keepdims=True)
        rel = U32 * (FIXED_ULPS + ARG_ULPS * np.abs(arg) + SUM_LAMBDA * math.sqrt(vocab))
        scale = np.where(mask != 0, inv, 0.0)[:, None]
        g = ref64["grad"]
        return {"grad": scale * p * rel + 3 * U32 * np.abs(g) + 4 * TINY32 * (1.0 + scale)}

    def explain_scale(self, case: Case, output: str, factor: float) -> tuple[str, str] | None:
        rows, n_valid = case.dims["rows"], int(case.scalars["n_valid"])
        if n_valid and rows != n_valid and math.isclose(factor, n_valid / rows, rel_tol=1e-4):
            return (
                "normalised-by-rows",
                f"= n_valid / rows = {n_valid}/{rows}: normalised by all rows, not the unmasked ones",
            )
        if n_valid and math.isclose(factor, float(n_valid), rel_tol=1e-4):
            return (
                "not-normalised",
                f"= n_valid = {n_valid}: the 1/n_valid normalisation is missing",
            )
        return None


LOSS_CE = LossCE()
