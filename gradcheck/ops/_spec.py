"""What an op is: the one table every front end reads (CLI flags, checks, reports, docs)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

Expect = Literal["pass", "kernel-bug"]


@dataclass(frozen=True)
class Dim:
    """A size the user picks on the command line (``--vocab``), with its default."""

    name: str
    default: int
    help: str
    maximum: int = 1 << 31


@dataclass(frozen=True)
class KernelParam:
    """One parameter of the op's canonical kernel signature."""

    name: str
    kind: Literal["in", "out", "scalar"]
    dtype: str  # numpy dtype name: float32, int32


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


@dataclass(frozen=True)
class Case:
    """One input of an op's suite: its own sizes, arrays and scalars, and why it is in the suite."""

    name: str
    description: str
    dims: dict[str, int]
    arrays: dict[str, np.ndarray]
    scalars: dict[str, float | int]
    output_shape: tuple[int, ...]
    # Named subsets of output elements that "where" analysis can point at (e.g. masked rows).
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    def kernel_args(self, params: tuple[KernelParam, ...]) -> list[Any]:
        """Values in signature order; None in the place of the output."""
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
    params: tuple[KernelParam, ...]
    output: str  # the name of the output parameter the kernel computes
    output_axes: tuple[str, ...]  # names of its axes, for "where" messages
    thread_axis: int  # the axis threads of a block stride over (blockDim.x patterns)
    kernels: tuple[ShippedKernel, ...]
    default_kernel: str
    wrt: str  # the input the output is the gradient of the scalar loss with respect to

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

    @abstractmethod
    def validate(self, dims: dict[str, int], block: int) -> None:
        """Raise UsageError for sizes the op cannot take."""

    @abstractmethod
    def cases(self, dims: dict[str, int], block: int, seed: int) -> list[Case]:
        """The input suite for these sizes, deterministic in ``seed``."""

    @abstractmethod
    def geometry(self, case: Case, block: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
        """(block, grid) of the canonical launch for a case."""

    @abstractmethod
    def reference(self, case: Case, dtype: type[np.floating[Any]]) -> np.ndarray:
        """The output the kernel must produce, computed by the JAX reference in ``dtype``."""

    @abstractmethod
    def loss_values(
        self, case: Case, points: np.ndarray, dtype: type[np.floating[Any]]
    ) -> np.ndarray:
        """The scalar loss at each of ``points`` (values of ``wrt``, stacked on axis 0)."""

    @abstractmethod
    def noise_floor(self, case: Case, ref64: np.ndarray) -> np.ndarray:
        """Per element, the absolute rounding error a correct float32 kernel may make.

        Also the unit for the error the float32 reference makes: noise = floor * max(1, its ratio).
        """

    def explain_scale(self, case: Case, factor: float) -> tuple[str, str] | None:
        """An op-specific reading of "off by a constant factor": (key, text), e.g. a wrong
        normaliser; None when the factor means nothing particular."""
        return None
