"""From evidence to verdict: each check's verdict, the likely cause, and the overall verdict."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .results import UNNAMED_CAUSE, Check, Verdict

GUIDE = "DIAGNOSTIC_GUIDE.md"

# Likely causes, keyed by the evidence that points at them: fault kinds, the labels of the
# bitwise checks, and the keys of where.Pattern. The first key present wins.
CAUSES: tuple[tuple[str, str], ...] = (
    (
        "data-race",
        f"a read-modify-write from several threads or blocks without atomics; {GUIDE}#data-race",
    ),
    ("out-of-bounds", f"an index not checked against its bound; {GUIDE}#out-of-bounds"),
    (
        "schedule-dependent",
        f"a missing __syncthreads() or a race on shared memory; {GUIDE}#schedule-dependent",
    ),
    (
        "alignment-dependent",
        f"vectorised (float4) access taken only where a pointer is 16-byte aligned; {GUIDE}#alignment",
    ),
    (
        "barrier-divergence",
        f"__syncthreads() not reached by every thread of the block; {GUIDE}#barrier-divergence",
    ),
    ("timeout", f"a barrier nobody reaches or an endless loop; {GUIDE}#timeout"),
    ("geometry", f"one thread per {'{axis}'} entry; use a block-stride loop; {GUIDE}#geometry"),
    ("block-stride", f"the block-stride loop stops a pass early; {GUIDE}#geometry"),
    ("tail", f"a vectorised (float4) loop that drops the tail; {GUIDE}#tail"),
    ("sign", f"a flipped sign; {GUIDE}#sign"),
    ("scale", f"a wrong normalisation constant; {GUIDE}#scale"),
    ("non-finite", f"an overflow or a division by zero; {GUIDE}#non-finite"),
    ("unwritten", f"elements the kernel never writes; {GUIDE}#unwritten"),
    ("last-row", f"a row loop that stops one early; {GUIDE}#geometry"),
)


def likely_cause(
    evidence: Iterable[str], axis: str, op_causes: Sequence[tuple[str, str]] = ()
) -> str:
    """The cause of the first key among ``evidence`` (keys, not prose): a variant's own cause
    (key ``variant:...``, given in ``op_causes``) first, then the op's causes, then the shared ones."""
    present = set(evidence)
    for key, cause in (*op_causes, *CAUSES):
        if key in present:
            return cause.replace("{axis}", axis)
    return UNNAMED_CAUSE


def overall(checks: Sequence[Check]) -> Verdict:
    """kernel-bug beats inconclusive beats fd-noise beats pass."""
    verdicts = {c.verdict for c in checks}
    order: tuple[Verdict, ...] = ("kernel-bug", "inconclusive", "fd-noise")
    for v in order:
        if v in verdicts:
            return v
    return "pass"
