"""Compare a case too large to hold in float64 a block of rows at a time, on every core.

At rows 4096 x vocab 128256 a case has 525M elements: its float64 reference alone is 4 GiB, and
the noise bound, the float32 reference and the comparison's temporaries as much again each. Here
each block of rows gets its references, noise bound and comparison, and only the merged numbers
(and, where elements are wrong, a map of them) outlive it. The blocks run on a thread per core:
numpy and JAX release the interpreter lock for the work. Ops say whether their outputs can be cut
into rows (``Op.stream_rows``, ``Op.rows``): an output that sums over rows cannot. A "row" is what
the op says: a row of logits for loss-ce, a head (batch * heads flattened) for attention-bwd.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from .compare import Comparison, compare_output, merge_rows
from .ops import Arrays, Case, Op

# Elements per block (Op.row_cost: output elements, or scores for attention): 2M elements make
# ~100 MB of float64 temporaries per thread, and blocks long enough that the per-call overhead of
# the references stays small. A row costing more than this is a block of its own.
BLOCK_ELEMENTS = 1 << 21
_NOTHING = np.zeros(0, bool)


@dataclass(frozen=True)
class Block:
    """One block of rows with everything its comparison used (for where, variants and FD)."""

    case: Case  # the block as a case of its own (Op.rows)
    unit: str  # what its rows are called (Op.stream_unit)
    lo: int
    hi: int
    output: Arrays  # the kernel's outputs, rows lo..hi-1
    ref64: Arrays
    comparisons: dict[str, Comparison]

    @property
    def rows_text(self) -> str:
        return f"{self.unit} {self.lo:,}..{self.hi - 1:,}"


def spans(rows: int, per_row: int) -> list[tuple[int, int]]:
    """The blocks of rows: (first, past the last)."""
    step = max(1, BLOCK_ELEMENTS // max(1, per_row))
    return [(lo, min(rows, lo + step)) for lo in range(0, rows, step)]


def block_count(op: Op, case: Case) -> int:
    rows = op.stream_rows(case)
    if rows is None:
        return 0
    return len(spans(rows, op.row_cost(case)))


def compare_block(op: Op, case: Case, output: Arrays, lo: int, hi: int, factor: float) -> Block:
    """References, noise bound and comparison of rows lo..hi-1 of ``case``."""
    sub = op.rows(case, lo, hi)
    ref64 = op.reference(sub, np.float64)
    ref32 = op.reference(sub, np.float32)
    floor = op.noise_floor(sub, ref64)
    rows = op.stream_rows(case)
    assert rows is not None, f"{op.id} does not compare a block of rows at a time"
    out = {
        o.name: output[o.name].reshape(rows, -1)[lo:hi].reshape(sub.output_shapes[o.name])
        for o in op.outputs
    }
    comparisons = {
        o.name: compare_output(
            out[o.name], ref64[o.name], ref32[o.name], floor[o.name], factor=factor, mergeable=True
        )
        for o in op.outputs
    }
    return Block(sub, op.stream_unit, lo, hi, out, ref64, comparisons)


def compare_streamed(
    op: Op,
    case: Case,
    output: Arrays,
    factor: float,
    *,
    tick: Callable[[], None] | None = None,
    workers: int | None = None,
) -> tuple[dict[str, Comparison], Block]:
    """Every output of ``case`` compared, a block of rows at a time; and the block holding the
    worst element (its arrays are what the where and FD checks look at)."""
    rows = op.stream_rows(case)
    assert rows is not None, f"{op.id} does not compare a block of rows at a time"
    todo = spans(rows, op.row_cost(case))

    def one(span: tuple[int, int]) -> dict[str, Comparison]:
        b = compare_block(op, case, output, span[0], span[1], factor)
        # Keep the numbers; the element maps only where an element is wrong.
        return {
            name: replace(
                c,
                noise=_NOTHING,
                bad=c.bad if c.n_bad else _NOTHING,
                unwritten=c.unwritten if c.n_unwritten else _NOTHING,
            )
            for name, c in b.comparisons.items()
        }

    parts: list[tuple[int, dict[str, Comparison]]] = []
    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
    try:
        for (lo, _), result in zip(todo, pool.map(one, todo), strict=True):
            parts.append((lo, result))
            if tick is not None:
                tick()
    finally:
        # On an error or Ctrl-C, the blocks not yet started are dropped: only those running
        # finish (a fraction of a second), not the whole problem.
        pool.shutdown(wait=True, cancel_futures=True)
    merged = {
        o.name: merge_rows([(lo, r[o.name]) for lo, r in parts], case.output_shapes[o.name], rows)
        for o in op.outputs
    }
    # The block with the worst element over all outputs, recomputed with its arrays.
    k = max(range(len(parts)), key=lambda i: max(c.max_ratio for c in parts[i][1].values()))
    lo, hi = todo[k]
    return merged, compare_block(op, case, output, lo, hi, factor)
