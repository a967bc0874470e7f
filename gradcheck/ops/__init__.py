"""The ops gradcheck knows: one spec each, read by the CLI, the checks and the reports."""

from __future__ import annotations

from .._errors import UsageError, suggest
from ._spec import SAMPLE_ELEMENTS as SAMPLE_ELEMENTS
from ._spec import Arrays as Arrays
from ._spec import BlockSample as BlockSample
from ._spec import Case as Case
from ._spec import Dim as Dim
from ._spec import KernelParam as KernelParam
from ._spec import Op as Op
from ._spec import Option as Option
from ._spec import Output as Output
from ._spec import ShippedKernel as ShippedKernel
from ._spec import Variant as Variant
from ._spec import sample_count as sample_count
from ._spec import sample_note as sample_note
from ._spec import sample_of as sample_of
from .attention_bwd import ATTENTION_BWD
from .layernorm_bwd import LAYERNORM_BWD
from .loss_ce import LOSS_CE

OPS: dict[str, Op] = {op.id: op for op in (LOSS_CE, LAYERNORM_BWD, ATTENTION_BWD)}


def get_op(name: str) -> Op:
    """The op with id ``name`` (kebab-case, as on the command line)."""
    op = OPS.get(name)
    if op is None:
        close = suggest(name, OPS)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UsageError(f"unknown op {name!r}.{hint} Ops: {', '.join(OPS)} (gradcheck list).")
    return op


__all__ = [
    "OPS",
    "SAMPLE_ELEMENTS",
    "Arrays",
    "BlockSample",
    "Case",
    "Dim",
    "KernelParam",
    "Op",
    "Option",
    "Output",
    "ShippedKernel",
    "Variant",
    "get_op",
    "sample_count",
    "sample_note",
    "sample_of",
]
