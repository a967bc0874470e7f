"""Run the kernel under test on each case of an op's suite, on the chosen backend."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import KernelFault, SignatureMismatch, UsageError, suggest
from ._launch import In, InOut, Out
from .ops import Arrays, BlockSample, Case, Op, ShippedKernel

KernelCallable = Callable[..., Any]
ALIGNMENT_RUN = "asc+page-aligned"
# A launch reports its blocks (Runner.run's ``blocks``) once it has run this long: the short ones,
# nearly all, leave the progress display as it is.
BLOCKS_AFTER_S = 1.0
# Inputs at least this large run in place on the cpu backend when a case runs once (a copy in the
# launch arena would double them: 2 GiB of logits at 4096 x 128256).
IN_PLACE_BYTES = 64 << 20


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
            return f"--source {self.source}" + (
                f" --function {self.function}" if self.function else ""
            )
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
    """What one case's launches produced (arrays keyed by output name)."""

    output: Arrays | None  # the first run's outputs
    fault: KernelFault | None = None
    schedules: tuple[str, ...] = ()  # the runs that differ only in thread order (or repeat)
    # Every run of the whole grid (each compared with the reference): schedules, then
    # ALIGNMENT_RUN (cpu); only the first when the repeats ran on a sample of the blocks.
    outputs: tuple[tuple[str, Arrays], ...] = ()
    elapsed_s: float = 0.0
    # The repeats on a sample of the blocks (schedules, then ALIGNMENT_RUN), held against each
    # other bit for bit and not against the reference (the blocks left out wrote nothing), and
    # what the sample is; empty when the repeats ran on the whole grid (they are in ``outputs``).
    repeats: tuple[tuple[str, Arrays], ...] = ()
    sample: str = ""

    @property
    def base(self) -> Arrays | None:
        """The run the other thread orders and alignment are held against, bit for bit."""
        return self.repeats[0][1] if self.repeats else self.output

    def runs(self, kind: str) -> list[Arrays]:
        """The runs to hold against ``base``: "schedules" (other thread orders or repeats) or
        "alignment" (the buffers at another alignment)."""
        runs = self.repeats or self.outputs
        if kind == "schedules":
            return [o for name, o in runs[1:] if name in self.schedules]
        return [o for name, o in runs if name == ALIGNMENT_RUN]


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
        no_extern_c: bool | None = None,
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
            self.race_check = False
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
            if no_extern_c is None:
                # A source that declares extern "C" itself chose its linkage: compile it as written
                # (wrapping it again would put the C++ headers it includes in extern "C").
                no_extern_c = 'extern "C"' in src.text
            module = SourceModule(
                ref.source,
                options=options,
                include_dirs=include_dirs,
                no_extern_c=no_extern_c,
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
        # The race check needs the cpu backend's instrumented build (one more compile, once).
        self.race_check = self.backend == "cpu"

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

    def repeat_sample(
        self, case: Case, block: int, grid: tuple[int, ...] | None
    ) -> BlockSample | None:
        """The blocks ``run`` repeats ``case`` on (Op.repeat_sample): only on the cpu backend (the
        thread orders and the race check are the emulator's), and never for a case run once."""
        if self.backend != "cpu" or case.run_once:
            return None
        return self.op.repeat_sample(case, block, grid)

    def run(
        self,
        case: Case,
        block: int,
        grid: tuple[int, ...] | None = None,
        *,
        once: bool = False,
        blocks: Callable[[str, int, int], None] | None = None,
        sample: BlockSample | None = None,
    ) -> CaseRun:
        """Launch once per schedule (cpu: thread orders, then a different buffer alignment).

        On the cpu backend the first launch also looks for data races (``races=True``).
        ``once``: a single launch, on every core, with the case's large buffers in memory the
        backend uses in place (no copies): for a problem too large to repeat (Case.run_once).
        ``sample`` (from repeat_sample): the whole grid once, on every core; then the launches
        above, race check included, on the sample's blocks only.
        ``blocks``: called as blocks(run, blocks finished, blocks in the grid) while a cpu launch
        has run for BLOCKS_AFTER_S or more (``run``: "asc, race check", "desc", ...)."""
        if self.fn is None:
            return self._run_callable(case)
        b, canonical = self.op.geometry(case, block)
        g = grid or canonical
        empty: Callable[[tuple[int, ...]], np.ndarray] = lambda shape: np.empty(shape, np.float32)  # noqa: E731
        if once and self.backend == "cpu":
            from .backends.cpu import shared_empty

            empty = shared_empty
            for name, a in case.arrays.items():
                if a.nbytes >= IN_PLACE_BYTES:
                    shared = shared_empty(a.shape, a.dtype)
                    shared[...] = a
                    case.arrays[name] = shared  # the case's own copy goes
        args = case.kernel_args(self.op.params)
        runs_out: list[Arrays] = []
        elapsed = 0.0
        runs = list(self.schedules) + ([ALIGNMENT_RUN] if self.backend == "cpu" else [])
        if once:
            runs = runs[:1]
        sampled = sample is not None
        if sampled:
            runs = runs[:1] + runs  # the whole grid, then the repeats on the sample
        for k, sched in enumerate(runs):
            outs: Arrays = {}
            wrapped: dict[str, Any] = {}
            for o in self.op.outputs:
                shape = case.output_shapes[o.name]
                outs[o.name] = empty(shape)
                if o.init == "zero":
                    outs[o.name][...] = 0.0
                    wrapped[o.name] = InOut(outs[o.name])
                else:
                    wrapped[o.name] = Out(outs[o.name])
            call = [
                wrapped[p.name] if p.name in wrapped else (In(a) if p.kind == "in" else a)
                for p, a in zip(self.op.params, args, strict=True)
            ]
            launch: dict[str, Any] = {"block": b, "grid": g, "shared": self.shared_bytes}
            if self.backend == "cpu":
                # Buffers end at a guard page, so their start alignment follows their size; the
                # last run puts them at the start of a page instead (vectorised-load bugs move).
                guard = "start" if sched == ALIGNMENT_RUN else "end"
                launch.update(schedule=sched.split("+")[0], workers=1, guard=guard)
                if once or (sampled and k == 0):
                    launch.update(workers=None)  # every core
                elif k == int(sampled) and self.race_check:
                    launch.update(races=True)  # the first run of the repeats
                if sample is not None and k > 0:
                    launch.update(only_blocks=sample.blocks)
                if blocks is not None:
                    launch.update(on_blocks=_after(BLOCKS_AFTER_S, blocks, _run_name(launch)))
            try:
                result = self.fn.launch(*call, **launch)
            except KernelFault as exc:
                on = sample.text if sample is not None and k > 0 else ""
                return CaseRun(output=None, fault=exc, schedules=(sched,), sample=on)
            elapsed += float(getattr(result, "elapsed_s", 0.0))
            runs_out.append(outs)
        named = tuple(zip(runs, runs_out, strict=True))
        return CaseRun(
            output=runs_out[0],
            schedules=tuple(runs) if once else self.schedules,
            outputs=named[:1] if sampled else named,
            elapsed_s=elapsed,
            repeats=named[1:] if sampled else (),
            sample=sample.text if sample is not None else "",
        )

    def _scalars_for(self, case: Case) -> dict[str, Any]:
        """The op's scalar parameters (causal, scale, ...) the callable asks for by name."""
        assert self.ref.callable is not None
        try:
            sig = inspect.signature(self.ref.callable)
        except (TypeError, ValueError):
            return {}
        takes_all = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        return {
            p.name: case.scalars[p.name]
            for p in self.op.params
            if p.kind == "scalar" and (takes_all or p.name in sig.parameters)
        }

    def _run_callable(self, case: Case) -> CaseRun:
        assert self.ref.callable is not None
        a = case.arrays
        args = [a[p.name] for p in self.op.params if p.kind == "in"]
        result = self.ref.callable(*(x.copy() for x in args), **self._scalars_for(case))
        names = [o.name for o in self.op.outputs]
        if isinstance(result, dict):
            got = dict(result)
        elif len(names) > 1 and isinstance(result, (tuple, list)):
            got = dict(zip(names, result, strict=False))
        else:
            got = {names[0]: result}
        outs: Arrays = {}
        for name in names:
            shape = case.output_shapes[name]
            value = got.get(name)
            arr = np.asarray(value) if value is not None else None
            if arr is None or arr.shape != shape:
                dims = ", ".join(f"{k}={v}" for k, v in case.dims.items())
                what = "nothing" if arr is None else f"shape {arr.shape}"
                raise UsageError(
                    f"the kernel callable returned {what} for {name}; {self.op.id} expects "
                    f"{name} of shape {shape} (for {dims}). Return "
                    + (
                        f"a tuple ({', '.join(names)}) or a dict keyed by those names."
                        if len(names) > 1
                        else "one array."
                    )
                )
            outs[name] = arr.astype(np.float32)
        return CaseRun(output=outs, outputs=(("call", outs),))


def _run_name(launch: dict[str, Any]) -> str:
    """A cpu launch as the progress display names it: "asc, race check", "asc, page-aligned"."""
    parts = [str(launch["schedule"])]
    if launch.get("guard") == "start":
        parts.append("page-aligned")
    if launch.get("races"):
        parts.append("race check")
    if launch.get("workers") is None:
        parts.append("every core")
    if launch.get("only_blocks") is not None:
        parts.append("sampled blocks")
    return ", ".join(parts)


def _after(
    seconds: float, report: Callable[[str, int, int], None], name: str
) -> Callable[[int, int], None]:
    """The backend's on_blocks for one launch: ``report(name, done, total)`` from ``seconds`` on."""
    start = time.monotonic()

    def on_blocks(done: int, total: int) -> None:
        if time.monotonic() - start >= seconds:
            report(name, done, total)

    return on_blocks
