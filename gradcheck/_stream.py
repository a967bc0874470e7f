"""Compare a case too large to hold in float64 a block of rows at a time, on every core.

At rows 4096 x vocab 128256 a case has 525M elements: its float64 reference alone is 4 GiB, and
the noise bound, the float32 reference and the comparison's temporaries as much again each. Here
each block of rows gets its references, noise bound and comparison, and only the merged numbers
(and, where elements are wrong, a map of them) outlive it. The blocks run on a thread per core:
numpy and JAX release the interpreter lock for the work. Ops say whether their outputs can be cut
into rows (``Op.stream_rows``, ``Op.rows``). A "row" is what the op says: a row of logits for
loss-ce, a row of x for layernorm-bwd, a head (batch * heads flattened) for attention-bwd. An
output that sums over the rows (``Op.summed_outputs``: layernorm-bwd's dgamma and dbeta) gets
each block's share of its references and noise bound; the shares are added up in block order
and the kernel's output compared with the totals once, at the end.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from .compare import Comparison, compare_output, merge_rows
from .ops import Arrays, Case, Op

# Elements per block (Op.row_cost: output elements, or scores for attention): 2M elements make
# ~100 MB of float64 temporaries per thread, and blocks long enough that the per-call overhead of
# the references stays small. A row costing more than this is a block of its own.
BLOCK_ELEMENTS = 1 << 21
# Blocks handed to each thread ahead of the merge: one running, one queued behind it.
AHEAD = 2
_NOTHING = np.zeros(0, bool)


# Per summed output: a block's share of (float64 reference, float32 reference, noise bound).
Shares = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Block:
    """One block of rows with everything its comparison used (for where, variants and FD)."""

    case: Case  # the block as a case of its own (Op.rows)
    unit: str  # what its rows are called (Op.stream_unit)
    lo: int
    hi: int
    output: Arrays  # the kernel's outputs cut into rows, rows lo..hi-1 (no summed outputs)
    ref64: Arrays  # of every output (of a summed one: these rows' share)
    comparisons: dict[str, Comparison]  # the outputs cut into rows
    shares: Shares  # of the summed outputs: these rows' share

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
    summed = op.summed_outputs()
    cut = [o.name for o in op.outputs if o.name not in summed]
    out = {
        name: output[name].reshape(rows, -1)[lo:hi].reshape(sub.output_shapes[name]) for name in cut
    }
    comparisons = {
        name: compare_output(
            out[name], ref64[name], ref32[name], floor[name], factor=factor, mergeable=True
        )
        for name in cut
    }
    shares = {name: (ref64[name], ref32[name], floor[name]) for name in summed}
    return Block(sub, op.stream_unit, lo, hi, out, ref64, comparisons, shares)


def compare_streamed(
    op: Op,
    case: Case,
    output: Arrays,
    factor: float,
    *,
    tick: Callable[[], None] | None = None,
    workers: int | None = None,
) -> tuple[dict[str, Comparison], Block, Arrays]:
    """Every output of ``case`` compared, a block of rows at a time; the block holding the
    worst element of the outputs cut into rows (its arrays are what the where and FD checks look
    at); and the float64 references of the summed outputs, added up over the blocks."""
    rows = op.stream_rows(case)
    assert rows is not None, f"{op.id} does not compare a block of rows at a time"
    per_row = op.row_cost(case)
    todo = spans(rows, per_row)
    if workers is None:
        # A thread per core, while the blocks in flight hold no more than BLOCK_ELEMENTS a core:
        # a row larger than a block (an attention head at seq 2048 is 4M scores) is a block of
        # its own, and fewer of those run at once.
        cores = os.cpu_count() or 1
        biggest = max(hi - lo for lo, hi in todo) * per_row
        workers = max(1, min(cores, cores * BLOCK_ELEMENTS // biggest))

    def one(span: tuple[int, int]) -> tuple[dict[str, Comparison], Shares]:
        b = compare_block(op, case, output, span[0], span[1], factor)
        # Keep the numbers; the element maps only where an element is wrong.
        kept = {
            name: replace(
                c,
                noise=_NOTHING,
                bad=c.bad if c.n_bad else _NOTHING,
                unwritten=c.unwritten if c.n_unwritten else _NOTHING,
            )
            for name, c in b.comparisons.items()
        }
        return kept, b.shares

    parts: list[tuple[int, dict[str, Comparison]]] = []
    totals: dict[str, list[np.ndarray]] = {}
    # Blocks are handed to the pool a few at a time (AHEAD per thread), not all at once: a stop
    # then costs at most the blocks handed out, however the threads were scheduled, and the
    # results waiting to be merged stay few.
    waiting: deque[tuple[int, Future[tuple[dict[str, Comparison], Shares]]]] = deque()
    queue = iter(todo)
    pool = ThreadPoolExecutor(max_workers=workers)

    def hand_out() -> None:
        while len(waiting) < AHEAD * workers and (span := next(queue, None)) is not None:
            waiting.append((span[0], pool.submit(one, span)))

    try:
        hand_out()
        while waiting:
            lo, future = waiting.popleft()
            kept, shares = future.result()
            hand_out()
            parts.append((lo, kept))
            for name, share in shares.items():
                # each total in its share's dtype: the float32 reference adds up in float32
                for total, a in zip(
                    totals.setdefault(name, [np.zeros_like(a) for a in share]), share, strict=True
                ):
                    total += a
            if tick is not None:
                tick()
    finally:
        # On an error or Ctrl-C, the blocks not yet started are dropped: only those running
        # finish (a fraction of a second), not the whole problem.
        pool.shutdown(wait=True, cancel_futures=True)
    merged = {
        name: merge_rows([(lo, r[name]) for lo, r in parts], case.output_shapes[name], rows)
        for name in parts[0][1]
    }
    for name, (ref64, ref32, floor) in totals.items():
        merged[name] = compare_output(
            output[name], ref64, ref32, floor, factor=factor, mergeable=True
        )
    merged = {o.name: merged[o.name] for o in op.outputs}  # the op's order
    # The block with the worst element over the outputs cut into rows, recomputed with its arrays.
    k = max(range(len(parts)), key=lambda i: max(c.max_ratio for c in parts[i][1].values()))
    lo, hi = todo[k]
    worst = compare_block(op, case, output, lo, hi, factor)
    return merged, worst, {name: t[0] for name, t in totals.items()}
