"""layernorm-bwd: layer norm's backward pass, dx, dgamma and dbeta from the upstream gradient dy."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from ._spec import (
    Arrays,
    Case,
    Dim,
    KernelParam,
    Op,
    Option,
    Output,
    ShippedKernel,
    Variant,
    sample_count,
    sample_note,
)

U32 = 2.0**-24  # unit roundoff of float32
TINY32 = 2.0**-126  # smallest normal float32 (flush-to-zero)
# First-order rounding analysis of dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma,
# in units of U32 (written out in DIAGNOSTIC_GUIDE.md#noise-bound):
PRODUCT_ULPS = 4.0  # g = dy * gamma, the final multiply by rstd, the subtractions
XHAT_ULPS = 3.0  # xhat = (x - mean) * rstd: the subtraction and the multiply, relative to |xhat|
SUM_LAMBDA = 8.0  # probabilistic bound on a sum of n terms: lambda * sqrt(n) * U32 (Higham & Mary)
GUIDE = "DIAGNOSTIC_GUIDE.md"

KERNELS = (
    ShippedKernel(
        "ln-bwd",
        "layernorm_bwd/ln_bwd.cu",
        "ln_bwd",
        "pass",
        "warp-shuffle row sums, block-stride loop over hidden, atomicAdd for dgamma/dbeta",
    ),
    ShippedKernel(
        "cg-streaming",
        "layernorm_bwd/ln_bwd_cg.cu",
        "ln_bwd_cg",
        "pass",
        "cooperative groups (thread_block_tile<32>, cg::reduce) with __ldcs/__stcs streaming",
    ),
    ShippedKernel(
        "shared-tree",
        "layernorm_bwd/ln_bwd_tree.cu",
        "ln_bwd_tree",
        "pass",
        "shared-memory tree reductions with a barrier per step (any block size)",
    ),
    ShippedKernel(
        "missing-barrier",
        "layernorm_bwd/bugs/missing_barrier.cu",
        "ln_bwd_missing_barrier",
        "kernel-bug",
        "both row sums share one scratch array with no __syncthreads() between: a race",
    ),
    ShippedKernel(
        "dgamma-race",
        "layernorm_bwd/bugs/dgamma_race.cu",
        "ln_bwd_dgamma_race",
        "kernel-bug",
        "dgamma[j] += ... and dbeta[j] += ... from every block without atomics: lost updates",
    ),
    ShippedKernel(
        "mean-term-dy",
        "layernorm_bwd/bugs/mean_term_dy.cu",
        "ln_bwd_mean_term_dy",
        "kernel-bug",
        "the mean term subtracts mean(dy), not mean(dy * gamma)",
    ),
    ShippedKernel(
        "proj-no-rstd",
        "layernorm_bwd/bugs/rstd_missing_in_proj.cu",
        "ln_bwd_proj_no_rstd",
        "kernel-bug",
        "the projection term uses x - mean instead of xhat = (x - mean) * rstd",
    ),
    ShippedKernel(
        "thread-per-element",
        "layernorm_bwd/bugs/thread_per_element.cu",
        "ln_bwd_thread_per_element",
        "kernel-bug",
        "one thread per hidden element, no block-stride loop: hidden > blockDim.x is wrong",
    ),
    ShippedKernel(
        "vec4-tail",
        "layernorm_bwd/bugs/vec4_tail.cu",
        "ln_bwd_vec4_tail",
        "kernel-bug",
        "float4 loads on aligned rows forget the hidden % 4 tail",
    ),
)


def _row_ctx(case: Case) -> dict[str, np.ndarray]:
    """The float64 quantities of the backward pass, from the kernel's own float32 inputs."""
    a = case.arrays
    x = a["x"].astype(np.float64)
    mean = a["mean"].astype(np.float64)[:, None]
    rstd = a["rstd"].astype(np.float64)[:, None]
    dy = a["dy"].astype(np.float64)
    g = dy * a["gamma"].astype(np.float64)
    xc = x - mean
    return {"x": x, "mean": mean, "rstd": rstd, "dy": dy, "g": g, "xc": xc, "xhat": xc * rstd}


class LayerNormBwd(Op):
    id = "layernorm-bwd"
    summary = "layer norm backward over hidden: dx, dgamma, dbeta from dy"
    dims = (
        Dim("rows", 64, "rows (tokens), one block each"),
        Dim("hidden", 768, "features normalised per row", maximum=1 << 24),
    )
    options = (Option("eps", "float", 1e-5, "the epsilon in rstd = 1 / sqrt(var + eps)"),)
    params = (
        KernelParam("dy", "in", "float32"),
        KernelParam("x", "in", "float32"),
        KernelParam("gamma", "in", "float32"),
        KernelParam("mean", "in", "float32"),
        KernelParam("rstd", "in", "float32"),
        KernelParam("dx", "out", "float32"),
        KernelParam("dgamma", "out", "float32"),
        KernelParam("dbeta", "out", "float32"),
        KernelParam("rows", "scalar", "int32"),
        KernelParam("hidden", "scalar", "int32"),
    )
    outputs = (
        Output("dx", "x", ("row", "hidden")),
        Output("dgamma", "gamma", ("hidden",), init="zero"),
        Output("dbeta", "beta", ("hidden",), init="zero"),
    )
    kernels = KERNELS
    default_kernel = "ln-bwd"
    causes = (
        (
            "non-finite",
            f"a division by a tiny variance or an overflow in the row sums; {GUIDE}#non-finite",
        ),
    )

    # Peak PSS of `gradcheck run layernorm-bwd` at hidden 4096 (warm cache): 1.36 GiB at rows 2048,
    # 1.52 GiB at 4096, 1.73 GiB at 8192. Above 2^22 elements the other cases hold a sample of the
    # rows (134 bytes an element, measured when every case held the whole problem) and plain is
    # compared a block of rows at a time, so what grows is its x, dy and dx (13.5 to 20 bytes an
    # element between those sizes). The refusal assumes 134 bytes for each element of the
    # largest case held whole (the sampled rows; every row when no fewer can be sampled, 8 or
    # fewer) and 24 for every element: it errs on the side of the user's process.
    work_unit = "rows * hidden elements"
    bytes_per_unit = 134
    bytes_per_streamed_unit = 24
    smaller = "Use fewer rows: each row is one block running the same code, so a few hundred rows at your hidden size check it as well."

    def held_whole(self, dims: dict[str, int]) -> int:
        return sample_count(dims["rows"], dims["hidden"]) * dims["hidden"]

    def validate(self, dims: dict[str, int], block: int) -> None:
        self.limit_elements(dims, ("rows", "hidden"), 1 << 28)

    def cases(
        self, dims: dict[str, int], block: int, seed: int, options: dict[str, Any]
    ) -> list[Case]:
        rows, hidden = dims["rows"], dims["hidden"]
        eps = float(options.get("eps", 1e-5))
        rng = np.random.default_rng(seed)
        out: list[Case] = []

        def normal(*shape: int) -> np.ndarray:
            return rng.standard_normal(shape)

        def add(name: str, why: str, x: np.ndarray) -> None:
            r, h = x.shape
            gamma = 1.0 + 0.5 * normal(h)
            out.append(self._case(name, why, x, gamma, normal(r, h), eps))

        add(
            "plain",
            "x ~ N(0, 1) around a per-row offset, gamma ~ N(1, 0.5^2)",
            normal(rows, hidden) + normal(rows, 1),
        )
        # The other distributions on a sample of the rows when the problem is large (_spec.py).
        sr = sample_count(rows, hidden)
        out[-1] = replace(out[-1], run_once=sr < rows)
        note = sample_note(sr, rows, "rows", "hidden size")
        side = np.where(np.arange(sr) % 2 == 0, 300.0, -300.0)[:, None]
        add(
            "large-activations",
            "x around +300 / -300 with spread 50: a large mean against the spread" + note,
            50.0 * normal(sr, hidden) + side,
        )
        flat = normal(sr, 1) + 1e-3 * normal(sr, hidden)
        add(
            "near-constant",
            f"rows nearly constant (spread 1e-3): the variance is near eps = {eps:g}" + note,
            flat,
        )
        if rows > 1:
            add("rows=1", "a single row: the dgamma/dbeta sums have one term", normal(1, hidden))
        # Shapes around the block size, whatever the user asked: most layout bugs live there.
        for h in sorted({max(1, block - 1), block, block + 1} - {hidden}):
            rel = "<" if h < block else ("=" if h == block else ">")
            add(f"hidden={h}", f"hidden {rel} blockDim.x ({block}), 3 rows", normal(3, h) + 0.5)
        return out

    def _case(
        self, name: str, why: str, x: np.ndarray, gamma: np.ndarray, dy: np.ndarray, eps: float
    ) -> Case:
        from ..reference.layernorm import stats

        rows, hidden = x.shape
        x32 = x.astype(np.float32)
        mean, rstd = stats(x32, eps)
        return Case(
            name=name,
            description=why,
            dims={"rows": rows, "hidden": hidden},
            arrays={
                "dy": dy.astype(np.float32),
                "x": x32,
                "gamma": gamma.astype(np.float32),
                "beta": np.zeros(hidden, np.float32),  # not a kernel input; FD moves it
                "mean": mean.astype(np.float32),
                "rstd": rstd.astype(np.float32),
            },
            scalars={"rows": rows, "hidden": hidden, "eps": eps},
            output_shapes={"dx": (rows, hidden), "dgamma": (hidden,), "dbeta": (hidden,)},
        )

    def geometry(self, case: Case, block: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
        return (block, 1, 1), (case.dims["rows"], 1)

    def stream_rows(self, case: Case) -> int | None:
        return case.dims["rows"]

    def summed_outputs(self) -> tuple[str, ...]:
        return ("dgamma", "dbeta")

    def row_cost(self, case: Case) -> int:
        return case.dims["hidden"]  # dx's row; dgamma and dbeta are one row for the whole block

    def rows(self, case: Case, lo: int, hi: int) -> Case:
        a = case.arrays
        per_row = {name: a[name][lo:hi] for name in ("dy", "x", "mean", "rstd")}
        hidden = case.dims["hidden"]
        return replace(
            case,
            description=f"rows {lo}..{hi - 1} of {case.name}",
            dims={"rows": hi - lo, "hidden": hidden},
            arrays={**a, **per_row},
            # the dgamma / dbeta noise bound grows with the rows the whole sum runs over
            scalars={**case.scalars, "rows": hi - lo, "summed_rows": _summed_rows(case)},
            output_shapes={"dx": (hi - lo, hidden), "dgamma": (hidden,), "dbeta": (hidden,)},
            run_once=False,
        )

    def reference(self, case: Case, dtype: type[np.floating[Any]]) -> Arrays:
        from ..reference import layernorm

        a = case.arrays
        out: Arrays = layernorm.grads(
            a["dy"], a["x"], a["gamma"], float(case.scalars["eps"]), dtype
        )
        return out

    def loss_values(self, case: Case, points: Arrays, dtype: type[np.floating[Any]]) -> np.ndarray:
        from ..reference import layernorm

        eps = float(case.scalars["eps"])
        dy = case.arrays["dy"]
        out: np.ndarray = layernorm.loss_values(
            points["x"], points["gamma"], points["beta"], dy, eps, dtype
        )
        return out

    def noise_floor(self, case: Case, ref64: Arrays) -> Arrays:
        c = _row_ctx(case)
        hidden = case.dims["hidden"]
        g, xh, rstd, dy = c["g"], c["xhat"], c["rstd"], c["dy"]
        a = g.mean(axis=1, keepdims=True)
        b = (g * xh).mean(axis=1, keepdims=True)
        # xhat from the float32 mean and rstd the kernel gets: their rounding moves it by
        # rstd * u * |mean| (a large mean against a small spread is the hard case), plus its own.
        d_xh = U32 * (rstd * np.abs(c["mean"]) + XHAT_ULPS * np.abs(xh))
        sum_h = SUM_LAMBDA * math.sqrt(hidden) * U32
        err_a = sum_h * np.abs(g).mean(axis=1, keepdims=True) + 2 * U32 * np.abs(a)
        err_b = (
            sum_h * np.abs(g * xh).mean(axis=1, keepdims=True)
            + (np.abs(g) * d_xh).mean(axis=1, keepdims=True)
            + 2 * U32 * np.abs(b)
        )
        dx = rstd * (
            PRODUCT_ULPS * U32 * (np.abs(g) + np.abs(a) + np.abs(xh * b))
            + err_a
            + np.abs(b) * d_xh
            + np.abs(xh) * err_b
        ) + 3 * U32 * np.abs(ref64["dx"])
        sum_r = SUM_LAMBDA * math.sqrt(_summed_rows(case)) * U32
        dgamma = (sum_r + 2 * U32) * np.abs(dy * xh).sum(axis=0) + (np.abs(dy) * d_xh).sum(axis=0)
        dbeta = sum_r * np.abs(dy).sum(axis=0)
        return {
            "dx": dx + 4 * TINY32,
            "dgamma": dgamma + 4 * TINY32,
            "dbeta": dbeta + 4 * TINY32,
        }

    def variants(self, case: Case) -> list[Variant]:
        c = _row_ctx(case)
        g, xh, xc, rstd, dy = c["g"], c["xhat"], c["xc"], c["rstd"], c["dy"]

        def mean(v: np.ndarray) -> np.ndarray:
            out: np.ndarray = v.mean(axis=1, keepdims=True)
            return out

        a, b = mean(g), mean(g * xh)
        wrong = {
            "mean-term-dy": (
                rstd * (g - mean(dy) - xh * b),
                "dx = rstd * (g - mean(dy) - xhat * mean(g * xhat)): the mean term uses dy, not g = dy * gamma",
                "the mean term takes dy where it needs dy * gamma",
            ),
            "proj-no-rstd": (
                rstd * (g - a - xc * mean(g * xc)),
                "dx with (x - mean) in place of xhat in the projection term: rstd missing there",
                "the projection term uses x - mean instead of xhat = (x - mean) * rstd",
            ),
            "no-mean-term": (
                rstd * (g - xh * b),
                "dx without the - mean(g) term",
                "the mean term of dx is missing",
            ),
            "no-proj-term": (
                rstd * (g - a),
                "dx without the - xhat * mean(g * xhat) term",
                "the projection term of dx is missing",
            ),
            "no-rstd": (
                g - a - xh * b,
                "dx not multiplied by rstd",
                "the final multiply by rstd is missing",
            ),
        }
        return [
            Variant(key, text, f"{cause}; {GUIDE}#layernorm-bwd", {"dx": dx})
            for key, (dx, text, cause) in wrong.items()
        ]


def _summed_rows(case: Case) -> int:
    """The rows dgamma and dbeta sum over: the whole case's, also in a block of its rows."""
    return int(case.scalars.get("summed_rows", case.dims["rows"]))


LAYERNORM_BWD = LayerNormBwd()
