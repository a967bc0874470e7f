"""attention-bwd: scaled dot-product attention's backward pass, dq, dk and dv from dout."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from .._errors import UsageError
from ._spec import (
    SAMPLE_ELEMENTS,
    Arrays,
    BlockSample,
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
    spread_rows,
)

U32 = 2.0**-24  # unit roundoff of float32
TINY32 = 2.0**-126  # smallest normal float32 (flush-to-zero)
# First-order rounding analysis of P = exp(S - lse), dS = P * (dP - D), dq = scale * dS K,
# dk = scale * dS^T Q, dv = P^T dO, in units of U32 (DIAGNOSTIC_GUIDE.md#noise-bound):
EXP_ULPS = 4.0  # exp (CUDA's __expf included) and the subtraction S - lse
# A sum of n terms t in any order (unsorted) makes a rounding error of about U32 * sqrt(sum of the
# squared partial sums); M = |sum t| + 3 * ||t||_2 bounds the largest partial sum (its drift plus a
# random walk), so SUM_LAMBDA * sqrt(n) * U32 * M is about 8 standard deviations of that error.
SUM_LAMBDA = 2.0
GUIDE = "DIAGNOSTIC_GUIDE.md"
# batch * heads * seq * seq: time grows with the scores (2^27 took 5.5 minutes on 2 cores, cpu
# backend); memory does not, since the plain case is compared a block of heads at a time.
MAX_SCORES = 1 << 30
# A case of more scores than this runs its repeats (thread orders, alignment, race check) on a
# sample of its query rows, at least MIN_REPEAT_ROWS a head: one head at seq 8192 is 64M scores,
# and the race check runs its blocks on one thread (12 s for a head at seq 2048, 4M scores).
REPEAT_SCORES = SAMPLE_ELEMENTS
MIN_REPEAT_ROWS = 64

KERNELS = (
    ShippedKernel(
        "attn-bwd",
        "attention_bwd/attn_bwd.cu",
        "attn_bwd",
        "pass",
        "one block per query row: threads over keys, ds in shared memory, atomicAdd for dk/dv",
    ),
    ShippedKernel(
        "warp-per-key",
        "attention_bwd/attn_bwd_warp.cu",
        "attn_bwd_warp",
        "pass",
        "one warp per key, lanes over head_dim, __shfl_xor_sync dot products",
    ),
    ShippedKernel(
        "causal-off-by-one",
        "attention_bwd/bugs/causal_off_by_one.cu",
        "attn_bwd_causal_off_by_one",
        "kernel-bug",
        "the causal key loop runs j < i: the diagonal key is left out",
    ),
    ShippedKernel(
        "dkdv-transpose",
        "attention_bwd/bugs/dkdv_transpose.cu",
        "attn_bwd_dkdv_transpose",
        "kernel-bug",
        "dv = P dO instead of P^T dO: the query and key indices mixed up",
    ),
    ShippedKernel(
        "head-dim-tail",
        "attention_bwd/bugs/head_dim_tail.cu",
        "attn_bwd_head_dim_tail",
        "kernel-bug",
        "float4 loops over head_dim forget the head_dim % 4 tail",
    ),
    ShippedKernel(
        "missing-barrier",
        "attention_bwd/bugs/missing_barrier.cu",
        "attn_bwd_missing_barrier",
        "kernel-bug",
        "no __syncthreads() between writing the shared ds chunk and reading it: a race",
    ),
    ShippedKernel(
        "no-scale-dk",
        "attention_bwd/bugs/scale_missing_dk.cu",
        "attn_bwd_no_scale_dk",
        "kernel-bug",
        "dk omits the softmax scale (off by 1 / scale)",
    ),
)


SATURATION = 0.99  # the dominant key's share of the softmax in the "saturated" case


# Attention's three products as matmul (BLAS); np.einsum's own loops for them are 5 to 8 times
# slower at seq 2048 (measured on one head, head_dim 128).
_MATMUL: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "bhid,bhjd->bhij": lambda x, y: x @ y.swapaxes(-1, -2),  # Q K^T
    "bhij,bhjd->bhid": lambda x, y: x @ y,  # P V
    "bhij,bhid->bhjd": lambda x, y: x.swapaxes(-1, -2) @ y,  # P^T dO
}


def _mm(spec: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``np.einsum(spec, x, y)`` for one of attention's products."""
    return _MATMUL[spec](x, y)


def _saturating(q: np.ndarray, k: np.ndarray, causal: bool) -> tuple[np.ndarray, np.ndarray]:
    """q pointed at one key per query row (the allowed key of largest norm, so that it wins as q
    grows) and scaled so that its softmax share is SATURATION (bisection per row, a block of query
    rows at a time)."""
    s, d = q.shape[-2:]
    scale = 1.0 / math.sqrt(d)
    k_norms = np.linalg.norm(k, axis=-1)[:, :, None, :]
    out = np.empty_like(q)
    for rows in _query_blocks(q):
        allowed = _allowed(s, causal, rows)
        star = np.argmax(np.where(allowed, k_norms, -1.0), axis=-1)  # [b, h, rows]
        target = np.take_along_axis(k, star[..., None], axis=2)
        unit = target / np.maximum(np.linalg.norm(target, axis=-1, keepdims=True), 1e-30)
        base = 0.05 * q[..., rows, :]
        lo, hi = np.zeros(star.shape), np.full(star.shape, 1e3)
        for _ in range(40):
            mid = (lo + hi) / 2
            sc = np.where(
                allowed, scale * _mm("bhid,bhjd->bhij", base + mid[..., None] * unit, k), -np.inf
            )
            p = np.exp(sc - sc.max(-1, keepdims=True))
            share = np.take_along_axis(p, star[..., None], axis=-1)[..., 0] / p.sum(-1)
            low = share < SATURATION
            lo, hi = np.where(low, mid, lo), np.where(low, hi, mid)
        out[..., rows, :] = base + hi[..., None] * unit
    return out, k


def _allowed(seq: int, causal: bool, rows: slice, offset: int = 0) -> np.ndarray:
    """Which (query i, key j) pairs take part, for the query ``rows``: j <= i + offset when causal,
    all otherwise."""
    i = np.arange(rows.start, rows.stop)[:, None]
    j = np.arange(seq)[None, :]
    return (j <= i + offset) if causal else np.ones((rows.stop - rows.start, seq), bool)


def _query_blocks(q: np.ndarray) -> list[slice]:
    """The blocks of query rows the formulas here take at a time: their float64 score matrices
    (every head of ``q`` at once) hold at most the references' QUERY_SCORES each."""
    from ..reference.attention import query_rows

    seq, n = q.shape[-2], query_rows(q.shape)
    return [slice(lo, min(seq, lo + n)) for lo in range(0, seq, n)]


def _probabilities(
    q: np.ndarray, k: np.ndarray, lse: np.ndarray, scale: float, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(S, P) as a backward kernel forms them: P = exp(S - lse) with the given lse, 0 where masked."""
    s: np.ndarray = scale * _mm("bhid,bhjd->bhij", q, k)
    with np.errstate(over="ignore"):
        p: np.ndarray = np.where(allowed, np.exp(np.where(allowed, s - lse, 0.0)), 0.0)
    return s, p


def _backward(
    case: Case,
    causal: bool,
    *,
    offset: int = 0,
    dv_from_p: bool = False,
    features: int | None = None,
) -> Arrays:
    """The backward formulas in float64 from the kernel's own float32 inputs (o and lse included),
    a block of query rows at a time, optionally with one of the wrong turns kernels take: a causal
    mask j <= i + ``offset``; dv = P dO; ``features``: only the first head_dim entries take part,
    the rest stay zero."""
    a = case.arrays
    q, k, v, o, dout = (a[n].astype(np.float64) for n in ("q", "k", "v", "o", "dout"))
    if features is not None:
        cut = np.arange(q.shape[-1]) < features
        q, k, v, o, dout = (np.where(cut, t, 0.0) for t in (q, k, v, o, dout))
    lse = a["lse"].astype(np.float64)[..., None]
    scale = float(case.scalars["scale"])
    seq = q.shape[-2]
    dq, dk, dv = np.empty_like(q), np.zeros_like(k), np.zeros_like(v)
    for rows in _query_blocks(q):
        allowed = _allowed(seq, causal, rows, offset)
        _, p = _probabilities(q[..., rows, :], k, lse[..., rows, :], scale, allowed)
        dp = _mm("bhid,bhjd->bhij", dout[..., rows, :], v)
        d = np.sum(dout[..., rows, :] * o[..., rows, :], axis=-1)[..., None]
        ds = p * (dp - d)
        dq[..., rows, :] = scale * _mm("bhij,bhjd->bhid", ds, k)
        dk += scale * _mm("bhij,bhid->bhjd", ds, q[..., rows, :])
        if dv_from_p:
            dv[..., rows, :] = _mm("bhij,bhjd->bhid", p, dout)
        else:
            dv += _mm("bhij,bhid->bhjd", p, dout[..., rows, :])
    return {"dq": dq, "dk": dk, "dv": dv}


class AttentionBwd(Op):
    id = "attention-bwd"
    summary = "scaled dot-product attention backward: dq, dk, dv from dout (optional causal mask)"
    dims = (
        Dim("batch", 2, "batch size"),
        Dim("heads", 4, "attention heads"),
        Dim("seq", 128, "sequence length (queries = keys)", maximum=1 << 16),
        Dim("head_dim", 64, "features per head", maximum=1 << 12),
    )
    options = (Option("causal", "flag", False, "mask keys after the query (j > i)"),)
    params = (
        KernelParam("q", "in", "float32"),
        KernelParam("k", "in", "float32"),
        KernelParam("v", "in", "float32"),
        KernelParam("o", "in", "float32"),
        KernelParam("dout", "in", "float32"),
        KernelParam("lse", "in", "float32"),
        KernelParam("dq", "out", "float32"),
        KernelParam("dk", "out", "float32"),
        KernelParam("dv", "out", "float32"),
        KernelParam("batch", "scalar", "int32"),
        KernelParam("heads", "scalar", "int32"),
        KernelParam("seq", "scalar", "int32"),
        KernelParam("head_dim", "scalar", "int32"),
        KernelParam("scale", "scalar", "float32"),
        KernelParam("causal", "scalar", "int32"),
    )
    axes = ("batch", "head", "seq", "head_dim")
    outputs = (
        Output("dq", "q", axes, init="zero"),
        Output("dk", "k", axes, init="zero"),
        Output("dv", "v", axes, init="zero"),
    )
    kernels = KERNELS
    default_kernel = "attn-bwd"
    default_block = 128

    def launch_note(self) -> str:
        return "grid = (seq, batch * heads, 1), block = (--block, 1, 1); scale = 1 / sqrt(head_dim)"

    # Peak RSS of `gradcheck run attention-bwd --head-dim 64` at 2.1M scores, while every
    # function held a head's scores whole: 1.58 GB (heads 8, seq 512) and 1.36 GB (heads 2,
    # seq 1024), about 0.9 GB of it the process at rest: 330 bytes a score. The references now take
    # a block of query rows at a time (at most 2^22 scores; the FD's batch of points had held 16
    # heads' scores), and the peaks are lower: heads 8, seq 512: 0.9 GiB; batch 1, heads 32,
    # seq 2048, head_dim 128 (134M scores, plain compared a head at a time): 1.4 GiB, was 2.7
    # (benchmarks/RESULTS.md); one head at seq 8192 (64M scores): cases, references, noise bound,
    # formulas and FD in 1.2 GiB; at seq 4096, 1.0 GiB where holding a head whole took 4.8 GiB.
    # The refusal keeps 330 bytes for each score up to 2 x 2^22 and 64 per element of q (4.4 GB
    # at the LLM size), an over-estimate on the side of the user's process.
    work_unit = "batch * heads * seq^2 scores"
    bytes_per_unit = 330
    bytes_per_q_element = 64
    smaller = "Use fewer heads (every head runs the same code), or a shorter seq."

    def work_units(self, dims: dict[str, int]) -> int:
        return dims["batch"] * dims["heads"] * dims["seq"] * dims["seq"]

    def held_whole(self, dims: dict[str, int]) -> int:
        # The references and the noise bound hold at most QUERY_SCORES (2^22) scores at a time, a
        # block of query rows (at seq 8192 a head is 64M scores); two of them may run at once.
        return min(self.work_units(dims), 2 * SAMPLE_ELEMENTS)

    def memory_bytes(self, dims: dict[str, int]) -> int:
        q = dims["batch"] * dims["heads"] * dims["seq"] * dims["head_dim"]
        return super().memory_bytes(dims) + self.bytes_per_q_element * q

    def validate(self, dims: dict[str, int], block: int) -> None:
        b, h, s = dims["batch"], dims["heads"], dims["seq"]
        if b * h > 65535:
            raise UsageError(
                f"batch * heads = {b * h:,} exceeds CUDA's grid y limit (65,535) of the canonical "
                "launch grid = (seq, batch * heads): use fewer heads; every head runs the same code."
            )
        if b * h * s * s > MAX_SCORES:
            raise UsageError(
                f"batch * heads * seq^2 = {b * h * s * s:,} scores is more than this version checks "
                f"(at most {MAX_SCORES:,}): use fewer heads or a shorter seq."
            )

    def cases(
        self, dims: dict[str, int], block: int, seed: int, options: dict[str, Any]
    ) -> list[Case]:
        b, h, s, d = dims["batch"], dims["heads"], dims["seq"], dims["head_dim"]
        causal = bool(options.get("causal", False))
        rng = np.random.default_rng(seed)
        out: list[Case] = []
        mode = "causal" if causal else "no mask"

        def normal(*shape: int) -> np.ndarray:
            return rng.standard_normal(shape)

        def add(
            name: str, why: str, shape: tuple[int, int, int, int], c: bool, qk: float = 1.0
        ) -> None:
            q, k = qk * normal(*shape), qk * normal(*shape)
            out.append(self._case(name, why, q, k, normal(*shape), normal(*shape), c))

        add("plain", f"q, k, v, dout ~ N(0, 1), {mode}", (b, h, s, d), causal)
        # The other distributions on a sample of the heads when the problem is large (_spec.py):
        # all of them while batch * heads * seq^2 is small, else one batch and fewer heads.
        nh = sample_count(b * h, s * s, minimum=1)
        sb, sh = (b, h) if nh == b * h else (1, max(1, min(h, nh)))
        note = sample_note(sb * sh, b * h, "heads", "seq")
        out[-1] = replace(out[-1], run_once=sb * sh < b * h)
        # One dominant score per query row: softmax saturates (P near one-hot) and dS = P (dP - D)
        # cancels. Saturated to P_max = SATURATION, no further: beyond it the gradient drops below
        # what float32 inputs (o, lse) can resolve and no check has power there.
        q, k = _saturating(normal(sb, sh, s, d), normal(sb, sh, s, d), causal)
        why = f"one key takes {SATURATION:g} of each query's softmax (dS cancels), {mode}" + note
        v, dout = normal(sb, sh, s, d), normal(sb, sh, s, d)
        out.append(self._case("saturated", why, q, k, v, dout, causal))
        add(
            "large-scores",
            f"q and k scaled by 4: scores spread ~16, {mode}" + note,
            (sb, sh, s, d),
            causal,
            4.0,
        )
        other = not causal
        add(
            "causal" if other else "no-mask",
            "the other mask mode: "
            + ("causal (row 0 sees one key: P = 1, dS = 0)" if other else "no mask")
            + note,
            (sb, sh, s, d),
            other,
        )
        # Shapes that break kernels, whatever the user asked: seq = 1, seq around the block size,
        # and a head_dim that is not a multiple of 4 (vectorised loops and their tail).
        small = (1, min(h, 2))
        for n in sorted({1, max(1, block - 1), block, block + 1} - {s}):
            rel = "=" if n == block else ("<" if n < block else ">")
            why = "seq = 1: one key" if n == 1 else f"seq {rel} blockDim.x ({block})"
            add(f"seq={n}", f"{why}, {mode}", (*small, n, d), causal)
        if d % 4 == 0:
            d2 = d - 1 if d > 4 else d + 3
            add(
                f"head_dim={d2}",
                f"head_dim % 4 = {d2 % 4}: the tail after float4 chunks, {mode}",
                (*small, min(s, 64), d2),
                causal,
            )
        return out

    def _case(
        self,
        name: str,
        why: str,
        q: np.ndarray,
        k: np.ndarray,
        v: np.ndarray,
        dout: np.ndarray,
        causal: bool,
    ) -> Case:
        from ..reference.attention import forward64

        b, h, s, d = q.shape
        scale = 1.0 / math.sqrt(d)
        q32, k32, v32 = (t.astype(np.float32) for t in (q, k, v))
        o64, lse64 = forward64(q32, k32, v32, scale, causal)  # a block of query rows at a time
        o, lse = o64.astype(np.float32), lse64.astype(np.float32)
        shape = (b, h, s, d)
        return Case(
            name=name,
            description=why,
            dims={"batch": b, "heads": h, "seq": s, "head_dim": d},
            arrays={
                "q": q32,
                "k": k32,
                "v": v32,
                "o": o,
                "dout": dout.astype(np.float32),
                "lse": lse,
            },
            scalars={
                "batch": b,
                "heads": h,
                "seq": s,
                "head_dim": d,
                "scale": float(np.float32(scale)),
                "causal": int(causal),
            },
            output_shapes={"dq": shape, "dk": shape, "dv": shape},
        )

    def geometry(self, case: Case, block: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
        return (block, 1, 1), (case.dims["seq"], case.dims["batch"] * case.dims["heads"])

    def repeat_sample(
        self, case: Case, block: int, grid: tuple[int, ...] | None
    ) -> BlockSample | None:
        # A block is one query row of one head: the first and last rows of each head (row 0 sees
        # one key under the causal mask, the last ones every key) and rows spread between. Every
        # block writes dk and dv for the keys it sees, so blocks that race on them are in the
        # sample as they are in the grid.
        seq, heads = case.dims["seq"], case.dims["batch"] * case.dims["heads"]
        _, canonical = self.geometry(case, block)
        if grid is not None and tuple(grid) not in (canonical, (*canonical, 1)):
            return None  # the user's own grid: what a block is, only the kernel knows
        if heads * seq * seq <= REPEAT_SCORES:
            return None
        per_head = max(MIN_REPEAT_ROWS, REPEAT_SCORES // (heads * seq))
        if per_head >= seq:
            return None
        rows = spread_rows(seq, per_head)
        edge = per_head // 4
        blocks = (rows[None, :] + seq * np.arange(heads)[:, None]).ravel()
        each = " of each head" if heads > 1 else ""
        return BlockSample(
            blocks,
            f"{per_head:,} of {seq:,} query rows{each} (the first {edge:,}, the last {edge:,} and "
            f"{per_head - 2 * edge:,} spread between)",
            "query row",
        )

    stream_unit = "heads"

    def stream_rows(self, case: Case) -> int | None:
        return case.dims["batch"] * case.dims["heads"]  # every head is a problem of its own

    def row_cost(self, case: Case) -> int:
        return case.dims["seq"] ** 2  # a head's scores (held a block of query rows at a time)

    def rows(self, case: Case, lo: int, hi: int) -> Case:
        b, h = case.dims["batch"], case.dims["heads"]
        s, d = case.dims["seq"], case.dims["head_dim"]
        n = hi - lo
        arrays = {
            name: a.reshape(b * h, *a.shape[2:])[lo:hi][None] for name, a in case.arrays.items()
        }
        return Case(
            name=case.name,
            description=f"heads {lo}..{hi - 1} of {case.name} (batch and heads flattened)",
            dims={"batch": 1, "heads": n, "seq": s, "head_dim": d},
            arrays=arrays,
            scalars={**case.scalars, "batch": 1, "heads": n},
            output_shapes={name: (1, n, s, d) for name in case.output_shapes},
        )

    def reference(self, case: Case, dtype: type[np.floating[Any]]) -> Arrays:
        from ..reference import attention

        a = case.arrays
        scale, causal = float(case.scalars["scale"]), bool(case.scalars["causal"])
        out: Arrays = attention.grads(a["q"], a["k"], a["v"], a["dout"], scale, causal, dtype)
        return out

    def loss_values(self, case: Case, points: Arrays, dtype: type[np.floating[Any]]) -> np.ndarray:
        from ..reference import attention

        scale, causal = float(case.scalars["scale"]), bool(case.scalars["causal"])
        p = points
        out: np.ndarray = attention.loss_values(
            p["q"], p["k"], p["v"], case.arrays["dout"], scale, causal, dtype
        )
        return out

    def noise_floor(self, case: Case, ref64: Arrays) -> Arrays:
        a = case.arrays
        q, k, v, o, dout = (a[n].astype(np.float64) for n in ("q", "k", "v", "o", "dout"))
        lse = a["lse"].astype(np.float64)[..., None]
        seq, d = case.dims["seq"], case.dims["head_dim"]
        scale = float(case.scalars["scale"])
        causal = bool(case.scalars["causal"])

        def sum_err(n: int, total: np.ndarray, l2sq: np.ndarray) -> np.ndarray:
            """The rounding error of a sum of n terms with this total and sum of squares."""
            out: np.ndarray = SUM_LAMBDA * math.sqrt(n) * U32 * (np.abs(total) + 3 * np.sqrt(l2sq))
            return out

        qk, pv, ptd = "bhid,bhjd->bhij", "bhij,bhjd->bhid", "bhij,bhid->bhjd"
        # dq takes its rows from one block of query rows; dk and dv add up over the blocks, their
        # propagated errors and the sums of squares for their own rounding alike.
        dq = np.empty_like(q)
        dk_err, dk_l2, dv_err, dv_l2 = (np.zeros_like(k) for _ in range(4))
        for rows in _query_blocks(q):
            qr, doutr = q[..., rows, :], dout[..., rows, :]
            s, p = _probabilities(qr, k, lse[..., rows, :], scale, _allowed(seq, causal, rows))
            # Relative error of P: the dot product q.k, the float32 lse, the subtraction, exp.
            rel_p = scale * sum_err(d, s / scale, _mm(qk, qr * qr, k * k)) + U32 * (
                EXP_ULPS + np.abs(s) + np.abs(lse[..., rows, :]) + np.abs(s - lse[..., rows, :])
            )
            dp = _mm(qk, doutr, v)
            err_dp = sum_err(d, dp, _mm(qk, doutr * doutr, v * v))
            # D = dout . o, with o rounded to float32 on its way to the kernel (3 U32 ||dout o||).
            dout_o = doutr * o[..., rows, :]
            dd = np.sum(dout_o, axis=-1)[..., None]
            l2_do = np.sum(dout_o**2, axis=-1)[..., None]
            err_d = sum_err(d, dd, l2_do) + 3 * U32 * np.sqrt(l2_do)
            ds = p * (dp - dd)
            err_ds = (
                np.abs(ds) * (rel_p + 2 * U32)
                + p * (err_dp + err_d)
                + U32 * p * (np.abs(dp) + np.abs(dd))
            )
            # Each output: the propagated error of its terms, plus the rounding of its own sum.
            dq[..., rows, :] = scale * (
                _mm(pv, err_ds, np.abs(k))
                + sum_err(seq, ref64["dq"][..., rows, :] / scale, _mm(pv, ds * ds, k * k))
            )
            dk_err += _mm(ptd, err_ds, np.abs(qr))
            dk_l2 += _mm(ptd, ds * ds, qr * qr)
            dv_err += _mm(ptd, p * rel_p, np.abs(doutr))
            dv_l2 += _mm(ptd, p * p, doutr * doutr)
        dk = scale * (dk_err + sum_err(seq, ref64["dk"] / scale, dk_l2))
        dv = dv_err + sum_err(seq, ref64["dv"], dv_l2)
        return {
            name: floor + 3 * U32 * np.abs(ref64[name]) + 4 * TINY32
            for name, floor in (("dq", dq), ("dk", dk), ("dv", dv))
        }

    def explain_scale(self, case: Case, output: str, factor: float) -> tuple[str, str] | None:
        scale = float(case.scalars["scale"])
        if math.isclose(factor, 1.0 / scale, rel_tol=1e-4):
            return (
                "scale-missing",
                f"= 1 / scale = sqrt(head_dim): {output} lacks the softmax scale",
            )
        if math.isclose(factor, scale, rel_tol=1e-4):
            return ("scale-twice", f"= scale: {output} has the softmax scale applied twice")
        return None

    def variants(self, case: Case) -> list[Variant]:
        seq = case.dims["seq"]
        causal = bool(case.scalars["causal"])
        scale = float(case.scalars["scale"])
        ref = _backward(case, causal)
        out = []
        if causal and seq > 1:
            for offset, text, cause in (
                (
                    -1,
                    "the causal mask j < i (the diagonal key left out)",
                    "a causal mask off by one: j < i where j <= i is meant",
                ),
                (
                    1,
                    "the causal mask j <= i + 1 (one future key let in)",
                    "a causal mask off by one: j <= i + 1 where j <= i is meant",
                ),
            ):
                out.append(
                    Variant(
                        f"causal{offset:+d}",
                        text,
                        f"{cause}; {GUIDE}#attention-bwd",
                        _backward(case, True, offset=offset),
                    )
                )
            out.append(
                Variant(
                    "causal-ignored",
                    "no mask although causal = 1",
                    f"the causal flag is ignored; {GUIDE}#attention-bwd",
                    _backward(case, False),
                )
            )
        elif seq > 1:
            out.append(
                Variant(
                    "causal-applied",
                    "a causal mask although causal = 0",
                    f"a causal mask applied unconditionally; {GUIDE}#attention-bwd",
                    _backward(case, True),
                )
            )
        d = case.dims["head_dim"]
        if d % 4:
            out.append(
                Variant(
                    "head-dim-tail",
                    f"the formulas over head_dim < {d - d % 4} only (the head_dim % 4 = {d % 4} tail dropped)",
                    f"a float4 loop over head_dim that drops the tail; {GUIDE}#tail",
                    _backward(case, causal, features=d - d % 4),
                )
            )
        out += [
            Variant(
                "dv-from-p",
                "dv = P dO (P where P^T belongs)",
                f"dv indexed by query where it needs key (P instead of P^T); {GUIDE}#attention-bwd",
                {"dv": _backward(case, causal, dv_from_p=True)["dv"]},
            ),
            Variant(
                "dk-dv-swapped",
                "the reference with dk and dv swapped",
                f"dk and dv written to each other's buffers; {GUIDE}#attention-bwd",
                {"dk": ref["dv"], "dv": ref["dk"]},
            ),
            Variant(
                "dk-unscaled",
                "dk without the softmax scale",
                f"dk omits the softmax scale; {GUIDE}#attention-bwd",
                {"dk": ref["dk"] / scale},
            ),
            Variant(
                "dq-unscaled",
                "dq without the softmax scale",
                f"dq omits the softmax scale; {GUIDE}#attention-bwd",
                {"dq": ref["dq"] / scale},
            ),
        ]
        return out


ATTENTION_BWD = AttentionBwd()
