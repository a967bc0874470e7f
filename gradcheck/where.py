"""Where the wrong elements are, in terms of the launch geometry and the op's inputs.

A kernel bug leaves a shape: every element at or past blockDim.x, only the last row, only masked rows,
a constant scale, a flipped sign. Naming the shape names the likely cause, which is the point.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .ops import Case, Op, Variant

# One character per cell of the heat map: share of wrong elements in the cell.
SHADES = " .:*#"


def _share_char(share: float) -> str:
    if share <= 0:
        return SHADES[0]
    if share >= 1:
        return SHADES[-1]
    return SHADES[1 + min(len(SHADES) - 3, int(share * (len(SHADES) - 2)))]


class Pattern(NamedTuple):
    """One thing true of the wrong elements: stable keys (what diagnose keys causes on) and text."""

    keys: tuple[str, ...]
    text: str


def texts(patterns: list[Pattern]) -> list[str]:
    return [p.text for p in patterns]


def keys(patterns: list[Pattern]) -> set[str]:
    return {k for p in patterns for k in p.keys}


def describe(
    bad: np.ndarray,
    kernel: np.ndarray,
    ref: np.ndarray,
    unwritten: np.ndarray,
    *,
    op: Op,
    case: Case,
    block: int,
    output: str = "",
    values: bool = True,
) -> list[Pattern]:
    """Patterns that hold for the wrong elements of ``output``, most telling first.

    Outputs are seen as 2-D: the last axis (the one threads usually stride over) across, every
    other axis folded into rows.
    """
    if not bad.any():
        return []
    out: list[Pattern] = []
    n_bad = int(np.count_nonzero(bad))
    b2 = as_rows(bad)
    cols = b2.shape[1]
    spec = op.output(output) if output else op.primary
    axis_name = spec.axes[-1] if spec.axes else "index"
    if unwritten.any():
        n_u = int(np.count_nonzero(unwritten))
        if n_u < n_bad:
            u2 = unwritten.reshape(b2.shape)
            sub = _axis_patterns(u2, cols, block, axis_name) if not unwritten.all() else []
            text = f"{n_u:,} of {n_bad:,} wrong elements were never written (still poison)"
            if sub:
                part = (
                    sub[0]
                    .text.replace("every element", "every one")
                    .replace("only elements", "those")
                )
                text += f": {part}"
            out.append(Pattern(("unwritten-part", *(sub[0].keys if sub else ())), text))
        else:
            out.append(
                Pattern(
                    ("unwritten",),
                    "the kernel never writes them (they still hold the poison value)",
                )
            )
    nonfinite = bad & ~np.isfinite(kernel) & ~unwritten
    if nonfinite.any():
        out.append(
            Pattern(
                ("non-finite",),
                f"{int(np.count_nonzero(nonfinite)):,} are NaN or inf where the reference is finite",
            )
        )
    if bad.all():
        out.insert(0, Pattern(("every",), "every element"))
    else:
        out[:0] = _axis_patterns(b2, cols, block, axis_name)
        out.extend(_row_patterns(b2))
        for label, where in case.labels.get(spec.name, {}).items():
            lab = np.asarray(where() if callable(where) else where).reshape(b2.shape)
            if lab.all():
                continue  # a label that covers everything says nothing
            if lab.any() and not (b2 & ~lab).any():
                whole = " (all of them)" if not (lab & ~b2).any() else ""
                out.append(Pattern((f"only:{label}",), f"only {label}{whole}"))
            elif lab.mean() >= 0.1 and not (b2 & lab).any() and (b2 & ~lab).any():
                out.append(Pattern((f"never:{label}",), f"never {label}"))
    if values:
        out.extend(value_patterns(bad, kernel, ref, unwritten, op, case, spec.name))
    return out


def as_rows(a: np.ndarray) -> np.ndarray:
    """``a`` as 2-D: the last axis across, the others folded into rows (1-D: one row)."""
    return a.reshape(-1, a.shape[-1]) if a.ndim >= 2 else a.reshape(1, -1)


# A kernel "matches" a wrong formula when it is within the noise bound plus this relative tolerance
# of it: the wrong formula computed in float32 rounds relative to its own values (which the bound,
# made for the right values, does not cover). 1e-4 is far above float32 rounding yet far below any
# real difference between two formulas.
VARIANT_RTOL = 1e-4
VARIANT_SHARE = 0.99  # share of elements that must match (a few cancelling elements may not)


def matching_variants(
    variants: list[Variant], output: str, kernel: np.ndarray, bound: np.ndarray
) -> list[Pattern]:
    """Wrong formulas the kernel's output reproduces (a named bug with that much evidence)."""
    out = []
    k = kernel.astype(np.float64)
    for v in variants:
        alt = v.outputs.get(output)
        if alt is None or alt.shape != kernel.shape or not kernel.size:
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            close = np.abs(k - alt) <= bound + VARIANT_RTOL * np.abs(alt)
        share = float(np.mean(close))
        if share >= VARIANT_SHARE:
            at = "every element" if share == 1.0 else f"{share:.1%} of the elements"
            out.append(Pattern((f"variant:{v.key}",), f"at {at}, it matches {v.text}"))
    return out


def _axis_patterns(b2: np.ndarray, cols: int, block: int, axis: str) -> list[Pattern]:
    col_bad: np.ndarray = np.asarray(b2.any(axis=0))
    idx = np.flatnonzero(col_bad)
    lo, hi = int(idx[0]), int(idx[-1])
    if lo > 0 and hi == cols - 1 and col_bad[lo:].all():
        rows_hit = b2.any(axis=1)
        full = b2[rows_hit][:, lo:].all()
        what = "every element" if full else "only elements"
        notes, found = [], ["index-from"]
        if lo == block:
            notes.append("= blockDim.x")
            found.append("geometry")
        elif lo % block == 0:
            notes.append(
                f"= {lo // block} x blockDim.x: the last partial pass of a block-stride loop"
            )
            found.append("block-stride")
        if cols % 4 and lo == cols - cols % 4:
            notes.append(f"the {axis} % 4 = {cols % 4} tail after the last full float4")
            found.append("tail")
        note = f" ({'; '.join(notes)})" if notes else ""
        return [Pattern(tuple(found), f"{what} with {axis} index >= {lo}{note}")]
    if hi < cols - 1 and lo == 0 and col_bad[: hi + 1].all():
        return [Pattern(("index-below",), f"only {axis} index < {hi + 1}")]
    if lo == hi:
        return [Pattern(("index-one",), f"only {axis} index {lo}")]
    return []


def _row_patterns(b2: np.ndarray) -> list[Pattern]:
    rows = b2.shape[0]
    row_bad = b2.any(axis=1)
    idx = np.flatnonzero(row_bad)
    if rows > 1 and len(idx) == 1:
        if idx[0] == rows - 1:
            return [Pattern(("last-row",), "only the last row")]
        return [Pattern(("one-row",), f"only row {int(idx[0])}")]
    if rows > 1 and len(idx) < rows:
        return [Pattern(("some-rows",), f"{len(idx)} of {rows} rows")]
    return []


def value_patterns(
    bad: np.ndarray,
    kernel: np.ndarray,
    ref: np.ndarray,
    unwritten: np.ndarray,
    op: Op,
    case: Case,
    output: str,
) -> list[Pattern]:
    """What the wrong values are: a flipped sign, zeros, a constant factor (and what it means)."""
    sel = bad & np.isfinite(kernel) & ~unwritten & (ref != 0)
    if np.count_nonzero(sel) < 2:
        return []
    q = kernel[sel].astype(np.float64) / ref[sel]
    c = float(np.median(q))
    if not np.all(np.abs(q - c) <= 1e-3 * max(abs(c), 1e-30)):
        if np.all(np.sign(kernel[sel]) == -np.sign(ref[sel])):
            return [Pattern(("sign",), "sign flipped (the magnitudes differ too)")]
        return []
    if abs(c + 1) <= 1e-3:
        return [Pattern(("sign",), "sign flipped: kernel = -reference")]
    if abs(c) <= 1e-6:
        return [Pattern(("zeros",), "written as zeros")]
    meaning = op.explain_scale(case, output, c)
    if meaning is None:
        return [Pattern(("scale",), f"scale off by a constant factor {c:.6g}")]
    key, why = meaning
    return [Pattern(("scale", key), f"scale off by a constant factor {c:.6g} ({why})")]


def heatmap(bad: np.ndarray, *, block: int, width: int = 64, height: int = 12) -> list[str]:
    """A small text map of where wrong elements fall over (row, thread axis)."""
    b2 = as_rows(bad)
    rows, cols = b2.shape
    h, w = min(height, rows), min(width, cols)
    r_edges = np.linspace(0, rows, h + 1).astype(int)
    c_edges = np.linspace(0, cols, w + 1).astype(int)
    lines = []
    for i in range(h):
        band = b2[r_edges[i] : r_edges[i + 1]]
        cells = "".join(
            _share_char(float(band[:, c_edges[j] : c_edges[j + 1]].mean())) for j in range(w)
        )
        lines.append(f"{r_edges[i]:>6} |{cells}|")
    axis = [" "] * w
    if block < cols:
        j = int(np.searchsorted(c_edges, block, side="right")) - 1
        axis[min(max(j, 0), w - 1)] = "^"
    lines.append(f"{'':>6}  0{''.join(axis)[1:]}{cols - 1}" if w > 1 else "")
    if block < cols:
        lines.append(f"{'':>6}  ^ = blockDim.x ({block}); shades {SHADES[1:]!r} = more wrong")
    else:
        lines.append(f"{'':>6}  shades {SHADES[1:]!r} = more wrong")
    return lines
