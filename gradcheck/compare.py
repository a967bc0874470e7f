"""Kernel output against the float64 reference, with a noise bound derived from precision.

For every element the op gives a rounding floor: the error a correct float32 implementation may
make. The same-precision reference (JAX float32) is measured in that unit; where it does worse than
the floor, its own error sets the noise instead (per row). The kernel passes an element when its
error is at most ``factor`` times that noise. Every comparison also says how small an error it could
have seen (its power), so a check with a tolerance above the signal is never called a pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._launch import POISON_BITS

# Kernel error may be this many times the noise (FlashAttention's factor for backward passes).
DEFAULT_FACTOR = 3.0
# A check has power when it would see a 1% error on elements that carry at least half of the
# gradient's magnitude (sum of |reference|). Elements that float32 itself cannot resolve to 1%
# (p - 1 with p near 1, say) lower the share without making the check useless.
POWER_ERROR = 0.01
POWER_SHARE = 0.5


@dataclass(frozen=True)
class Comparison:
    """One output compared element by element; ``bad`` marks elements beyond the bound."""

    n: int
    n_bad: int
    n_unwritten: int
    n_nonfinite: int
    max_ratio: float  # max over elements of |kernel - ref64| / noise
    worst: tuple[int, ...]
    worst_kernel: float
    worst_ref: float
    worst_bound: float  # factor * noise at the worst element
    ref32_ratio: float  # the float32 reference's own max error, in units of the rounding floor
    factor: float
    detectable_rel: float  # median over nonzero reference elements of bound / |ref|
    power_share: float  # share of sum |ref| on elements where a POWER_ERROR error would be caught
    n_exact: int  # elements whose reference is exactly zero (checked against the tiny floor)
    bad: np.ndarray
    unwritten: np.ndarray
    noise: np.ndarray  # per element, in the output's units; the bound is factor * noise
    # What merging comparisons of blocks of rows needs (merge_rows): sum of |ref| on elements
    # where a POWER_ERROR error is caught, and in all; counts of bound / |ref| per REL_BINS bin.
    worst_flat: int = 0  # the worst element's index in the flattened output
    power_caught: float = 0.0
    power_total: float = 0.0
    rel_hist: np.ndarray | None = None

    @property
    def has_power(self) -> bool:
        return self.power_share >= POWER_SHARE or (self.n_exact == self.n and self.n > 0)


def poison_mask(a: np.ndarray) -> np.ndarray:
    """Elements still holding the poison pattern: never written by the kernel."""
    bits = POISON_BITS.get(a.dtype.name)
    if bits is None:
        return np.zeros(a.shape, bool)
    out: np.ndarray = a.view(np.dtype(f"u{a.dtype.itemsize}")) == bits
    return out


def noise(floor: np.ndarray, ref64: np.ndarray, ref32: np.ndarray) -> tuple[np.ndarray, float]:
    """(noise per element, the float32 reference's max ratio to the floor).

    The lift is per row (every axis but the last): one row's hard numbers do not loosen another's.
    """
    r32 = np.abs(ref32.astype(np.float64) - ref64) / floor
    ratio = float(np.max(r32)) if r32.size else 0.0
    if floor.ndim >= 2 and r32.size:
        per_row = np.max(r32.reshape(-1, r32.shape[-1]), axis=1)
        lift = np.maximum(1.0, per_row).reshape((*floor.shape[:-1], 1))
    else:
        lift = np.maximum(1.0, ratio)
    return floor * lift, ratio


def _power_sums(rel_bound: np.ndarray, magnitude: np.ndarray) -> tuple[float, float]:
    total = float(np.sum(magnitude))
    return float(np.sum(magnitude[rel_bound < POWER_ERROR])), total


def _share(caught: float, total: float) -> float:
    return caught / total if total else 1.0


# bound / |ref| is kept as a histogram when comparisons are merged: REL_PER_DECADE bins per decade
# from 10^REL_LOW, so the merged median is within 1.2% of the exact one.
REL_LOW, REL_PER_DECADE, REL_BINS = -24, 100, 3000


def _rel_hist(rel_bound: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = (np.log10(rel_bound) - REL_LOW) * REL_PER_DECADE
    idx = np.clip(np.nan_to_num(pos, nan=REL_BINS - 1, posinf=REL_BINS - 1), 0, REL_BINS - 1)
    return np.bincount(idx.astype(np.int64), minlength=REL_BINS)


def _hist_median(hist: np.ndarray) -> float:
    total = int(hist.sum())
    if not total:
        return 0.0
    k = int(np.searchsorted(np.cumsum(hist), (total + 1) / 2))
    return float(10.0 ** (REL_LOW + (k + 0.5) / REL_PER_DECADE))


def compare_output(
    kernel: np.ndarray,
    ref64: np.ndarray,
    ref32: np.ndarray,
    floor: np.ndarray,
    *,
    factor: float = DEFAULT_FACTOR,
    mergeable: bool = False,
) -> Comparison:
    """Compare ``kernel`` (float32) with ``ref64``; see the module docstring for the bound.

    ``mergeable``: also keep what ``merge_rows`` needs (a comparison of a block of rows)."""
    unwritten = poison_mask(kernel)
    noise_, ref32_ratio = noise(floor, ref64, ref32)
    k = kernel.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(k - ref64)
    nonfinite = ~np.isfinite(k)
    err = np.where(nonfinite, np.inf, err)
    ratio = err / noise_
    bad = ratio > factor
    n = int(kernel.size)
    flat = int(np.argmax(ratio)) if n else 0
    worst = tuple(int(i) for i in np.unravel_index(flat, ratio.shape)) if n else ()
    nz = ref64 != 0
    magnitude = np.abs(ref64[nz])
    rel_bound = (factor * noise_[nz]) / magnitude
    caught, total = _power_sums(rel_bound, magnitude)
    return Comparison(
        n=n,
        n_bad=int(np.count_nonzero(bad)),
        n_unwritten=int(np.count_nonzero(unwritten)),
        n_nonfinite=int(np.count_nonzero(nonfinite & ~unwritten)),
        max_ratio=float(ratio[worst]) if n else 0.0,
        worst=worst,
        worst_kernel=float(kernel[worst]) if n else 0.0,
        worst_ref=float(ref64[worst]) if n else 0.0,
        worst_bound=float(factor * noise_[worst]) if n else 0.0,
        ref32_ratio=ref32_ratio,
        factor=factor,
        detectable_rel=float(np.median(rel_bound)) if rel_bound.size else 0.0,
        power_share=_share(caught, total),
        n_exact=int(np.count_nonzero(~nz)),
        bad=bad,
        unwritten=unwritten,
        noise=noise_,
        worst_flat=flat,
        power_caught=caught,
        power_total=total,
        rel_hist=_rel_hist(rel_bound) if mergeable else None,
    )


def merge_rows(
    parts: list[tuple[int, Comparison]], shape: tuple[int, ...], rows: int | None = None
) -> Comparison:
    """One comparison of an output of ``shape`` from comparisons of blocks of its rows, each given
    with its first row and made with ``mergeable=True``. The output is ``rows`` rows of equal size
    (default: its first axis); a block's arrays may have any shape of its rows' elements.

    ``bad`` and ``unwritten`` are whole-output arrays only where some element is (otherwise a
    read-only view of False, which costs no memory); ``noise`` is not kept (NaN view): the
    noise of a block is recomputed where it is needed. The median of bound / |ref| comes from
    the blocks' histograms (within 1.2%)."""
    assert parts, "merge_rows needs at least one block"
    n_bad = sum(c.n_bad for _, c in parts)
    n_unwritten = sum(c.n_unwritten for _, c in parts)
    bad: np.ndarray = np.broadcast_to(np.False_, shape)
    unwritten: np.ndarray = np.broadcast_to(np.False_, shape)
    rows = shape[0] if rows is None else rows
    per_row = int(np.prod(shape)) // max(1, rows)
    if n_bad:
        bad = np.zeros(shape, bool)
    if n_unwritten:
        unwritten = np.zeros(shape, bool)
    for lo, c in parts:
        if c.n_bad:
            bad.reshape(rows, per_row)[lo : lo + c.n // per_row] = c.bad.reshape(-1, per_row)
        if c.n_unwritten:
            u = c.unwritten.reshape(-1, per_row)
            unwritten.reshape(rows, per_row)[lo : lo + c.n // per_row] = u
    lo, worst = max(parts, key=lambda p: p[1].max_ratio)
    at = np.unravel_index(lo * per_row + worst.worst_flat, shape) if worst.n else ()
    hist = np.sum([c.rel_hist for _, c in parts if c.rel_hist is not None], axis=0)
    caught = sum(c.power_caught for _, c in parts)
    total = sum(c.power_total for _, c in parts)
    return Comparison(
        n=sum(c.n for _, c in parts),
        n_bad=n_bad,
        n_unwritten=n_unwritten,
        n_nonfinite=sum(c.n_nonfinite for _, c in parts),
        max_ratio=worst.max_ratio,
        worst=tuple(int(i) for i in at),
        worst_flat=lo * per_row + worst.worst_flat,
        worst_kernel=worst.worst_kernel,
        worst_ref=worst.worst_ref,
        worst_bound=worst.worst_bound,
        ref32_ratio=max(c.ref32_ratio for _, c in parts),
        factor=worst.factor,
        detectable_rel=_hist_median(hist),
        power_share=_share(caught, total),
        n_exact=sum(c.n_exact for _, c in parts),
        bad=bad,
        unwritten=unwritten,
        noise=np.broadcast_to(np.nan, shape),
        power_caught=caught,
        power_total=total,
        rel_hist=hist,
    )
