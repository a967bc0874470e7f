"""Where a kernel runs: ``cuda`` (PyCUDA on a GPU), ``cpu`` (the same source, emulated), ``auto``.

``auto`` picks ``cuda`` when a CUDA device is usable and ``cpu`` otherwise; the environment
variable ``GRADCHECK_BACKEND`` overrides the default. Backends import their heavy dependencies
only when used: importing this module starts no compiler and creates no CUDA context.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .._errors import BackendUnavailable, UsageError, suggest
from ._detect import BackendStatus, cpu_status, cuda_status

if TYPE_CHECKING:
    from .._launch import Launch

BackendName = Literal["auto", "cpu", "cuda"]
BACKENDS: tuple[str, ...] = ("auto", "cpu", "cuda")


class Function(Protocol):
    """A kernel ready to launch, called as in PyCUDA."""

    name: str
    last_launch: Launch | None

    def __call__(self, *args: Any, **launch: Any) -> float | None: ...

    def launch(self, *args: Any, **launch: Any) -> Launch: ...


class Module(Protocol):
    """A compiled source module, as PyCUDA's SourceModule."""

    backend: str

    def get_function(self, name: str) -> Function: ...


def resolve_backend(backend: str | None = None) -> tuple[str, str]:
    """Turn ``auto``/``cpu``/``cuda`` (or None: the environment's choice) into the backend to use.

    Returns ``(name, reason)``; raises BackendUnavailable when ``cuda`` is asked for and absent.
    """
    requested = backend or os.environ.get("GRADCHECK_BACKEND", "auto")
    if requested not in BACKENDS:
        close = suggest(requested, BACKENDS)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        source = "backend=" if backend else "GRADCHECK_BACKEND="
        raise UsageError(f"{source}{requested!r} is not a backend; use auto, cpu or cuda.{hint}")
    if requested == "cpu":
        status = cpu_status()
        if not status.available:
            raise BackendUnavailable(f"the cpu backend cannot run here: {status.reason}")
        return "cpu", "asked for"
    cuda = cuda_status()
    if requested == "cuda":
        if not cuda.available:
            raise BackendUnavailable(
                f"backend='cuda' was asked for, but {cuda.reason}. Use backend='cpu' (or 'auto') "
                "to run the same source on the CPU."
            )
        return "cuda", "asked for"
    if cuda.available:
        return "cuda", f"auto: {cuda.detail or 'a CUDA device is usable'}"
    status = cpu_status()
    if not status.available:
        raise BackendUnavailable(
            f"no backend can run here: cuda: {cuda.reason}; cpu: {status.reason}."
        )
    return "cpu", f"auto: {cuda.reason}"


def SourceModule(  # noqa: N802 - named as PyCUDA's class so launcher code runs unchanged
    source: str | os.PathLike[str],
    nvcc: str = "nvcc",
    options: list[str] | None = None,
    keep: bool = False,
    no_extern_c: bool = False,
    arch: str | None = None,
    code: str | None = None,
    cache_dir: str | None = None,
    include_dirs: list[str] | None = None,
    *,
    backend: BackendName | None = None,
    **backend_options: Any,
) -> Module:
    """Compile CUDA source (text or a path to a .cu file) for the chosen backend.

    The positional parameters are PyCUDA's. ``backend`` is ``auto`` (default), ``cpu`` or
    ``cuda``; the module records which one it got in ``.backend`` and why in ``.backend_reason``.
    ``backend_options`` go to the backend (see CpuSourceModule for the cpu backend's).

    >>> import numpy as np, gradcheck as gc
    >>> mod = gc.SourceModule("__global__ void twice(float* x) { x[threadIdx.x] *= 2; }",
    ...                       backend="cpu")
    >>> x = np.arange(4, dtype=np.float32)
    >>> mod.get_function("twice")(gc.InOut(x), block=(4, 1, 1))
    >>> x.tolist()
    [0.0, 2.0, 4.0, 6.0]
    """
    name, reason = resolve_backend(backend)
    common: dict[str, Any] = dict(
        nvcc=nvcc,
        options=options,
        keep=keep,
        no_extern_c=no_extern_c,
        arch=arch,
        code=code,
        cache_dir=cache_dir,
        include_dirs=include_dirs,
    )
    module: Any
    if name == "cuda":
        from .cuda import CudaSourceModule

        module = CudaSourceModule(source, **common, **backend_options)
    else:
        from .cpu import CpuSourceModule

        module = CpuSourceModule(source, **common, **backend_options)
    module.backend_reason = reason
    return module  # type: ignore[no-any-return]


__all__ = [
    "BACKENDS",
    "BackendStatus",
    "Function",
    "Module",
    "SourceModule",
    "cpu_status",
    "cuda_status",
    "resolve_backend",
]
