"""Finite differences: on the float64 reference to check the checker, and the float32 kind people
write by hand, with each of its disagreements explained by the FD error model.

Central difference D(h) = (f(x + h u) - f(x - h u)) / 2h has truncation error ~ h^2 |f'''| / 6 and
rounding error ~ eps |f| / h. In float64, Richardson extrapolation over h, h/2, h/4, ... removes the
truncation terms and the last two extrapolations give the error bar. The float32 check is taken
apart exactly: evaluating its loss in float64 at the same float32 points separates rounding error,
the step the float32 perturbation really took, and truncation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .ops import Arrays, Case, Op

EPS64 = float(np.finfo(np.float64).eps)
U32 = 2.0**-24
CHUNK_ELEMENTS = 1 << 24  # points are evaluated in batches of at most this many elements
DIRECTION_LEVELS = 4  # steps h0, h0/2, h0/4, h0/8
DIRECTION_H0 = 1e-2
AGREE_BARS = 3.0  # FD and autodiff agree when within this many error bars
FD32_POWER_ERROR = 0.2  # the field notes' example: can the check see a 20% error?


def _loss_at(
    op: Op,
    case: Case,
    n: int,
    point: Callable[[int], Arrays],
    dtype: type[np.floating[Any]],
) -> np.ndarray:
    """The loss at ``point(0) .. point(n - 1)``, built and evaluated a fixed-size batch at a time
    (JAX compiles one batch shape; memory holds one batch, not every point)."""
    size = sum(a.size for a in point(0).values())
    per = max(1, min(16, CHUNK_ELEMENTS // max(1, size)))
    out = np.empty(n, np.float64)
    for i in range(0, n, per):
        idx = [min(j, n - 1) for j in range(i, i + per)]  # pad the last batch with the last point
        points = [point(j) for j in idx]
        batch = {name: np.stack([p[name] for p in points]) for name in points[0]}
        m = min(per, n - i)
        out[i : i + m] = op.loss_values(case, batch, dtype)[:m]
    return out


@dataclass(frozen=True)
class DirectionalFD:
    """FD on the float64 reference along one random unit direction u, against <grad, u>."""

    fd: float
    error_bar: float
    autodiff: float  # <reference gradient, u>
    kernel: float  # <kernel gradient, u>
    steps: tuple[float, ...]

    @property
    def agrees(self) -> bool:
        return abs(self.fd - self.autodiff) <= AGREE_BARS * self.error_bar


@dataclass(frozen=True)
class Difference:
    """The finite difference along u alone: it needs no gradient (so it can be computed early)."""

    fd: float
    error_bar: float
    u: Arrays  # the unit direction, per input
    steps: tuple[float, ...]


def directional(
    op: Op,
    case: Case,
    ref64: Arrays,
    kernel: Arrays,
    seed: int,
    diff: Difference | None = None,
    outputs: Sequence[str] | None = None,
) -> DirectionalFD:
    """Richardson-extrapolated central difference of the float64 loss along a random direction
    in every input the op differentiates (one unit vector over all of them together), against
    the reference's and the kernel's gradients along it. ``diff``: ``difference(op, case, seed)``
    computed beforehand. ``outputs``: only the inputs of these outputs move (default: all)."""
    d = difference(op, case, seed, outputs) if diff is None else diff
    u = d.u
    moved = [o for o in op.outputs if outputs is None or o.name in outputs]
    autodiff = sum(float(np.sum(ref64[o.name] * u[o.wrt])) for o in moved)
    k_dot = 0.0
    for o in moved:
        k64 = kernel[o.name].astype(np.float64)
        k_dot += float(np.sum(np.where(np.isfinite(k64), k64, np.nan) * u[o.wrt]))
    return DirectionalFD(
        fd=d.fd, error_bar=d.error_bar, autodiff=autodiff, kernel=k_dot, steps=d.steps
    )


def difference(op: Op, case: Case, seed: int, outputs: Sequence[str] | None = None) -> Difference:
    """The finite-difference half of ``directional``."""
    rng = np.random.default_rng(seed)
    x = {o.wrt: case.arrays[o.wrt].astype(np.float64) for o in op.outputs}
    moving = {o.wrt for o in op.outputs if outputs is None or o.name in outputs}
    u = {
        name: rng.standard_normal(a.shape) if name in moving else np.zeros(a.shape)
        for name, a in x.items()
    }
    norm = float(np.sqrt(sum(float(np.sum(d * d)) for d in u.values())))
    u = {name: d / norm for name, d in u.items()}
    steps = tuple(DIRECTION_H0 / 2**k for k in range(DIRECTION_LEVELS))
    signed = [s * h for h in steps for s in (1.0, -1.0)]
    values = _loss_at(
        op, case, len(signed), lambda j: {n: x[n] + signed[j] * u[n] for n in x}, np.float64
    )
    d = [(values[2 * k] - values[2 * k + 1]) / (2 * h) for k, h in enumerate(steps)]
    table = [d]
    for j in range(1, len(steps)):
        prev = table[-1]
        table.append([prev[k] + (prev[k] - prev[k - 1]) / (4**j - 1) for k in range(1, len(prev))])
    best = table[-1][0]
    bar = max(abs(best - table[-2][-1]), abs(best - table[-2][-2]) if len(table[-2]) > 1 else 0.0)
    # Rounding of the float64 loss itself: a sum over every element, so its error grows like
    # sqrt(n) eps times the loss (not eps |loss|: the terms can be much larger than their sum).
    n = sum(a.size for a in x.values())
    bar += 4 * EPS64 * math.sqrt(n) * float(np.max(np.abs(values))) / steps[-1]
    return Difference(fd=float(best), error_bar=float(bar), u=u, steps=steps)


@dataclass(frozen=True)
class NaiveFD32:
    """The hand-written float32 central-difference check, element by element, taken apart."""

    eps: float
    rtol: float
    atol: float
    index: np.ndarray  # flat indices of the sampled elements
    fd: np.ndarray  # what the float32 check computed
    kernel: np.ndarray
    ref64: np.ndarray
    rounding: np.ndarray  # FD error from float32 rounding of the loss
    step: np.ndarray  # FD error from dividing by 2*eps when float32 moved x by another amount
    truncation: np.ndarray  # FD error of the exact difference quotient
    failed: np.ndarray  # |fd - kernel| > atol + rtol * |kernel|
    kernel_ok: np.ndarray  # the kernel is within its noise bound at the element
    loss: float
    predicted_rounding: float  # the model: eps32 * |loss| / eps

    @property
    def n(self) -> int:
        return int(self.index.size)

    @property
    def n_failed(self) -> int:
        return int(np.count_nonzero(self.failed))

    @property
    def n_noise(self) -> int:
        """Failures the FD error explains: the kernel is right there, the FD is not."""
        return int(np.count_nonzero(self.failed & self.kernel_ok))

    @property
    def power_share(self) -> float:
        """Share of sampled elements where a 20% kernel error would fail this check."""
        g = np.abs(self.ref64)
        fd_err = np.abs(self.fd - self.ref64)
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = (self.atol + self.rtol * g + fd_err) / g
        return float(np.mean(np.where(g > 0, rho < FD32_POWER_ERROR, False))) if self.n else 0.0


def naive_fd32(
    op: Op,
    case: Case,
    ref64: np.ndarray,
    kernel: np.ndarray,
    kernel_bad: np.ndarray,
    *,
    eps: float,
    rtol: float,
    atol: float,
    samples: int,
    seed: int,
) -> NaiveFD32:
    """Run the float32 check on ``samples`` random elements of the op's first output and explain
    every disagreement. ``ref64``, ``kernel`` and ``kernel_bad`` are that output's arrays."""
    primary = op.primary
    x = case.arrays[primary.wrt]
    others = {o.wrt: case.arrays[o.wrt] for o in op.outputs if o.wrt != primary.wrt}
    n = min(samples, x.size)
    index = np.sort(np.random.default_rng(seed + 1).choice(x.size, n, replace=False))
    shifted = [
        (np.float32(x.flat[i] + np.float32(eps)), np.float32(x.flat[i] - np.float32(eps)))
        for i in index
    ]

    def point(j: int) -> Arrays:
        p = x.copy()
        p.flat[index[j // 2]] = shifted[j // 2][j % 2]
        return {primary.wrt: p, **others}

    l32 = _loss_at(op, case, 2 * n, point, np.float32)
    l64 = _loss_at(op, case, 2 * n, point, np.float64)
    plus, minus = slice(0, None, 2), slice(1, None, 2)
    fd = ((l32[plus] - l32[minus]) / (2 * eps)).astype(np.float64)
    exact = (l64[plus] - l64[minus]) / (2 * eps)
    moved = np.array([float(a) - float(b) for a, b in shifted])
    quotient = (l64[plus] - l64[minus]) / moved
    g = ref64.flat[index]
    k = kernel.flat[index].astype(np.float64)
    with np.errstate(invalid="ignore"):
        failed = ~(np.abs(fd - k) <= atol + rtol * np.abs(k))
    loss = float(
        _loss_at(op, case, 1, lambda _j: {primary.wrt: x, **others}, np.float64)[0]
    )  # the batch shape already compiled
    return NaiveFD32(
        eps=eps,
        rtol=rtol,
        atol=atol,
        index=index,
        fd=fd,
        kernel=k,
        ref64=g,
        rounding=fd - exact,
        step=exact - quotient,
        truncation=quotient - g,
        failed=failed,
        kernel_ok=~kernel_bad.flat[index],
        loss=loss,
        predicted_rounding=U32 * abs(loss) / eps,
    )
