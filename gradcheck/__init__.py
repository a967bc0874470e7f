"""gradcheck: is my CUDA kernel wrong, or is it finite-difference noise, the learning rate, or my data?

The same unmodified ``.cu`` source runs on a GPU through PyCUDA (``cuda`` backend) or on any Linux
machine through an emulator that hunts the bugs a GPU hides (``cpu`` backend)::

    import numpy as np
    import gradcheck

    mod = gradcheck.SourceModule("kernels/ce_grad.cu")          # backend="auto"
    f = mod.get_function("ce_grad")
    f(gradcheck.In(logits), gradcheck.Out(grad), np.int32(rows), block=(256, 1, 1), grid=(rows, 1))
"""

__version__ = "0.1.0"  # before the imports: submodules read it

from typing import TYPE_CHECKING, Any

from ._check import check as check
from ._errors import (
    ArithmeticFault as ArithmeticFault,
)
from ._errors import (
    BackendUnavailable as BackendUnavailable,
)
from ._errors import (
    BarrierDivergence as BarrierDivergence,
)
from ._errors import (
    CompileError as CompileError,
)
from ._errors import DataMisalignment as DataMisalignment
from ._errors import DataRace as DataRace
from ._errors import (
    DeviceAssert as DeviceAssert,
)
from ._errors import (
    GradcheckError as GradcheckError,
)
from ._errors import Inconclusive as Inconclusive
from ._errors import KernelBug as KernelBug
from ._errors import (
    KernelCrash as KernelCrash,
)
from ._errors import (
    KernelFault as KernelFault,
)
from ._errors import (
    KernelNotFound as KernelNotFound,
)
from ._errors import (
    KernelTimeout as KernelTimeout,
)
from ._errors import (
    LaunchError as LaunchError,
)
from ._errors import (
    OutOfBounds as OutOfBounds,
)
from ._errors import (
    ScheduleDependentOutput as ScheduleDependentOutput,
)
from ._errors import SignatureMismatch as SignatureMismatch
from ._errors import (
    StackOverflow as StackOverflow,
)
from ._errors import (
    UsageError as UsageError,
)
from ._errors import (
    WarpCollectiveError as WarpCollectiveError,
)
from ._launch import In as In
from ._launch import InOut as InOut
from ._launch import Launch as Launch
from ._launch import Out as Out
from .backends import (
    SourceModule as SourceModule,
)
from .backends import (
    cpu_status as cpu_status,
)
from .backends import (
    cuda_status as cuda_status,
)
from .results import Check as Check
from .results import Report as Report

if TYPE_CHECKING:
    from . import probe as probe
    from . import training as training
    from ._training import diagnose_training as diagnose_training
    from ._trainlog import diagnose_log as diagnose_log

# Imported on first use: the data probe and the training diagnoses are not needed to check a kernel
# (nor by the `gradcheck` command's run and gate), and they take a sixth of `import gradcheck`.
_LAZY = {
    "probe": ("probe", None),
    "training": ("training", None),
    "diagnose_training": ("_training", "diagnose_training"),
    "diagnose_log": ("_trainlog", "diagnose_log"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gradcheck' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    module = importlib.import_module(f".{module_name}", __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


__all__ = [
    "ArithmeticFault",
    "BackendUnavailable",
    "BarrierDivergence",
    "Check",
    "CompileError",
    "DataMisalignment",
    "DataRace",
    "DeviceAssert",
    "GradcheckError",
    "In",
    "InOut",
    "Inconclusive",
    "KernelBug",
    "KernelCrash",
    "KernelFault",
    "KernelNotFound",
    "KernelTimeout",
    "Launch",
    "LaunchError",
    "Out",
    "OutOfBounds",
    "Report",
    "ScheduleDependentOutput",
    "SignatureMismatch",
    "SourceModule",
    "StackOverflow",
    "UsageError",
    "WarpCollectiveError",
    "__version__",
    "check",
    "cpu_status",
    "cuda_status",
    "diagnose_log",
    "diagnose_training",
    "probe",
    "training",
]
