"""The errors gradcheck raises. Every one a user can trigger is a subclass of GradcheckError.

Messages read: what was checked -> what was observed -> likely cause -> what to try.
Kernel faults also subclass AssertionError, so pytest reports them as test failures.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class GradcheckError(Exception):
    """Base class of every error gradcheck raises on purpose."""

    exit_code = 1


class UsageError(GradcheckError, ValueError):
    """The caller passed something gradcheck cannot use (exit code 2)."""

    exit_code = 2


class KernelNotFound(UsageError, LookupError):
    """get_function() named a kernel that the module does not define."""

    def __init__(self, name: str, available: Sequence[str], hint: str = "") -> None:
        self.name = name
        self.available = tuple(available)
        close = [c for c in suggest(name, self.available) if c != name]
        parts = [f"no kernel named {name!r} in this module."]
        if close:
            parts.append(f"Did you mean {' or '.join(repr(c) for c in close)}?")
        if self.available:
            parts.append(f"Kernels it defines: {', '.join(self.available)}.")
        else:
            parts.append("The module defines no __global__ function.")
        if hint:
            parts.append(hint)
        super().__init__(" ".join(parts))


class BackendUnavailable(GradcheckError):
    """The requested backend cannot run here (exit code 3)."""

    exit_code = 3


class CompileError(GradcheckError):
    """A compiler rejected the kernel source (exit code 3). Carries the full command and output."""

    exit_code = 3

    def __init__(
        self,
        summary: str,
        *,
        compiler: str,
        command: Sequence[str],
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        self.summary = summary
        self.compiler = compiler
        self.command = tuple(command)
        self.stdout = stdout
        self.stderr = stderr
        tail = stderr.strip() or stdout.strip()
        if len(tail) > 6000:
            tail = "...\n" + tail[-6000:]
        msg = f"{summary}\n  command: {' '.join(self.command)}"
        if tail:
            msg += "\n" + "\n".join("  | " + line for line in tail.splitlines())
        super().__init__(msg)


class LaunchError(GradcheckError):
    """A kernel could not be launched at all (exit code 3): bad geometry, worker failure."""

    exit_code = 3


class KernelFault(GradcheckError, AssertionError):
    """The kernel did something a correct kernel never does while it ran (a kernel bug).

    ``kind`` names the fault: ``out-of-bounds``, ``barrier-divergence``, ``warp-collective``,
    ``timeout``, ``crash``, ``device-assert``, ``arithmetic``, ``stack-overflow``, ``data-race``.
    """

    kind = "fault"

    def __init__(
        self,
        message: str,
        *,
        kernel: str = "",
        block: tuple[int, int, int] | None = None,
        thread: tuple[int, int, int] | None = None,
    ) -> None:
        self.kernel = kernel
        self.block = block
        self.thread = thread
        super().__init__(message)


class OutOfBounds(KernelFault):
    """A read or write outside the kernel argument's buffer."""

    kind = "out-of-bounds"

    def __init__(
        self,
        message: str,
        *,
        kernel: str = "",
        arg_index: int | None = None,
        arg_name: str = "",
        access: str = "",
        offset_bytes: int | None = None,
        block: tuple[int, int, int] | None = None,
        thread: tuple[int, int, int] | None = None,
    ) -> None:
        self.arg_index = arg_index
        self.arg_name = arg_name
        self.access = access
        self.offset_bytes = offset_bytes
        super().__init__(message, kernel=kernel, block=block, thread=thread)


class BarrierDivergence(KernelFault):
    """Threads of a block disagreed on __syncthreads(): some exited or waited elsewhere."""

    kind = "barrier-divergence"


class WarpCollectiveError(KernelFault):
    """A __shfl/__ballot/__syncwarp named lanes that cannot take part."""

    kind = "warp-collective"


class KernelTimeout(KernelFault):
    """A launch did not finish in time: a barrier nobody reaches or an endless loop."""

    kind = "timeout"


class KernelCrash(KernelFault):
    """The kernel killed the process it ran in (the caller keeps running)."""

    kind = "crash"


class DeviceAssert(KernelFault):
    """A device-side assert() failed."""

    kind = "device-assert"


class ArithmeticFault(KernelFault):
    """An integer division by zero or similar trap."""

    kind = "arithmetic"


class StackOverflow(KernelFault):
    """A CUDA thread ran past the end of its stack."""

    kind = "stack-overflow"


class DataRace(KernelFault):
    """Two threads wrote different values to one word of memory with nothing ordering the writes.

    Found by a race-checking launch on the cpu backend (``races=True``); on a GPU one of the two
    writes is lost, depending on timing. ``block`` and ``thread`` are the second writer's,
    ``other_block`` and ``other_thread`` the first's. ``scope`` is ``"global"`` (a kernel argument:
    ``arg_index``, ``arg_name``, ``element``) or ``"shared"`` (``shared_array`` names the
    ``__shared__`` array when known, ``offset_bytes`` is the byte offset into it, or into the
    block's shared memory). ``n_elements`` counts the distinct elements of that argument (4-byte
    words of that shared memory) written in a race during the launch.
    """

    kind = "data-race"

    def __init__(
        self,
        message: str,
        *,
        kernel: str = "",
        block: tuple[int, int, int] | None = None,
        thread: tuple[int, int, int] | None = None,
        scope: str = "global",
        arg_index: int | None = None,
        arg_name: str = "",
        element: int | None = None,
        n_elements: int = 0,
        other_block: tuple[int, int, int] | None = None,
        other_thread: tuple[int, int, int] | None = None,
        same_block: bool = False,
        shared_array: str = "",
        offset_bytes: int | None = None,
    ) -> None:
        self.scope = scope
        self.arg_index = arg_index
        self.arg_name = arg_name
        self.element = element
        self.n_elements = n_elements
        self.other_block = other_block
        self.other_thread = other_thread
        self.same_block = same_block
        self.shared_array = shared_array
        self.offset_bytes = offset_bytes
        super().__init__(message, kernel=kernel, block=block, thread=thread)


class ScheduleDependentOutput(KernelFault):
    """The same launch gave different outputs under different thread schedules (a race)."""

    kind = "schedule-dependent"


def suggest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Close matches of ``name`` among ``choices``, best first."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.6)


class SignatureMismatch(UsageError):
    """A kernel's parameters do not match the op's canonical signature (exit code 2)."""


class VerdictError(GradcheckError):
    """Raised by Report.raise_for_verdict(); ``report`` holds the whole evidence."""

    def __init__(self, message: str, report: object) -> None:
        self.report = report
        super().__init__(message)


class KernelBug(VerdictError, AssertionError):
    """The kernel was found wrong (verdict kernel-bug); pytest shows it as a test failure."""


class Inconclusive(VerdictError):
    """The check could not decide (verdict inconclusive), e.g. it had no power."""


class DataMisalignment(GradcheckError, AssertionError):
    """A batch's targets are not its inputs shifted as expected, or its labels are broken.

    Raised by AlignmentReport.raise_for_verdict() and probe.watch(); ``report`` holds the
    evidence, ``batch`` the index of the batch watch() stopped at (None outside watch()).
    """

    def __init__(self, message: str, report: object, batch: int | None = None) -> None:
        self.report = report
        self.batch = batch
        super().__init__(message)
