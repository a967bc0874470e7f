"""The ``cuda`` backend: the kernel source compiled by nvcc through PyCUDA and run on the GPU.

Nothing here touches PyCUDA or the GPU until a module is built: importing this file on a machine
without a GPU costs nothing. The launch convention is PyCUDA's, with one difference that matters
for gradient checks: every ``Out`` buffer starts as poison (a NaN with a recognisable payload for
floats), exactly as on the cpu backend, so elements a kernel never writes are counted in
``Launch.unwritten`` instead of silently holding whatever the allocator left there.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import (
    BackendUnavailable,
    CompileError,
    DeviceAssert,
    GradcheckError,
    KernelNotFound,
    LaunchError,
    OutOfBounds,
    UsageError,
)
from .._launch import (
    CPU_ONLY_OPTIONS,
    LAUNCH_OPTIONS,
    POISON_BITS,
    POISON_BYTE,
    SCALAR_C_NAMES,
    Direction,
    In,
    InOut,
    Launch,
    Out,
    check_array,
    check_geometry,
    check_scalar,
    count_poison,
    poison_fill,
    reject_options,
)
from ._detect import cuda_status, nvcc_path
from ._source import Source, declared_kernel_names, load_source

CPU_ONLY_MODULE_OPTIONS: tuple[str, ...] = ("nvcc_check",)
_CPU_ONLY_NOTE = (
    "a cpu-backend option: the cuda backend runs the kernel on the GPU as compiled and has no "
    "such option. Drop it, or pass backend='cpu' to SourceModule to run the same source under "
    "the emulator."
)
MODULE_OPTIONS: tuple[str, ...] = (
    "nvcc",
    "options",
    "keep",
    "no_extern_c",
    "arch",
    "code",
    "cache_dir",
    "include_dirs",
)

# Above this much dynamic shared memory CUDA refuses a launch unless the kernel opts in first.
# check_geometry allows up to the largest opt-in size, so the opt-in is made here, per launch.
DEFAULT_SHARED_LIMIT = 48 * 1024

# Driver messages (lower case) of faults CUDA documents as sticky: after one, every later call in
# the same context fails, so the user must restart the process rather than retry.
_STICKY_FAULTS = (
    "illegal memory access",
    "illegal address",
    "device-side assert",
    "misaligned address",
    "illegal instruction",
    "invalid program counter",
    "hardware stack error",
    "unspecified launch failure",
    "launch failed",
    "launch timed out",
    "uncorrectable ecc",
)
_STICKY_NOTE = (
    "the CUDA context is now unusable in this process (CUDA documents this error as sticky: "
    "every later CUDA call fails the same way); restart the process before the next GPU launch"
)


def _message(headline: str, **lines: str) -> str:
    """A multi-line error in the project's shape: headline, then labelled lines."""
    body = [f"  {label.replace('_', ' ')}: {text}" for label, text in lines.items() if text]
    return "\n".join([headline, *body])


def _text(value: object) -> str:
    """Compiler output as text: PyCUDA versions differ on whether they decode it."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _check_str_list(value: object, what: str, example: str) -> list[str] | None:
    """PyCUDA iterates these, so a bare string would silently become one flag per character."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, (list, tuple)):
        raise UsageError(f"{what}={value!r} must be a list of strings, e.g. {what}={example}.")
    items = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
    for item in items:
        if not isinstance(item, str):
            raise UsageError(f"{what}={value!r}: every entry must be a string, got {item!r}.")
    return items


class CudaSourceModule:
    """CUDA source compiled by nvcc and loaded on the GPU, as ``pycuda.compiler.SourceModule``.

    ``source`` is source text or a path to a ``.cu`` file; for a path, the file's directory is
    added to ``include_dirs`` so its quoted ``#include``s resolve as they would under nvcc.
    The first module built creates (or joins) the device's primary CUDA context.
    """

    backend = "cuda"

    def __init__(
        self,
        source: str | os.PathLike[str],
        nvcc: str = "nvcc",
        options: list[str] | None = None,
        keep: bool = False,
        no_extern_c: bool = False,
        arch: str | None = None,
        code: str | None = None,
        cache_dir: str | None = None,
        include_dirs: list[str] | None = None,
        **backend_options: object,
    ) -> None:
        reject_options(
            list(backend_options),
            "SourceModule(backend='cuda')",
            MODULE_OPTIONS,
            CPU_ONLY_MODULE_OPTIONS,
            _CPU_ONLY_NOTE,
        )
        status = cuda_status()
        if not status.available:
            raise BackendUnavailable(
                f"the cuda backend cannot run here: {status.reason}. Use backend='cpu' (or "
                "'auto') to run the same source on the CPU."
            )
        flags = _check_str_list(options, "options", "['-O3']")
        dirs = _check_str_list(include_dirs, "include_dirs", "['kernels/include']") or []
        self.source: Source = load_source(source)
        self.kernel_names: tuple[str, ...] = tuple(declared_kernel_names(self.source.text))
        self.no_extern_c = no_extern_c
        self.backend_reason = "asked for"
        if self.source.include_dir is not None:
            here = str(self.source.include_dir)
            # First, as nvcc searches the including file's own directory before any -I.
            dirs = [here, *(d for d in dirs if d != here)]

        found = nvcc_path(nvcc)
        if found is None:
            raise BackendUnavailable(
                f"the cuda backend compiles kernels with nvcc, but {nvcc!r} is not on PATH, in "
                "$CUDA_HOME/bin or in /usr/local/cuda/bin. Install the CUDA toolkit, pass "
                "nvcc='/path/to/nvcc', or use backend='cpu'."
            )
        self.nvcc = found

        import pycuda.compiler
        import pycuda.driver as drv

        self._drv: Any = drv
        # Before compiling: with arch=None PyCUDA builds for the current context's device.
        _enter_primary_context(drv)
        try:
            self.pycuda_module: Any = pycuda.compiler.SourceModule(
                self.source.text,
                nvcc=found,
                options=flags,
                keep=keep,
                no_extern_c=no_extern_c,
                arch=arch,
                code=code,
                cache_dir=cache_dir,
                include_dirs=dirs,
            )
        except drv.CompileError as exc:
            raise self._compile_error(exc) from None
        except OSError as exc:
            raise CompileError(
                f"nvcc could not be run for {self.source.display_name} ({exc}). Check that "
                f"{found} is executable and that the temporary directory is writable.",
                compiler="nvcc",
                command=[found],
            ) from exc
        except drv.Error as exc:
            # nvcc succeeded but the driver refused the binary it built.
            raise CompileError(
                _message(
                    f"the CUDA driver could not load the code nvcc built from "
                    f"{self.source.display_name}",
                    observed=f"{type(exc).__name__}: {exc}",
                    likely_cause="nvcc is newer than the driver (the driver's CUDA version must "
                    "be at least the toolkit's), or arch=/code= name a different GPU",
                    to_try="nvidia-smi shows the driver's CUDA version; use a toolkit no newer "
                    "than it, or leave arch= unset so PyCUDA targets this GPU",
                ),
                compiler="nvcc",
                command=[found, *(flags or [])],
            ) from exc

    def _compile_error(self, exc: BaseException) -> CompileError:
        command = getattr(exc, "command_line", None) or [self.nvcc]
        if isinstance(command, str):
            command = command.split()
        stdout = _text(getattr(exc, "stdout", None))
        stderr = _text(getattr(exc, "stderr", None))
        output = stderr or stdout
        first = next((ln.strip() for ln in output.splitlines() if "error" in ln.lower()), "")
        summary = f"nvcc could not compile {self.source.display_name} for the cuda backend"
        summary += f": {first}" if first else f" ({exc})"
        if not self.no_extern_c:
            if "linkage" in output.lower():
                summary += (
                    '. PyCUDA wraps the source in extern "C" { ... } unless no_extern_c=True, and '
                    "templates and overloaded kernels cannot have C linkage: pass "
                    'no_extern_c=True and declare the kernels you launch extern "C"'
                )
            summary += (
                '. Line numbers below are one past your file\'s (PyCUDA adds an extern "C" { '
                "line above the source)"
            )
        return CompileError(
            summary + ".",
            compiler="nvcc",
            command=[str(c) for c in command],
            stdout=stdout,
            stderr=stderr,
        )

    def get_function(self, name: str) -> CudaFunction:
        """The kernel ``name``, ready to launch as in PyCUDA."""
        if not isinstance(name, str):
            raise UsageError(f"get_function() takes a kernel name as a string, got {name!r}.")
        try:
            function = self.pycuda_module.get_function(name)
        except self._drv.Error as exc:
            if "not found" not in str(exc).lower():
                raise LaunchError(
                    f"the CUDA driver could not look up kernel {name!r}: {exc}"
                ) from exc
            raise KernelNotFound(name, self.kernel_names, hint=self._lookup_hint(name)) from None
        return CudaFunction(self, name, function)

    def _lookup_hint(self, name: str) -> str:
        if self.no_extern_c:
            return (
                "With no_extern_c=True nvcc compiles the source as C++ and mangles kernel names "
                f"({name!r} becomes a symbol starting '_Z{len(name)}{name}' followed by its "
                "parameter types), and PyCUDA looks kernels up by symbol: declare the kernel "
                'extern "C" __global__, or pass the mangled name (cuobjdump -symbols on a cubin '
                "lists it)."
            )
        if name in self.kernel_names:
            return (
                "The source declares it, but nvcc emitted no such symbol: check the #if / "
                "#ifdef blocks around it."
            )
        return ""

    def __repr__(self) -> str:
        kernels = ", ".join(self.kernel_names) or "no kernels"
        return f"<CudaSourceModule {self.source.display_name} ({kernels})>"


def _enter_primary_context(drv: Any) -> None:
    """Make the device's primary context current, creating it on first use.

    The primary context is the one the CUDA runtime (PyTorch, CuPy, JAX) uses too, so tensors and
    kernels from those libraries and from gradcheck can share one process without a second context.
    """
    try:
        try:
            # Imported for its side effect: the context it makes current.
            import pycuda.autoprimaryctx
        except ModuleNotFoundError as exc:
            if exc.name != "pycuda.autoprimaryctx":
                raise
            # PyCUDA before 2021.1 has no autoprimaryctx; autoinit makes a context of its own.
            import pycuda.autoinit  # noqa: F401
    except drv.Error as exc:
        raise BackendUnavailable(
            f"the cuda backend could not create a CUDA context on device 0 ({exc}). Another "
            "process may hold the GPU in exclusive mode, or it is out of memory (nvidia-smi "
            "shows both). Use backend='cpu' meanwhile."
        ) from exc


@dataclass
class _Buffer:
    """An In/Out/InOut array and, during a launch, its device copy."""

    index: int
    array: np.ndarray
    direction: Direction
    alloc: Any = None


class CudaFunction:
    """One kernel of a CudaSourceModule, launched as in PyCUDA.

    ``f(*args, block=..., grid=..., shared=..., stream=..., time_kernel=...)`` returns the kernel
    time in seconds when ``time_kernel`` is true, else None; ``f.launch(...)`` takes the same
    arguments and returns the Launch record (also kept as ``f.last_launch``).
    """

    backend = "cuda"

    def __init__(self, module: CudaSourceModule, name: str, function: Any) -> None:
        # Holding the module keeps PyCUDA's module loaded for as long as the function lives.
        self.module = module
        self.name = name
        self.pycuda_function: Any = function
        self.last_launch: Launch | None = None
        self._drv: Any = module._drv

    def __call__(
        self,
        *args: object,
        block: object = None,
        grid: object = (1, 1),
        shared: object = 0,
        stream: object = None,
        time_kernel: object = False,
        texrefs: object = None,
        **options: object,
    ) -> float | None:
        record = self.launch(
            *args,
            block=block,
            grid=grid,
            shared=shared,
            stream=stream,
            time_kernel=time_kernel,
            texrefs=texrefs,
            **options,
        )
        return record.elapsed_s if time_kernel else None

    def launch(
        self,
        *args: object,
        block: object = None,
        grid: object = (1, 1),
        shared: object = 0,
        stream: object = None,
        time_kernel: object = False,
        texrefs: object = None,
        **options: object,
    ) -> Launch:
        """Launch the kernel and return what happened; the same arguments as calling it."""
        # Everything the user can get wrong is checked before the first driver call, so a
        # mistake never leaves a half-done launch or device memory behind.
        reject_options(
            list(options), f"kernel {self.name!r}", LAUNCH_OPTIONS, CPU_ONLY_OPTIONS, _CPU_ONLY_NOTE
        )
        blk, grd, shm = check_geometry(block, grid, shared)
        if not isinstance(time_kernel, (bool, np.bool_)):
            raise UsageError(f"time_kernel={time_kernel!r} must be True or False.")
        extra: dict[str, object] = {"stream": stream}
        if texrefs is not None:
            if not isinstance(texrefs, (list, tuple)):
                raise UsageError(f"texrefs={texrefs!r} must be a list of PyCUDA TextureReferences.")
            if texrefs:
                extra["texrefs"] = list(texrefs)
        params = [self._param(i, arg) for i, arg in enumerate(args)]
        buffers = [p for p in params if isinstance(p, _Buffer)]
        drv = self._drv
        try:
            try:
                elapsed = self._run(params, buffers, blk, grd, shm, extra, bool(time_kernel))
            finally:
                free_error = self._free(buffers)
            if free_error is not None:
                raise free_error
        except drv.Error as exc:
            raise self._driver_error(exc, blk, grd, shm, buffers) from exc
        unwritten: dict[int, int] = {}
        for buf in buffers:
            if buf.direction == "out" and (n := count_poison(buf.array)):
                unwritten[buf.index] = n
        record = Launch(
            backend="cuda",
            kernel=self.name,
            grid=grd,
            block=blk,
            shared=shm,
            elapsed_s=elapsed,
            unwritten=unwritten,
        )
        self.last_launch = record
        return record

    def _param(self, index: int, arg: object) -> _Buffer | object:
        if isinstance(arg, (In, Out, InOut)):
            return _Buffer(index, arg.array, arg.direction)
        drv = self._drv
        handler = getattr(drv, "ArgumentHandler", None)
        if handler is not None and isinstance(arg, handler):
            # pycuda.driver.In/Out/InOut from code being ported: moved the same way as gradcheck's
            # own, so their outputs are poisoned too. InOut subclasses both In and Out.
            if isinstance(arg, drv.InOut):
                direction: Direction = "inout"
            elif isinstance(arg, drv.Out):
                direction = "out"
            else:
                direction = "in"
            wrapper = {"in": "In", "out": "Out", "inout": "InOut"}[direction]
            return _Buffer(index, check_array(arg.array, wrapper), direction)
        pointer_types = tuple(
            t
            for t in (
                getattr(drv, "DeviceAllocation", None),
                getattr(drv, "PooledDeviceAllocation", None),
            )
            if isinstance(t, type)
        )
        if (
            isinstance(arg, pointer_types)
            or hasattr(arg, "gpudata")
            or hasattr(arg, "__cuda_array_interface__")
        ):
            # Memory already on the device (a GPUArray, an allocation, a CuPy/PyTorch array):
            # PyCUDA passes its address; gradcheck neither copies nor poisons it.
            return arg
        return _kernel_scalar(check_scalar(arg, index), index)

    def _run(
        self,
        params: list[_Buffer | object],
        buffers: list[_Buffer],
        block: tuple[int, int, int],
        grid: tuple[int, int, int],
        shared: int,
        extra: dict[str, object],
        time_kernel: bool,
    ) -> float:
        drv = self._drv
        for buf in buffers:
            # CUDA rejects zero-byte allocations; an empty array still needs a valid pointer.
            buf.alloc = drv.mem_alloc(max(buf.array.nbytes, 1))
            if buf.array.nbytes == 0:
                continue
            if buf.direction == "out":
                _poison_device(drv, buf)
            else:
                drv.memcpy_htod(buf.alloc, buf.array)
        if shared > DEFAULT_SHARED_LIMIT:
            attribute = getattr(drv, "function_attribute", None)
            if attribute is not None:
                self.pycuda_function.set_attribute(attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, shared)
        kernel_args = [p.alloc if isinstance(p, _Buffer) else p for p in params]
        if time_kernel:
            # Events time the kernel alone, on the GPU's clock, not Python's launch overhead.
            start, end = drv.Event(), drv.Event()
            start.record(extra["stream"])
            self.pycuda_function(*kernel_args, block=block, grid=grid, shared=shared, **extra)
            end.record(extra["stream"])
            end.synchronize()
            elapsed = float(start.time_till(end)) / 1000.0
        else:
            began = time.perf_counter()
            self.pycuda_function(*kernel_args, block=block, grid=grid, shared=shared, **extra)
            # Launches are asynchronous: a fault only surfaces at the next synchronization, and
            # it must surface here, attributed to this kernel, not in some later unrelated call.
            drv.Context.synchronize()
            elapsed = time.perf_counter() - began
        for buf in buffers:
            if buf.direction != "in" and buf.array.nbytes:
                drv.memcpy_dtoh(buf.array, buf.alloc)
        return elapsed

    def _free(self, buffers: list[_Buffer]) -> BaseException | None:
        """Free every device buffer; return the first driver error instead of stopping at it.

        After a sticky fault every free fails too (current PyCUDA prints those failures, older
        versions raise them); that says nothing new and must not hide the fault that caused it.
        """
        first: BaseException | None = None
        for buf in buffers:
            if buf.alloc is None:
                continue
            try:
                buf.alloc.free()
            except self._drv.Error as exc:
                first = first or exc
            buf.alloc = None
        return first

    def _driver_error(
        self,
        exc: BaseException,
        block: tuple[int, int, int],
        grid: tuple[int, int, int],
        shared: int,
        buffers: list[_Buffer],
    ) -> GradcheckError:
        said = str(exc).strip() or type(exc).__name__
        lower = said.lower()
        where = f"kernel {self.name!r} (grid={grid}, block={block}, shared={shared}, cuda backend)"
        sticky = _STICKY_NOTE if any(s in lower for s in _STICKY_FAULTS) else ""
        if "illegal memory access" in lower or "illegal address" in lower:
            return OutOfBounds(
                _message(
                    f"illegal memory access in {where}",
                    observed=f"the GPU stopped the kernel ({said}); the GPU gives no address, "
                    "argument or thread for it",
                    likely_cause="an index past the end of a buffer: a missing `if (i < n)` "
                    "guard, or a grid larger than the data",
                    to_try="re-run the same launch with backend='cpu', which names the argument, "
                    "block and thread of the bad access (or run this script under "
                    "compute-sanitizer)",
                    note=sticky,
                ),
                kernel=self.name,
            )
        if "device-side assert" in lower:
            return DeviceAssert(
                _message(
                    f"a device-side assert() failed in {where}",
                    observed=said,
                    to_try="re-run with backend='cpu', which reports the failed condition with "
                    "its block and thread",
                    note=sticky,
                ),
                kernel=self.name,
            )
        if "too many resources" in lower or "out of resources" in lower:
            threads = block[0] * block[1] * block[2]
            return LaunchError(
                _message(
                    f"{where} could not start",
                    observed=said,
                    likely_cause=f"{threads} threads x the kernel's registers per thread is more "
                    "than one multiprocessor has",
                    to_try=f"use a smaller block, add __launch_bounds__({threads}) to the kernel "
                    "so nvcc limits its registers, or pass options=['-maxrregcount=64'] to "
                    "SourceModule",
                )
            )
        if isinstance(exc, MemoryError) or "out of memory" in lower:
            total = sum(b.array.nbytes for b in buffers)
            return LaunchError(
                _message(
                    f"{where}: the GPU has no room for the arguments",
                    observed=f"{said} while allocating {total:,} bytes for the In/Out/InOut "
                    "arguments",
                    to_try="free GPU memory held elsewhere in this process (another framework's "
                    "cache, e.g. torch.cuda.empty_cache()) or use smaller inputs",
                )
            )
        cause = ""
        if shared > DEFAULT_SHARED_LIMIT and ("invalid" in lower or "argument" in lower):
            cause = (
                f"shared={shared} bytes is above the 48 KiB every GPU grants by default, and more "
                "than this GPU allows a block after opting in"
            )
        return LaunchError(
            _message(
                f"{where} failed",
                observed=f"the CUDA driver said: {said}",
                likely_cause=cause,
                note=sticky,
            )
        )

    def __repr__(self) -> str:
        return f"<CudaFunction {self.name!r} of {self.module.source.display_name}>"


def _poison_device(drv: Any, buf: _Buffer) -> None:
    """Fill a device buffer with the poison value of its dtype, as the cpu backend does."""
    array = buf.array
    name = array.dtype.name
    if name == "float32":
        drv.memset_d32(buf.alloc, POISON_BITS[name], array.size)
    elif name == "float16":
        drv.memset_d16(buf.alloc, POISON_BITS[name], array.size)
    elif name in POISON_BITS:
        # No 64-bit memset in the driver API: poison a host copy and send it.
        host = np.empty_like(array)
        poison_fill(host)
        drv.memcpy_htod(buf.alloc, host)
    else:
        drv.memset_d8(buf.alloc, POISON_BYTE, array.nbytes)


def _kernel_scalar(value: np.generic, index: int) -> np.generic:
    """The scalar as PyCUDA must pack it to match the kernel parameter's bytes."""
    name = value.dtype.name
    if name == "bool":
        # PyCUDA packs only np.number; a C++ bool is one byte holding 0 or 1.
        return np.uint8(bool(value))
    if name == "float16":
        # Same bits, as a type PyCUDA's struct packing knows, for a __half parameter.
        return value.view(np.uint16)
    if name not in SCALAR_C_NAMES:
        raise UsageError(
            f"argument {index} is a numpy {name} scalar, which no kernel parameter type "
            f"matches on the cuda backend. Use one of: {', '.join(SCALAR_C_NAMES)}, float16."
        )
    return value


__all__ = ["CPU_ONLY_MODULE_OPTIONS", "CPU_ONLY_OPTIONS", "CudaFunction", "CudaSourceModule"]
