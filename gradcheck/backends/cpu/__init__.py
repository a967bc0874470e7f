"""The cpu backend: unmodified CUDA source compiled by g++ and run on the CPU, hunting bugs.

A launch runs in a worker process (a crash or hang there never takes the caller down). Each CUDA
thread is a fiber that switches at __syncthreads() and warp collectives in a chosen schedule;
outputs and shared memory start poisoned; buffers sit between guard pages.

The differences from PyCUDA that remain are listed in the README, section "The cpu backend".
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..._errors import (
    ArithmeticFault,
    BarrierDivergence,
    DataRace,
    DeviceAssert,
    GradcheckError,
    KernelCrash,
    KernelFault,
    KernelNotFound,
    KernelTimeout,
    LaunchError,
    OutOfBounds,
    ScheduleDependentOutput,
    StackOverflow,
    UsageError,
    WarpCollectiveError,
    suggest,
)
from ..._launch import (
    CPU_ONLY_OPTIONS,
    LAUNCH_OPTIONS,
    In,
    InOut,
    Launch,
    Out,
    _Wrapped,
    check_geometry,
    check_scalar,
    count_poison,
    poison_fill,
    reject_options,
)
from .._source import Source, load_source
from . import _build
from ._arena import Align, Arena, HostBuffer, Slot, host_buffer, shared_empty
from ._nvcc import Resources
from ._process import WorkerDied, WorkerStalled, worker

SCHEDULES = ("asc", "desc", "random")
DEFAULT_SCHEDULES = ("asc", "desc", "random:1")
DEFAULT_STACK_BYTES = 64 * 1024
DEFAULT_TIMEOUT_S = 60.0
RACE_FAULT = 9  # CUDACPU_FAULT_RACE in native/gradcheck_cpu_abi.h


@dataclass(frozen=True)
class Param:
    """One kernel parameter as g++ compiled it."""

    name: str
    is_pointer: bool
    code: str  # f i u b v s p, e (__half), E (__nv_bfloat16)
    is_const: bool
    size: int

    @property
    def c_type(self) -> str:
        base = {
            ("f", 4): "float",
            ("f", 8): "double",
            ("i", 1): "signed char",
            ("i", 2): "short",
            ("i", 4): "int",
            ("i", 8): "long long",
            ("u", 1): "unsigned char",
            ("u", 2): "unsigned short",
            ("u", 4): "unsigned int",
            ("u", 8): "unsigned long long",
            ("b", 1): "bool",
            ("v", 0): "void",
            ("e", 2): "__half",
            ("E", 2): "__nv_bfloat16",
        }.get((self.code, self.size), f"{self.size}-byte struct")
        if self.is_pointer:
            return ("const " if self.is_const else "") + base + "*"
        return base

    def label(self, index: int) -> str:
        return f"argument {index}" + (f" ({self.name})" if self.name else "")

    def accepts_dtype(self, dtype: np.dtype[Any]) -> bool:
        if self.code in ("v", "s"):
            return True
        if self.code == "e":  # __half: numpy's float16
            return dtype == np.float16
        if self.code == "E":  # __nv_bfloat16: ml_dtypes.bfloat16, or its bits as uint16
            bf16 = Param._bfloat16()
            return dtype == np.uint16 or (bf16 is not None and dtype == bf16)
        kind = {"f": "f", "i": "i", "u": "u", "b": "b"}.get(self.code)
        return dtype.kind == kind and dtype.itemsize == self.size

    @staticmethod
    def _bfloat16() -> np.dtype[Any] | None:
        """ml_dtypes' bfloat16 (installed with jax), imported only when a kernel takes bfloat16."""
        try:
            import ml_dtypes
        except ImportError:
            return None
        bf16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
        return bf16


@dataclass(frozen=True)
class KernelInfo:
    """A kernel of a compiled module: the name get_function() takes, and its parameters."""

    symbol: str
    name: str
    signature: str
    params: tuple[Param, ...]
    index: int


def _numpy_name(p: Param) -> str:
    """The scalar type of a parameter (or of a pointer's element) as a user writes it:
    'np.float32', 'np.int32', ..., 'ml_dtypes.bfloat16'; '' when there is none."""
    if p.code == "b":
        return "np.bool_"
    if p.code == "e":
        return "np.float16"
    if p.code == "E":
        return "ml_dtypes.bfloat16"
    kind = {"f": "float", "i": "int", "u": "uint"}.get(p.code)
    return f"np.{kind}{8 * p.size}" if kind and p.size in (1, 2, 4, 8) else ""


class CpuSourceModule:
    """PyCUDA's SourceModule, for the cpu backend.

    Extra keyword options: ``nvcc_check`` ("auto": cross-compile with nvcc for sm_80/sm_90 when it is
    installed and fail on what nvcc rejects; "off"; "require").
    """

    backend = "cpu"

    def __init__(
        self,
        source: str | os.PathLike[str],
        nvcc: str = "nvcc",
        options: Sequence[str] | None = None,
        keep: bool = False,
        no_extern_c: bool = False,
        arch: str | None = None,
        code: str | None = None,
        cache_dir: str | None = None,
        include_dirs: Sequence[str] | None = None,
        *,
        nvcc_check: str = "auto",
    ) -> None:
        self.source: Source = load_source(source)
        self.backend_reason = "asked for"
        self.build = _build.build(
            self.source,
            options=options or (),
            include_dirs=include_dirs or (),
            no_extern_c=no_extern_c,
            cache_dir=cache_dir,
            keep=keep,
            nvcc=nvcc,
            nvcc_check=nvcc_check,
        )
        self.no_extern_c = no_extern_c
        self._keep = keep
        self._race_library: Path | None = None
        table = worker().load(str(self.build.library))
        kernels = []
        for i, (row, decl) in enumerate(zip(table, self.build.kernels, strict=True)):
            names = decl.param_names + ("",) * (len(row["types"]) - len(decl.param_names))
            params = tuple(
                Param(n, t["is_pointer"], t["code"], t["is_const"], t["size"])
                for n, t in zip(names, row["types"], strict=False)
            )
            symbol = row["symbol"] or row["name"]
            kernels.append(KernelInfo(symbol, row["name"], row["params"], params, i))
        self.kernels: tuple[KernelInfo, ...] = tuple(kernels)

    def race_library(self) -> Path:
        """The race-checking build of this module (what ``races=True`` launches run), built on
        first use and cached like the plain one."""
        if self._race_library is None:
            self._race_library = _build.race_build(self.build, keep=self._keep)
        return self._race_library

    @property
    def kernel_names(self) -> tuple[str, ...]:
        return tuple(k.symbol for k in self.kernels)

    @property
    def resources(self) -> tuple[Resources, ...]:
        """Registers, shared memory and spills per kernel and architecture, from nvcc (if any)."""
        return self.build.resources

    def get_function(self, name: str) -> CpuFunction:
        for k in self.kernels:
            if k.symbol == name:
                return CpuFunction(self, k)
        raise KernelNotFound(name, self.kernel_names, hint=self._lookup_hint(name))

    def _lookup_hint(self, name: str) -> str:
        for k in self.kernels:
            if k.name == name or k.name.rsplit("::", 1)[-1] == name:
                return (
                    f"{k.name}({k.signature}) has C++ linkage; its symbol is {k.symbol!r}. PyCUDA "
                    f"looks kernels up by symbol: call get_function({k.symbol!r}) or declare the "
                    'kernel extern "C".'
                )
        short = [t.rsplit("::", 1)[-1] for t in self.build.templates]
        if name in self.build.templates or name in short:
            return (
                f"{name!r} is a template kernel with no explicit instantiation, so no kernel "
                f"exists to launch. Add one, e.g. `template __global__ void {name}<256>(...);`, "
                "and call get_function with its mangled name."
            )
        return ""


@dataclass(frozen=True)
class ScheduleDifference:
    """Where two schedules disagreed on one output argument."""

    arg_index: int
    arg_name: str
    schedules: tuple[str, str]
    n_different: int
    n_elements: int
    max_abs_diff: float
    first_index: tuple[int, ...]


@dataclass(frozen=True)
class ScheduleReport:
    """The same launch under several thread schedules, and whether the outputs agreed."""

    kernel: str
    launches: tuple[Launch, ...]
    differences: tuple[ScheduleDifference, ...] = field(default_factory=tuple)

    @property
    def consistent(self) -> bool:
        return not self.differences

    def raise_if_inconsistent(self) -> None:
        if self.differences:
            d = self.differences[0]
            raise ScheduleDependentOutput(
                f"schedule-dependent output: {self.kernel} wrote different values to argument "
                f"{d.arg_index}{f' ({d.arg_name})' if d.arg_name else ''} under schedules "
                f"{d.schedules[0]!r} and {d.schedules[1]!r}: {d.n_different} of {d.n_elements} "
                f"elements differ (max abs diff {d.max_abs_diff:.3g}, first at index "
                f"{d.first_index}). Threads read shared or global memory before another thread "
                "wrote it: a missing __syncthreads() (or __syncwarp()) is the usual cause.",
                kernel=self.kernel,
            )


class CpuFunction:
    """A kernel of a CpuSourceModule, called as in PyCUDA.

    cpu-backend launch options (keywords, all optional):
      schedule: "asc" | "desc" | "random" (order in which the threads of a block run between
        barriers; "random:SEED" also sets the seed), seed: int,
      workers: OS threads running blocks (default: all cores),
      strict: bool (an early return while other threads wait at __syncthreads() is an error;
        default True), timeout: seconds without progress before a launch is declared hung (60),
      guard: "end" | "start" (which side of each buffer touches a guard page), poison: bool
        (poison shared memory before every block; default True), stack_bytes: per CUDA thread,
      races: bool (default False): run a race-checking build of the module, which watches every
        write to the writable argument buffers and to shared memory and raises ``DataRace`` after
        the launch when two threads wrote different values to one element with nothing ordering
        the writes (different blocks without a __threadfence()-and-atomic chain, or one block with
        no __syncthreads() between, or one warp with no __syncwarp() between): the lost updates a
        GPU would make. Blocks then run on one OS thread, in order (workers=1); the outputs are
        the same as without races. The first such launch compiles the race-checking build.
      on_blocks: called as on_blocks(blocks finished, blocks in the grid) when the launch starts
        and about every quarter second while it runs, for a progress display (a launch of a large
        grid under the race check can take minutes); if it raises, it is not called again.
      only_blocks: linear block indices (x fastest: blockIdx.x + gridDim.x * (blockIdx.y +
        gridDim.y * blockIdx.z)): run only those blocks of the grid, in ascending order (gridDim
        is still the whole grid); on_blocks then counts them. For repeating a large launch on a
        sample of its blocks (other thread orders, the race check); the blocks left out write
        nothing.
    """

    def __init__(self, module: CpuSourceModule, info: KernelInfo) -> None:
        self.module = module
        self.info = info
        self.name = info.symbol
        self.last_launch: Launch | None = None

    def __repr__(self) -> str:
        return f"<cpu kernel {self.info.name}({self.info.signature})>"

    def __call__(self, *args: Any, **launch: Any) -> float | None:
        time_kernel = bool(launch.get("time_kernel", False))
        result = self.launch(*args, **launch)
        return result.elapsed_s if time_kernel else None

    def launch(
        self,
        *args: Any,
        block: Any = None,
        grid: Any = (1, 1),
        shared: Any = 0,
        stream: Any = None,
        time_kernel: bool = False,
        texrefs: Any = None,
        schedule: str = "asc",
        seed: int = 0,
        workers: int | None = None,
        strict: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        guard: Align = "end",
        poison: bool = True,
        stack_bytes: int = DEFAULT_STACK_BYTES,
        races: bool = False,
        on_blocks: Callable[[int, int], None] | None = None,
        only_blocks: Sequence[int] | np.ndarray | None = None,
        **unknown: Any,
    ) -> Launch:
        """Launch once and return what happened (PyCUDA's __call__ returns only the time)."""
        reject_options(list(unknown), f"{self.name}(...)", LAUNCH_OPTIONS + CPU_ONLY_OPTIONS)
        b, g, sh = check_geometry(block, grid, shared)
        schedule, seed = _parse_schedule(schedule, seed)
        if guard not in ("end", "start"):
            raise UsageError(f"guard={guard!r} must be 'end' or 'start'.")
        if workers is None:
            workers = os.cpu_count() or 1
        if not isinstance(workers, int) or workers < 1:
            raise UsageError(f"workers={workers!r} must be a positive int.")
        if stack_bytes < 4096:
            raise UsageError(f"stack_bytes={stack_bytes} is too small; use at least 4096.")
        if not isinstance(races, (bool, np.bool_)):
            raise UsageError(f"races={races!r} must be True or False.")
        if races:
            workers = 1  # the race check runs the blocks one after another on one OS thread
        block_list = _block_list(only_blocks, g)
        marshalled, req_args = self._marshal(args)
        # Arrays from shared_empty() are used in place (the default guard, no race check);
        # every other array is copied into the arena and its outputs copied back.
        hosts: dict[int, HostBuffer] = {}
        if guard == "end" and not races:
            for i, w in marshalled:
                hb = host_buffer(w.array)
                if hb is not None:
                    hosts[i] = hb
        arrays = [(i, w) for i, w in marshalled if i not in hosts]
        library = str(self.module.race_library() if races else self.module.build.library)
        proc = worker()
        # The arena is shared from launch to launch: hold the worker's lock while using it.
        with proc.lock:
            proc.load(library)  # again, if the worker was replaced
            arena = Arena([(i, w.array, w.direction) for i, w in arrays], guard)
            host_fds: list[int] = []
            for i, w in marshalled:
                if i in hosts and w.direction == "out":
                    poison_fill(w.array)
            # What a race check watches: the buffers the kernel may write (non-const pointers).
            watched = [s for s in arena.slots if not self._param(s.arg_index).is_const]
            directions = {i: w.direction for i, w in marshalled}
            t0 = time.perf_counter()
            req = {
                "op": "launch",
                "library": library,
                "index": self.info.index,
                "grid": list(g),
                "block": list(b),
                "shared": sh,
                "stack_bytes": stack_bytes,
                "schedule": SCHEDULES.index(schedule),
                "seed": seed,
                "workers": workers,
                "strict": strict,
                "poison_shared": poison,
                "status_offset": 0,
                "arena_bytes": arena.capacity,
                "guard_pages": arena.guard_pages,
                "args": [
                    self._host_arg(hosts[i], directions[i], host_fds)
                    if i in hosts
                    else {"kind": "buffer", "offset": arena.slots[j].offset}
                    if kind == "buffer"
                    else {"kind": "scalar", "bytes": value}
                    for i, (j, (kind, value)) in enumerate(
                        _number_buffers(
                            [("host", "") if i in hosts else a for i, a in enumerate(req_args)]
                        )
                    )
                ],
                "races": bool(races),
                "race_ranges": [[s.offset, s.nbytes, s.itemsize] for s in watched] if races else [],
                "block_list": block_list,
            }
            reply = self._send(
                proc, req, arena, timeout, b, g, host_fds, on_blocks, len(block_list) or None
            )
            elapsed = time.perf_counter() - t0
            if not reply.get("ok"):
                raise LaunchError(f"{self.name}: the launch worker failed: {reply.get('error')}")
            raced = reply["rc"] == RACE_FAULT and reply.get("race") is not None
            if reply["rc"] and not raced:
                proc.restart()  # a faulting kernel may have scribbled on the worker's memory
                raise self._fault(reply, arena, b, g, list(hosts.items()))
            for slot in arena.slots:
                damage = arena.canary_damage(slot)
                if damage:
                    raise self._canary_fault(slot.arg_index, damage)
            for i, hb in hosts.items():
                reach = hb.canary_damage()
                if reach:
                    raise self._canary_fault(i, (reach, 0))
            if raced:  # the launch completed; the caller's arrays stay as they were
                raise self._race_fault(reply["race"], watched, b, g)
            unwritten: dict[int, int] = {}
            for slot, (_, w) in zip(arena.slots, arrays, strict=True):
                if w.direction in ("out", "inout"):
                    w.array[...] = arena.view(slot, w.array)
            for i, w in marshalled:
                if w.direction == "out":
                    n = count_poison(w.array)
                    if n:
                        unwritten[i] = n
        result = Launch(
            backend="cpu",
            kernel=self.name,
            grid=g,
            block=b,
            shared=sh,
            elapsed_s=elapsed,
            schedule=schedule if schedule != "random" else f"random:{seed}",
            seed=seed,
            unwritten=unwritten,
        )
        self.last_launch = result
        return result

    def compare_schedules(
        self,
        *args: Any,
        schedules: Sequence[str] = DEFAULT_SCHEDULES,
        **launch: Any,
    ) -> ScheduleReport:
        """Run the same launch under several schedules and compare every output bit for bit.

        Blocks run on one OS thread in order, so only the order of threads within a block varies;
        the guard side alternates, so both ends of every buffer are checked. The user's output
        arrays receive the first schedule's results.
        """
        if len(schedules) < 2:
            raise UsageError(
                "compare_schedules needs at least two schedules, e.g. ('asc', 'desc')."
            )
        launch = dict(launch, workers=1)
        results: list[list[np.ndarray]] = []
        launches: list[Launch] = []
        outs = [(i, a) for i, a in enumerate(args) if isinstance(a, (Out, InOut))]
        for k, sched in enumerate(schedules):
            run_args = list(args)
            copies = []
            for i, a in outs:
                c = a.array.copy()
                run_args[i] = type(a)(c)
                copies.append(c)
            launches.append(
                self.launch(
                    *run_args, schedule=sched, guard="end" if k % 2 == 0 else "start", **launch
                )
            )
            results.append(copies)
        diffs = []
        for j, (i, _) in enumerate(outs):
            base = results[0][j]
            for k in range(1, len(schedules)):
                other = results[k][j]
                differ = _differs(base, other)
                n = int(np.count_nonzero(differ))
                if n:
                    with np.errstate(invalid="ignore", over="ignore"):
                        d = np.abs(base.astype(np.float64) - other.astype(np.float64))
                    d[np.isnan(d)] = np.inf  # NaN in one schedule only: as different as it gets
                    first = tuple(
                        int(x) for x in np.unravel_index(int(np.argmax(differ)), base.shape)
                    )
                    diffs.append(
                        ScheduleDifference(
                            i,
                            self._param(i).name,
                            (launches[0].schedule, launches[k].schedule),
                            n,
                            base.size,
                            float(np.max(np.where(differ, d, 0.0))),
                            first,
                        )
                    )
        for j, (_, a) in enumerate(outs):
            a.array[...] = results[0][j]
        self.last_launch = launches[0]
        return ScheduleReport(self.name, tuple(launches), tuple(diffs))

    # ---- internals ----------------------------------------------------------------------------

    def _param(self, i: int) -> Param:
        return self.info.params[i] if i < len(self.info.params) else Param("", False, "s", False, 0)

    def _marshal(
        self, args: Sequence[Any]
    ) -> tuple[list[tuple[int, _Wrapped]], list[tuple[str, str]]]:
        params = self.info.params
        if len(args) != len(params):
            raise UsageError(
                f"{self.info.name}({self.info.signature}) takes {len(params)} argument"
                f"{'s' if len(params) != 1 else ''}, got {len(args)}."
            )
        arrays: list[tuple[int, _Wrapped]] = []
        out: list[tuple[str, str]] = []
        for i, (a, p) in enumerate(zip(args, params, strict=True)):
            if isinstance(a, _Wrapped):
                if not p.is_pointer:
                    raise UsageError(
                        f"{p.label(i)} is `{p.c_type}` in {self.info.name}, but got "
                        f"{type(a).__name__}(array): pass a numpy scalar such as "
                        f"{_numpy_name(p) or 'np.int32'}(...)."
                    )
                if p.code == "p":
                    raise UsageError(
                        f"{p.label(i)} is a pointer to pointers (`{p.c_type}*`); host arrays of "
                        "device pointers cannot be passed to the cpu backend."
                    )
                if not p.accepts_dtype(a.array.dtype):
                    want = _numpy_name(p)
                    raise UsageError(
                        f"{p.label(i)} is `{p.c_type}` in {self.info.name}, but got a "
                        f"{a.array.dtype} array. Convert it: x.astype({want or 'np.float32'})."
                    )
                if p.is_const and a.direction in ("out", "inout"):
                    raise UsageError(
                        f"{p.label(i)} is `{p.c_type}`: the kernel cannot write it, yet it is "
                        f"passed as {type(a).__name__}. Pass it as In(...), or drop the const."
                    )
                arrays.append((i, a))
                out.append(("buffer", ""))
                continue
            value = check_scalar(a, i, p.name)  # refuses bare arrays and Python numbers
            if p.is_pointer:
                raise UsageError(
                    f"{p.label(i)} is `{p.c_type}` in {self.info.name}: pass an array wrapped as "
                    f"In(x), Out(x) or InOut(x), not a {value.dtype} scalar."
                )
            if p.code != "s" and not p.accepts_dtype(value.dtype):
                want = _numpy_name(p)
                raise UsageError(
                    f"{p.label(i)} is `{p.c_type}` in {self.info.name}, but got np.{value.dtype}"
                    f"({value!r}). Pass {want}(...)."
                    if want
                    else "."
                )
            if p.code == "s" and value.dtype.itemsize != p.size:
                raise UsageError(
                    f"{p.label(i)} is a {p.size}-byte struct, but got {value.dtype.itemsize} bytes."
                )
            out.append(("scalar", value.tobytes().hex()))
        return arrays, out

    @staticmethod
    def _host_arg(hb: HostBuffer, direction: str, fds: list[int]) -> dict[str, Any]:
        fds.append(hb.fd)
        return {
            "kind": "host",
            "fd": len(fds),  # the arena's memfd goes first
            "size": hb.size,
            "offset": hb.offset,
            "guards": list(hb.guards),
            "read_only": direction == "in",
        }

    def _send(
        self,
        proc: Any,
        req: dict[str, Any],
        arena: Arena,
        timeout: float | None,
        b: tuple[int, int, int],
        g: tuple[int, int, int],
        host_fds: Sequence[int] = (),
        on_blocks: Callable[[int, int], None] | None = None,
        n_blocks: int | None = None,
    ) -> dict[str, Any]:
        blocks = n_blocks or g[0] * g[1] * g[2]
        watch = on_blocks

        def status() -> tuple[int, list[tuple[int, int]]]:
            nonlocal watch
            now = arena.status()
            if watch is not None:
                try:
                    watch(now[0], blocks)
                except Exception:
                    # A failing progress display stops being called; the launch, mid-way in the
                    # worker, goes on (leaving now would desynchronise the worker's replies).
                    watch = None
            return now

        def describe() -> str:
            done, busy = arena.status()
            where = "; ".join(
                f"block {_unravel(blk, g)} was running thread {_unravel(t, b)}" for blk, t in busy
            )
            return f"{done} of {blocks} blocks finished; {where or 'no block running'}"

        try:
            reply: dict[str, Any] = proc.request(
                req,
                [arena.fd, *host_fds],
                stall_timeout=timeout,
                progress=status,
                describe_stall=describe,
            )
            return reply
        except WorkerStalled as exc:
            raise KernelTimeout(
                f"{self.name} made no progress for {exc.seconds:g} s and was stopped: "
                f"{exc.detail}. A thread that never reaches the next __syncthreads() (an endless "
                "loop, or a spin-wait on another thread: threads of a block only switch at "
                "barriers and warp collectives here) is the usual cause. If the kernel is only "
                "slow, pass a larger timeout=.",
                kernel=self.name,
            ) from None
        except WorkerDied as exc:
            _, busy = arena.status()
            where = ", ".join(
                f"block {_unravel(blk, g)} thread {_unravel(t, b)}" for blk, t in busy
            )
            raise KernelCrash(
                f"{self.name} crashed the launch worker ({exc.signal_name or exc.returncode}) "
                f"while running {where or 'an unknown block'}; your process is unaffected. A "
                "write through a wild pointer that corrupted memory outside every guarded buffer "
                "is the usual cause." + (f"\nworker stderr:\n{exc.stderr}" if exc.stderr else ""),
                kernel=self.name,
            ) from None

    def _fault(
        self,
        reply: dict[str, Any],
        arena: Arena,
        b: tuple[int, int, int],
        g: tuple[int, int, int],
        hosts: Sequence[tuple[int, HostBuffer]] = (),
    ) -> GradcheckError:
        kind = reply["kind"]
        block = tuple(reply["block"])
        thread = tuple(reply["thread"])
        at = f"block {_fmt3(block)} thread {_fmt3(thread)}"
        msg = reply["message"]
        common: dict[str, Any] = dict(kernel=self.name, block=block, thread=thread)
        if kind == 1:
            access = {1: "write", 0: "read"}.get(reply["write"], "access")
            off = reply["arena_offset"]
            hit = arena.locate(off) if off is not None else None
            host_hit = reply.get("host_hit")
            if host_hit is not None:
                index, hb = hosts[host_hit[0]]
                slot = Slot(index, hb.offset, hb.nbytes, hb.array.itemsize, (0, 0), hb.guards)
                hit = slot, host_hit[1] - hb.offset
                if 0 <= hit[1] < hb.nbytes:  # inside the data: a write to a read-only input
                    p = self._param(index)
                    return OutOfBounds(
                        f"write to an input in {self.name}: {at} writes kernel "
                        f"{p.label(index).replace('argument', 'arg')} `{p.c_type}` at element "
                        f"[{hit[1] // max(1, slot.itemsize)}], passed as In (read-only): a "
                        "kernel that changes its input changes the caller's data. Pass it as "
                        "InOut (and drop its const) if the kernel is meant to change it.",
                        arg_index=index,
                        arg_name=p.name,
                        access=access,
                        offset_bytes=hit[1],
                        **common,
                    )
            if hit is not None:
                slot, rel = hit
                p = self._param(slot.arg_index)
                n = slot.nbytes // max(1, slot.itemsize)
                where = _where(rel, slot.nbytes, slot.itemsize)
                return OutOfBounds(
                    f"out-of-bounds {access} in {self.name}: {at} {access}s kernel "
                    f"{p.label(slot.arg_index).replace('argument', 'arg')} `{p.c_type}` {where} "
                    f"(it has {n} element{'s' if n != 1 else ''}). Check the bounds test on the "
                    "index: a missing `if (i < n)`, or an off-by-one.",
                    arg_index=slot.arg_index,
                    arg_name=p.name,
                    access=access,
                    offset_bytes=rel,
                    **common,
                )
            addr = reply["addr"]
            what = "a null pointer" if addr < 4096 else f"address {addr:#x}, outside every argument"
            return OutOfBounds(
                f"illegal {access} in {self.name}: {at} touched {what}. An uninitialised or "
                "wild pointer, or an index far out of range, is the usual cause.",
                access=access,
                **common,
            )
        cls: type[KernelFault] = {
            2: ArithmeticFault,
            3: BarrierDivergence,
            4: WarpCollectiveError,
            5: DeviceAssert,
            6: StackOverflow,
        }.get(kind, KernelFault)
        if kind == 8:
            return LaunchError(f"{self.name}: {msg}")
        if kind in (3, 4):  # the message names the threads; the last one resumed is not to blame
            return cls(f"{msg} ({self.name}, block {_fmt3(block)})", kernel=self.name, block=block)
        return cls(f"{msg} ({self.name}, {at})", **common)

    def _race_fault(
        self,
        race: dict[str, Any],
        watched: list[Slot],
        b: tuple[int, int, int],
        g: tuple[int, int, int],
    ) -> DataRace:
        block, thread = _unravel3(race["block"], g), _unravel3(race["thread"], b)
        other_block = _unravel3(race["other_block"], g)
        other_thread = _unravel3(race["other_thread"], b)
        same_block = race["block"] == race["other_block"]
        first = f"block {_fmt3(other_block)} thread {_fmt3(other_thread)}"
        second = f"block {_fmt3(block)} thread {_fmt3(thread)}"
        if race["atomic"] != race["other_atomic"]:
            first += " (an atomic)" if race["other_atomic"] else " (a plain write)"
            second += " (an atomic)" if race["atomic"] else " (a plain write)"
        if not same_block:
            order = (
                "different blocks, and nothing orders them (no __threadfence() and atomic between)"
            )
        elif race["same_warp"]:
            order = "the same warp, with no __syncwarp() or __syncthreads() between"
        else:
            order = "the same block, with no __syncthreads() between"
        mixed = race["atomic"] != race["other_atomic"]
        fields: dict[str, Any] = dict(
            kernel=self.name,
            block=block,
            thread=thread,
            other_block=other_block,
            other_thread=other_thread,
            same_block=same_block,
        )
        if race["scope"] == 0:
            slot = watched[race["range"]]
            i, p = slot.arg_index, self._param(slot.arg_index)
            element = race["offset"] // max(1, slot.itemsize)
            total = slot.nbytes // max(1, slot.itemsize)
            n = int(race["raced"][race["range"]])
            name = p.name or f"arg{i}"
            what = (
                f"kernel {p.label(i).replace('argument', 'arg')} `{p.c_type}` element [{element}]"
            )
            count = f"{n} of {total} element{'s' if total != 1 else ''} of {name} raced"
            others = [
                f"{self._param(s.arg_index).label(s.arg_index).replace('argument', 'arg')}: {k}"
                for s, k in zip(watched, race["raced"], strict=True)
                if k and s is not slot
            ]
            if others:
                count += f" (other arguments too: {', '.join(others)})"
            if mixed:
                cause = (
                    f"plain writes mixed with atomics on one element of {name}; make every write "
                    "to it atomic (atomicAdd, atomicExch), or order them with a barrier"
                )
            elif same_block:
                cause = (
                    f"several threads updating one element (such as {name}[0] += v) between "
                    "barriers; use atomicAdd, reduce in shared memory first, or give each element "
                    "one writer"
                )
            else:
                cause = (
                    f"a read-modify-write such as {name}[j] += v from several blocks; use "
                    "atomicAdd, or give each element one writer"
                )
            head = f"data race in {self.name}"
            fields.update(
                scope="global",
                arg_index=i,
                arg_name=p.name,
                element=element,
                n_elements=n,
                offset_bytes=race["offset"],
            )
        else:
            array = race["symbol"]
            if array:
                offset = race["symbol_offset"]
                what = f"shared array `{array}` at byte offset {offset}"
            else:
                offset = race["offset"]
                kind = "dynamic shared memory" if race["scope"] == 2 else "shared memory"
                what = f"{kind} at byte offset {offset}"
            words = int(race["shared_words"])
            count = f"{words} 4-byte word{'s' if words != 1 else ''} of {array or 'shared memory'} raced"
            v = array or "s"
            cause = (
                "threads updating one shared variable in the same barrier interval (such as "
                f"`if (x > {v}) {v} = x;` or `{v} += x`); use an atomic (atomicMax, atomicAdd "
                "work on shared memory) or a reduction, or let one thread write, with "
                "__syncthreads() between the phases"
            )
            head = f"data race on shared memory in {self.name}"
            fields.update(
                scope="shared",
                shared_array=array,
                element=offset // max(1, race["size"]),
                n_elements=words,
                offset_bytes=offset,
            )
        return DataRace(
            f"{head}: {what} was written by {first} and then, with a different value, by "
            f"{second}: {order}. {count}. On a GPU one of the writes is lost, depending on "
            f"timing. Usual cause: {cause}.",
            **fields,
        )

    def _canary_fault(self, index: int, damage: tuple[int, int]) -> OutOfBounds:
        before, after = damage
        p = self._param(index)
        where = (
            f"up to {before} byte{'s' if before != 1 else ''} before the start"
            if before
            else f"up to {after} byte{'s' if after != 1 else ''} past the end"
        )
        return OutOfBounds(
            f"out-of-bounds write in {self.name}: kernel {p.label(index).replace('argument', 'arg')}"
            f" `{p.c_type}` was written {where} (found after the launch in the canary bytes "
            "around the buffer, so no block or thread is known; run compare_schedules or "
            "guard='start' to catch it as it happens).",
            kernel=self.name,
            arg_index=index,
            arg_name=p.name,
            access="write",
            offset_bytes=before or after,
        )


def _where(rel: int, nbytes: int, itemsize: int) -> str:
    """'at element [N], 0 bytes past the end' for a byte offset from a buffer's start."""
    element = rel // itemsize if itemsize else rel
    if rel < 0:
        return f"at element [{element}], {-rel} byte{'s' if rel != -1 else ''} before the start"
    past = rel - nbytes
    if past < max(1, itemsize):
        return f"at element [{element}], just past the end"
    return f"at element [{element}], {past} bytes past the end"


def _number_buffers(req_args: list[tuple[str, str]]) -> list[tuple[int, tuple[str, str]]]:
    """Pair each buffer argument with its slot number in the arena."""
    out = []
    j = 0
    for kind, value in req_args:
        out.append((j, (kind, value)))
        if kind == "buffer":
            j += 1
    return out


def _block_list(only: Sequence[int] | np.ndarray | None, grid: tuple[int, int, int]) -> list[int]:
    """only_blocks= as the runtime takes it: ascending, unique, each inside the grid ([] = all)."""
    if only is None:
        return []
    n = grid[0] * grid[1] * grid[2]
    a = np.asarray(only)
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
        raise UsageError(
            f"only_blocks= must be a non-empty sequence of linear block indices (ints), got {only!r}."
        )
    if a.min() < 0 or a.max() >= n:
        bad = int(a.min()) if a.min() < 0 else int(a.max())
        raise UsageError(
            f"only_blocks= names block {bad}, outside the grid {grid} ({n:,} blocks: 0 to {n - 1:,})."
        )
    return [int(x) for x in np.unique(a)]


def _parse_schedule(schedule: str, seed: int) -> tuple[str, int]:
    name, _, s = str(schedule).partition(":")
    if name not in SCHEDULES:
        close = suggest(name, SCHEDULES)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"schedule={schedule!r} must be one of {', '.join(SCHEDULES)}.{hint}")
    if s:
        if name != "random" or not s.isdigit():
            raise UsageError(f"schedule={schedule!r}: only 'random:SEED' takes a seed.")
        seed = int(s)
    if not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed={seed!r} must be an int >= 0.")
    return name, seed


def _differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a == b
    out: np.ndarray = np.logical_not(same)
    return out


def _unravel3(i: int, dims: tuple[int, int, int]) -> tuple[int, int, int]:
    return i % dims[0], (i // dims[0]) % dims[1], i // (dims[0] * dims[1])


def _unravel(i: int, dims: tuple[int, int, int]) -> str:
    x, y, z = i % dims[0], (i // dims[0]) % dims[1], i // (dims[0] * dims[1])
    return f"({x},{y},{z})"


def _fmt3(t: tuple[int, ...]) -> str:
    return "(" + ",".join(str(v) for v in t) + ")"


__all__ = [
    "DEFAULT_SCHEDULES",
    "SCHEDULES",
    "CpuFunction",
    "CpuSourceModule",
    "In",
    "InOut",
    "KernelInfo",
    "Out",
    "Param",
    "ScheduleDifference",
    "ScheduleReport",
    "shared_empty",
]
