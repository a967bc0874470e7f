"""Run the kernel under test on each case of an op's suite, on the chosen backend."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import KernelFault, SignatureMismatch, UsageError, suggest
from ._launch import In, Out
from .ops import Case, Op, ShippedKernel

KernelCallable = Callable[..., Any]
ALIGNMENT_RUN = "asc+page-aligned"


def _differences(base: np.ndarray, others: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Elements whose bits differ from ``base`` in any of ``others``, and the largest difference."""
    diff = np.zeros(base.shape, bool)
    max_diff = 0.0
    for other in others:
        differ = base.view(np.uint32) != other.view(np.uint32)
        diff |= differ
        if differ.any():
            with np.errstate(invalid="ignore", over="ignore"):
                d = np.abs(base.astype(np.float64) - other.astype(np.float64))
            d = np.where(np.isnan(d), np.inf, d)
            max_diff = max(max_diff, float(np.max(d[differ])))
    return diff, max_diff


@dataclass(frozen=True)
class KernelRef:
    """What is being checked: a shipped kernel, a user's source + function, or a Python callable."""

    label: str  # how reports name it
    shipped: ShippedKernel | None = None
    source: str | os.PathLike[str] | None = None
    function: str | None = None
    callable: KernelCallable | None = None

    def cli_args(self) -> str:
        if self.shipped is not None:
            return f"--kernel {self.shipped.name}"
        if (
            self.source is not None
            and isinstance(self.source, (str, os.PathLike))
            and _is_path(self.source)
        ):
            return f"--source {self.source} --function {self.function}"
        return ""


def _is_path(source: str | os.PathLike[str]) -> bool:
    return isinstance(source, os.PathLike) or (
        "\n" not in source and source.strip().endswith(".cu")
    )


def resolve_kernel(op: Op, kernel: object, function: str | None) -> KernelRef:
    """Turn the ``kernel=`` argument of check() (or --kernel/--source) into a KernelRef."""
    if kernel is None:
        kernel = op.default_kernel
    if isinstance(kernel, str) and op.kernel(kernel) is not None:
        k = op.kernel(kernel)
        assert k is not None
        return KernelRef(label=k.name, shipped=k, source=k.path(), function=k.function)
    if callable(kernel) and not hasattr(kernel, "launch"):
        return KernelRef(label=getattr(kernel, "__name__", "callable"), callable=kernel)
    if hasattr(kernel, "launch"):
        return KernelRef(label=str(getattr(kernel, "name", "function")), callable=kernel)  # type: ignore[arg-type]
    if isinstance(kernel, (str, os.PathLike)):
        text = os.fspath(kernel)
        if isinstance(kernel, str) and "__global__" not in text and not _is_path(text):
            names = [k.name for k in op.kernels]
            close = suggest(text, names)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UsageError(
                f"kernel={text!r} is not a shipped {op.id} kernel, CUDA source, or a .cu path.{hint} "
                f"Shipped kernels: {', '.join(names)} (gradcheck list)."
            )
        if _is_path(text) and not Path(text).is_file():
            raise UsageError(f"kernel source {text!r} does not exist. Pass the path of a .cu file.")
        label = Path(text).name if _is_path(text) else "source"
        if function:
            label += f":{function}"
        return KernelRef(label=label, source=kernel, function=function)
    raise UsageError(
        f"kernel={kernel!r} must be a shipped kernel name, CUDA source text, a path to a .cu "
        "file, a gradcheck kernel function, or a Python callable."
    )


@dataclass
class CaseRun:
    """What one case's launches produced."""

    output: np.ndarray | None
    fault: KernelFault | None = None
    schedules: tuple[str, ...] = ()
    # elements whose value differs between schedules (or repeated launches), and by how much
    schedule_diff: np.ndarray | None = None
    schedule_max_diff: float = 0.0
    # elements that change when only the buffers' alignment changes (cpu backend)
    alignment_diff: np.ndarray | None = None
    alignment_max_diff: float = 0.0
    outputs: tuple[tuple[str, np.ndarray], ...] = ()
    elapsed_s: float = 0.0


class Runner:
    """Compiles (or wraps) the kernel once, then runs it on cases."""

    def __init__(
        self,
        op: Op,
        ref: KernelRef,
        *,
        backend: str | None,
        shared_bytes: int = 0,
        options: list[str] | None = None,
        include_dirs: list[str] | None = None,
        schedules: tuple[str, ...] = ("asc", "desc", "random"),
        seed: int = 0,
    ) -> None:
        self.op = op
        self.ref = ref
        self.shared_bytes = shared_bytes
        self.seed = seed
        self.fn: Any = None
        if ref.callable is not None and not hasattr(ref.callable, "launch"):
            self.backend, self.backend_reason = "python", "a Python callable"
            self.schedules: tuple[str, ...] = ()
            return
        if ref.callable is not None:
            self.fn = ref.callable
            self.backend = str(getattr(getattr(self.fn, "module", None), "backend", "cpu"))
            self.backend_reason = "a compiled kernel function"
        else:
            from .backends import SourceModule
            from .backends._source import declared_kernel_names, load_source

            assert ref.source is not None
            src = load_source(ref.source)
            function = ref.function
            if function is None:
                names = declared_kernel_names(src.text)
                if len(names) != 1:
                    raise UsageError(
                        f"{src.display_name} defines {len(names)} kernels ({', '.join(names) or 'none'}): "
                        "name the one to check with --function NAME (function=...)."
                    )
                function = names[0]
            module = SourceModule(
                ref.source,
                options=options,
                include_dirs=include_dirs,
                backend=backend,  # type: ignore[arg-type]
            )
            self.fn = module.get_function(function)
            self.backend = str(getattr(module, "backend", backend or "cpu"))
            self.backend_reason = str(getattr(module, "backend_reason", ""))
        self.check_signature()
        self.schedules = (
            tuple(f"random:{seed}" if s == "random" else s for s in schedules)
            if self.backend == "cpu"
            else ("run 1", "run 2")
        )

    def check_signature(self) -> None:
        info = getattr(self.fn, "info", None)
        if info is None:  # the cuda backend does not parse signatures; PyCUDA checks sizes
            return
        want = self.op.params
        got = info.params
        codes = {"float32": "f", "int32": "i"}

        def fmt() -> str:
            return (
                f"  expected: {self.op.signature(info.name)}\n"
                f"  got:      {info.name}({info.signature})"
            )

        if len(got) != len(want):
            raise SignatureMismatch(
                f"{info.name} takes {len(got)} parameters; {self.op.id} kernels take {len(want)}.\n{fmt()}"
            )
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            ok = (w.kind != "scalar") == g.is_pointer and (
                g.code == codes[w.dtype] and (g.size == 4)
            )
            if not ok:
                raise SignatureMismatch(
                    f"{info.name}: parameter {i} ({g.name or '?'}: {g.c_type}) should be "
                    f"{'a pointer to ' if w.kind != 'scalar' else ''}{w.dtype} {w.name}.\n{fmt()}"
                )

    def run(self, case: Case, block: int) -> CaseRun:
        """Launch once per schedule (cpu: thread orders, then a different buffer alignment)."""
        if self.fn is None:
            return self._run_callable(case)
        b, grid = self.op.geometry(case, block)
        args = case.kernel_args(self.op.params)
        outs: list[np.ndarray] = []
        elapsed = 0.0
        runs = list(self.schedules) + ([ALIGNMENT_RUN] if self.backend == "cpu" else [])
        for sched in runs:
            out = np.empty(case.output_shape, np.float32)
            call = [
                Out(out) if p.name == self.op.output else (In(a) if p.kind == "in" else a)
                for p, a in zip(self.op.params, args, strict=True)
            ]
            launch: dict[str, Any] = {"block": b, "grid": grid, "shared": self.shared_bytes}
            if self.backend == "cpu":
                # Buffers end at a guard page, so their start alignment follows their size; the
                # last run puts them at the start of a page instead (vectorised-load bugs move).
                guard = "start" if sched == ALIGNMENT_RUN else "end"
                launch.update(schedule=sched.split("+")[0], workers=1, guard=guard)
            try:
                result = self.fn.launch(*call, **launch)
            except KernelFault as exc:
                return CaseRun(output=None, fault=exc, schedules=(sched,))
            elapsed += float(getattr(result, "elapsed_s", 0.0))
            outs.append(out)
        n_sched = len(self.schedules)
        diff, max_diff = _differences(outs[0], outs[1:n_sched])
        align_diff, align_max = _differences(outs[0], outs[n_sched:])
        return CaseRun(
            output=outs[0],
            outputs=tuple(zip(runs, outs, strict=True)),
            schedules=self.schedules,
            schedule_diff=diff,
            schedule_max_diff=max_diff,
            alignment_diff=align_diff if len(outs) > n_sched else None,
            alignment_max_diff=align_max,
            elapsed_s=elapsed,
        )

    def _run_callable(self, case: Case) -> CaseRun:
        assert self.ref.callable is not None
        a = case.arrays
        shape = case.output_shape
        args = [a[p.name] for p in self.op.params if p.kind == "in"]
        result = np.asarray(self.ref.callable(*(x.copy() for x in args)))
        if result.shape != shape:
            raise UsageError(
                f"the kernel callable returned shape {result.shape}; {self.op.id} expects "
                f"{self.op.output} of shape {shape} (for {', '.join(f'{k}={v}' for k, v in case.dims.items())})."
            )
        out = result.astype(np.float32)
        return CaseRun(output=out, outputs=(("call", out),))
