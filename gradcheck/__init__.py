"""gradcheck: is my CUDA kernel wrong, or is it finite-difference noise, the learning rate, or my data?

The same unmodified ``.cu`` source runs on a GPU through PyCUDA (``cuda`` backend) or on any Linux
machine through an emulator that hunts the bugs a GPU hides (``cpu`` backend)::

    import numpy as np
    import gradcheck

    mod = gradcheck.SourceModule("kernels/ce_grad.cu")          # backend="auto"
    f = mod.get_function("ce_grad")
    f(gradcheck.In(logits), gradcheck.Out(grad), np.int32(rows), block=(256, 1, 1), grid=(rows, 1))
"""

from ._errors import (
    ArithmeticFault as ArithmeticFault,
    BackendUnavailable as BackendUnavailable,
    BarrierDivergence as BarrierDivergence,
    CompileError as CompileError,
    DeviceAssert as DeviceAssert,
    GradcheckError as GradcheckError,
    KernelCrash as KernelCrash,
    KernelFault as KernelFault,
    KernelNotFound as KernelNotFound,
    KernelTimeout as KernelTimeout,
    LaunchError as LaunchError,
    OutOfBounds as OutOfBounds,
    ScheduleDependentOutput as ScheduleDependentOutput,
    StackOverflow as StackOverflow,
    UsageError as UsageError,
    WarpCollectiveError as WarpCollectiveError,
)
from ._launch import In as In, InOut as InOut, Launch as Launch, Out as Out
from .backends import SourceModule as SourceModule, cpu_status as cpu_status, cuda_status as cuda_status

__version__ = "0.1.0"

__all__ = [
    "ArithmeticFault",
    "BackendUnavailable",
    "BarrierDivergence",
    "CompileError",
    "DeviceAssert",
    "GradcheckError",
    "In",
    "InOut",
    "KernelCrash",
    "KernelFault",
    "KernelNotFound",
    "KernelTimeout",
    "Launch",
    "LaunchError",
    "Out",
    "OutOfBounds",
    "ScheduleDependentOutput",
    "SourceModule",
    "StackOverflow",
    "UsageError",
    "WarpCollectiveError",
    "__version__",
    "cpu_status",
    "cuda_status",
]
