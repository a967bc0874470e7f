"""Which backends can run here. Never raises; results are cached for the process."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here, why not if it cannot, and what it found."""

    name: str
    available: bool
    reason: str = ""
    detail: str = ""


CUDA_INSTALL_HINT = 'install PyCUDA with: pip install "gradcheck[cuda]"'


@functools.cache
def cuda_status() -> BackendStatus:
    """Is a CUDA device usable through PyCUDA? Creates no context."""
    try:
        # An old driver makes PyCUDA warn before it fails; under -W error that warning would
        # escape a function that must never raise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pycuda.driver as drv
    except ImportError as exc:
        if "libcuda" in str(exc):
            reason = f"the CUDA driver library is missing ({exc}): no NVIDIA driver on this machine"
        elif getattr(exc, "name", "") in ("pycuda", "pycuda.driver") or "pycuda" in str(exc):
            reason = f"PyCUDA is not installed ({CUDA_INSTALL_HINT})"
        else:
            reason = f"PyCUDA cannot be imported ({exc})"
        return BackendStatus("cuda", False, reason)
    try:
        drv.init()
        count = drv.Device.count()
    except (
        Exception
    ) as exc:  # PyCUDA raises its own RuntimeError/LogicError subclasses of drv.Error
        return BackendStatus("cuda", False, f"the CUDA driver reports no usable device ({exc})")
    if count == 0:
        return BackendStatus("cuda", False, "the CUDA driver sees 0 devices")
    if nvcc_path() is None:
        return BackendStatus(
            "cuda",
            False,
            "a CUDA device is there but nvcc is not (PyCUDA compiles kernels with nvcc; install the "
            "CUDA toolkit or put nvcc on PATH)",
        )
    try:
        dev = drv.Device(0)
        major, minor = dev.compute_capability()
        detail = f"{dev.name()} (sm_{major}{minor}), {count} device(s)"
    except Exception as exc:
        return BackendStatus("cuda", False, f"device 0 cannot be queried ({exc})")
    return BackendStatus("cuda", True, detail=detail)


def cxx_compiler() -> str:
    """The C++ compiler the cpu backend uses: $GRADCHECK_CXX, else g++."""
    return os.environ.get("GRADCHECK_CXX", "g++")


@functools.cache
def cpu_status() -> BackendStatus:
    """Can the cpu backend build kernels here? It needs a C++20 g++ (>= 11) on Linux."""
    cxx = cxx_compiler()
    path = shutil.which(cxx)
    if path is None:
        return BackendStatus(
            "cpu",
            False,
            f"the C++ compiler {cxx!r} is not on PATH (install g++ 11 or newer, or set GRADCHECK_CXX)",
        )
    if os.uname().sysname != "Linux":
        return BackendStatus("cpu", False, "the cpu backend runs on Linux only")
    version = compiler_version(path)
    return BackendStatus("cpu", True, detail=version)


@functools.cache
def compiler_version(path: str) -> str:
    """First line of ``path --version`` (part of every compile cache key)."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return out.splitlines()[0].strip() if out else "unknown"


@functools.cache
def nvcc_path(nvcc: str = "nvcc") -> str | None:
    """Where nvcc is, looking on PATH, then $CUDA_HOME/bin and /usr/local/cuda/bin."""
    found = shutil.which(nvcc)
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            candidate = os.path.join(root, "bin", "nvcc")
            if os.access(candidate, os.X_OK):
                return candidate
    return None
