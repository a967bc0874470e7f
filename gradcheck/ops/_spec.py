"""What an op is: the one table every front end reads (CLI flags, checks, reports, docs).

An op names its sizes (``Dim``), its options (``Option``: eps, causal, ...), its canonical kernel
signature (``KernelParam``), the gradients the kernel computes (``Output``: each one the gradient of
the op's scalar loss with respect to one input), its input suite (``Case``), and its references.
The core (runner, compare, where, fd, report) works on any op through this interface only.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._errors import UsageError

Expect = Literal["pass", "kernel-bug"]
Arrays = dict[str, np.ndarray]
Label = np.ndarray | Callable[[], np.ndarray]


@dataclass(frozen=True)
class Dim:
    """A size the user picks on the command line (``--vocab``), with its default."""

    name: str
    default: int
    help: str
    maximum: int = 1 << 31


@dataclass(frozen=True)
class Option:
    """A setting of the op that is not a size: a float (``--eps``) or a flag (``--causal``)."""

    name: str
    kind: Literal["float", "flag"]
    default: float | bool
    help: str


@dataclass(frozen=True)
class KernelParam:
    """One parameter of the op's canonical kernel signature."""

    name: str
    kind: Literal["in", "out", "scalar"]
    dtype: str  # numpy dtype name: float32, int32


@dataclass(frozen=True)
class Output:
    """A gradient the kernel writes: d loss / d ``wrt``, in the kernel parameter ``name``.

    ``init`` is what the buffer holds before the launch: NaN poison (every element must be written)
    or zeros (kernels accumulate into it, usually with atomicAdd).
    """

    name: str
    wrt: str
    axes: tuple[str, ...]  # names of its axes; the last one is the axis "where" talks about
    init: Literal["poison", "zero"] = "poison"


@dataclass(frozen=True)
class ShippedKernel:
    """A kernel that ships in kernels_cuda/: the correct ones and the catalogue of known bugs."""

    name: str
    file: str  # relative to the kernels_cuda package
    function: str
    expect: Expect
    description: str

    def path(self) -> Path:
        return Path(str(resources.files("gradcheck.kernels_cuda").joinpath(self.file)))


# Above this many elements, an op's extra input distributions (masked rows, large values, edge
# targets ...) run on a sample of rows (heads for attention) at the full width, and only the plain
# case runs the whole problem. Those distributions test per-row arithmetic, which every row (one
# block each) runs with the same code; what depends on the problem's size (the grid, indexing,
# the number of rows) the plain case covers. At 2^22 elements a case takes a second or two here.
SAMPLE_ELEMENTS = 1 << 22


def sample_count(total: int, per_item: int, minimum: int = 8) -> int:
    """How many of ``total`` rows (``per_item`` elements each) the extra distributions use."""
    if total * per_item <= SAMPLE_ELEMENTS:
        return total
    return min(total, max(minimum, SAMPLE_ELEMENTS // per_item))


def sample_note(used: int, total: int, what: str, width: str) -> str:
    """The case description's note when it runs on a sample."""
    if used == total:
        return ""
    return f" ({used:,} of {total:,} {what} at the full {width}; plain runs them all)"


_SAMPLE_NOTE = re.compile(r" \((\S+ of \S+ \w+ at the full [^;]+); plain runs them all\)")


def sample_of(description: str) -> str | None:
    """What a case description's sample_note says ("32 of 4,096 rows at the full vocab")."""
    m = _SAMPLE_NOTE.search(description)
    return m.group(1) if m else None


def spread_rows(total: int, n: int) -> np.ndarray:
    """``n`` of ``total`` rows, ascending: the first and the last quarter of ``n`` at both ends
    (where the bounds, masks and tails are) and the rest spread evenly between."""
    if n >= total:
        return np.arange(total)
    edge = n // 4
    between = total - 2 * edge
    middle = edge + (np.arange(n - 2 * edge) * between) // (n - 2 * edge)
    return np.concatenate([np.arange(edge), middle, np.arange(total - edge, total)])


@dataclass(frozen=True)
class BlockSample:
    """The blocks of a case's launch that its repeats (the other thread orders, the other buffer
    alignment, the race check) run on when the case is too large to repeat whole: the case runs
    once on the whole grid, and is compared with its reference there."""

    blocks: np.ndarray  # linear block indices (x fastest), ascending
    text: str  # what they are: "512 of 8,192 query rows (the first 128, ...)"
    unit: str  # what one block is: "query row"


@dataclass(frozen=True)
class Variant:
    """A named wrong formula (a bug class): when a kernel's output matches it, "where" says so.

    ``outputs`` holds the float64 result of the wrong formula for the outputs it changes.
    """

    key: str
    text: str  # "matches <text>"
    cause: str  # the likely cause printed when it matches
    outputs: Arrays


@dataclass(frozen=True)
class Case:
    """One input of an op's suite: its own sizes, arrays and scalars, and why it is in the suite."""

    name: str
    description: str
    dims: dict[str, int]
    arrays: Arrays
    scalars: dict[str, float | int]
    output_shapes: dict[str, tuple[int, ...]]
    # Per output, named subsets of its elements that "where" can point at (e.g. masked rows): a
    # boolean array of the output's shape, or a function making one (built only when needed).
    labels: dict[str, dict[str, Label]] = field(default_factory=dict)
    # The whole problem at a size where the other cases run on a sample (SAMPLE_ELEMENTS): it runs
    # once, on every core; the repeats (thread orders, alignment, the race check) run on the
    # sampled cases.
    run_once: bool = False

    def kernel_args(self, params: tuple[KernelParam, ...]) -> list[Any]:
        """Values in signature order; None in the places of the outputs."""
        out: list[Any] = []
        for p in params:
            if p.kind == "scalar":
                out.append(np.dtype(p.dtype).type(self.scalars[p.name]))
            else:
                out.append(self.arrays.get(p.name))
        return out


class Op(ABC):
    """An operation whose gradient kernels gradcheck verifies."""

    id: str
    summary: str
    dims: tuple[Dim, ...]
    options: tuple[Option, ...] = ()
    params: tuple[KernelParam, ...]
    outputs: tuple[Output, ...]
    kernels: tuple[ShippedKernel, ...]
    default_kernel: str
    default_block: int = 256
    # Cases the hand-written float32 FD check (--fd32) replays; it checks the first output.
    fd32_cases: tuple[str, ...] = ("plain",)
    # Likely causes keyed on this op's own "where" keys, looked up before the shared ones.
    causes: tuple[tuple[str, str], ...] = ()

    def signature(self, name: str = "k") -> str:
        parts = []
        for p in self.params:
            c = {"float32": "float", "int32": "int"}[p.dtype]
            parts.append(
                f"{'const ' if p.kind == 'in' else ''}{c}{'*' if p.kind != 'scalar' else ''} {p.name}"
            )
        return f'extern "C" __global__ void {name}({", ".join(parts)})'

    def kernel(self, name: str) -> ShippedKernel | None:
        return next((k for k in self.kernels if k.name == name), None)

    def output(self, name: str) -> Output:
        return next(o for o in self.outputs if o.name == name)

    @property
    def primary(self) -> Output:
        """The first output: the one --fd32 replays."""
        return self.outputs[0]

    def launch_note(self) -> str:
        """How the canonical launch looks, for `gradcheck list` and the docs."""
        return "grid = (rows, 1, 1), block = (--block, 1, 1)"

    @abstractmethod
    def validate(self, dims: dict[str, int], block: int) -> None:
        """Raise UsageError for sizes the op cannot take."""

    # What a check's memory grows with, and how many bytes of it one unit costs, measured as the
    # slope of the peak RSS of `gradcheck run` between two sizes on the cpu backend (ops override
    # with their figures, rounded up: the refusal errs on the side of the user's process). Two
    # parts: the largest case held whole (its references' float64 temporaries: bytes_per_unit
    # for each of its held_whole units), and the whole problem's own arrays, which the plain
    # case keeps while it is compared a block at a time (bytes_per_streamed_unit for every unit).
    work_unit: str = "elements"
    bytes_per_unit: int = 128
    bytes_per_streamed_unit: int = 0
    smaller: str = "Use smaller sizes."  # the advice when a check is too large for this machine

    def held_whole(self, dims: dict[str, int]) -> int:
        """Work units of the largest case whose references are computed whole (default: all)."""
        return self.work_units(dims)

    def memory_bytes(self, dims: dict[str, int]) -> int:
        """Bytes a check at these sizes needs above the process at rest (the refusal's estimate)."""
        return self.bytes_per_unit * self.held_whole(dims) + (
            self.bytes_per_streamed_unit * self.work_units(dims)
        )

    def work_units(self, dims: dict[str, int]) -> int:
        """How many work units a check at these sizes has (see bytes_per_unit)."""
        n = 1
        for d in self.dims:
            n *= dims[d.name]
        return n

    def limit_elements(self, dims: dict[str, int], names: tuple[str, str], limit: int) -> None:
        """Refuse ``names[0] * names[1]`` above ``limit`` elements, saying which size to lower."""
        a, b = names
        n = dims[a] * dims[b]
        if n > limit:
            raise UsageError(
                f"{a} * {b} = {n:,} elements is more than this version checks (at most "
                f"{limit:,}): use fewer {a}; the same kernel code runs for every one."
            )

    @abstractmethod
    def cases(
        self, dims: dict[str, int], block: int, seed: int, options: dict[str, Any]
    ) -> list[Case]:
        """The input suite for these sizes and options, deterministic in ``seed``."""

    @abstractmethod
    def geometry(self, case: Case, block: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
        """(block, grid) of the canonical launch for a case."""

    @abstractmethod
    def reference(self, case: Case, dtype: type[np.floating[Any]]) -> Arrays:
        """The outputs the kernel must produce, computed by the JAX reference in ``dtype``."""

    @abstractmethod
    def loss_values(self, case: Case, points: Arrays, dtype: type[np.floating[Any]]) -> np.ndarray:
        """The scalar loss at each point: ``points[wrt]`` stacks values of each input on axis 0."""

    @abstractmethod
    def noise_floor(self, case: Case, ref64: Arrays) -> Arrays:
        """Per output and element, the absolute rounding error a correct float32 kernel may make.

        Also the unit for the error the float32 reference makes: noise = floor * max(1, its ratio).
        """

    def explain_scale(self, case: Case, output: str, factor: float) -> tuple[str, str] | None:
        """An op-specific reading of "off by a constant factor": (key, text), e.g. a wrong
        normaliser; None when the factor means nothing particular."""
        return None

    stream_unit: str = "rows"  # what one of the stream_rows is called in reports

    def stream_rows(self, case: Case) -> int | None:
        """The rows (first axis of every output but the summed ones) in which a comparison of
        ``case`` may be done a block at a time, or None when it cannot be cut into rows."""
        return None

    def summed_outputs(self) -> tuple[str, ...]:
        """Outputs that are sums over the stream rows (layer norm's dgamma): a block's reference
        is its rows' share of the sum; a streamed comparison adds the shares (and their noise
        bounds) up and compares the kernel's output with the total once."""
        return ()

    def row_cost(self, case: Case) -> int:
        """How many elements the references and the noise bound of one of the stream_rows hold
        (their float64 temporaries): what sizes a block. Default: its output elements."""
        rows = self.stream_rows(case) or 1
        return sum(int(np.prod(case.output_shapes[o.name])) for o in self.outputs) // rows

    def rows(self, case: Case, lo: int, hi: int) -> Case:
        """``case`` cut to rows ``lo .. hi - 1`` of its outputs, keeping the whole case's
        normalisation: its reference is rows ``lo .. hi - 1`` of the whole case's reference (and
        those rows' share of each summed output), and its noise bound, added up over the blocks,
        the whole case's. Ops whose ``stream_rows`` is not None implement it."""
        raise NotImplementedError(f"{self.id} does not compare a block of rows at a time")

    def repeat_sample(
        self, case: Case, block: int, grid: tuple[int, ...] | None
    ) -> BlockSample | None:
        """The blocks the repeats of ``case`` run on, or None to repeat the whole launch. Ops
        whose cases can outgrow a repeat (a head at a long seq, where sampling heads does not help)
        choose a sample of blocks that run every kind of row; only for the canonical grid."""
        return None

    def variants(self, case: Case) -> list[Variant]:
        """Wrong formulas worth naming when a kernel is off (computed only when it is)."""
        return []
