"""Launch arguments shared by every backend: In/Out/InOut, geometry checks, poison values.

The calling convention is PyCUDA's: arrays travel wrapped in In/Out/InOut, scalars are sized numpy
scalars (np.int32, np.float32, ...), and geometry is given as ``block=`` / ``grid=`` / ``shared=``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ._errors import UsageError, suggest

Direction = Literal["in", "out", "inout"]

# PyCUDA's launch keywords, accepted by every backend.
LAUNCH_OPTIONS: tuple[str, ...] = ("block", "grid", "shared", "stream", "time_kernel", "texrefs")
# The cpu backend's emulator options. They mean nothing on a GPU, and the cuda backend refuses them:
# silently ignoring one would let a user believe a schedule search or a guard ran when it did not.
CPU_ONLY_OPTIONS: tuple[str, ...] = (
    "schedule",
    "seed",
    "workers",
    "strict",
    "timeout",
    "guard",
    "poison",
    "stack_bytes",
    "races",
    "on_blocks",
    "only_blocks",
)

# CUDA's limits on every current architecture (compute capability 7.0-10.x).
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
# The most dynamic shared memory any current GPU grants a block (sm_90, after opting in).
MAX_DYNAMIC_SHARED_BYTES = 227 * 1024

# What an output buffer holds before the kernel writes it. Floats get a quiet NaN with a payload
# that arithmetic does not produce, so "never written" can be told apart from "computed NaN".
POISON_BITS: dict[str, int] = {
    "float16": 0x7E5A,
    "bfloat16": 0x7FA5,  # ml_dtypes.bfloat16: a quiet NaN with a payload
    "float32": 0x7FC5A5A5,
    "float64": 0x7FF8A5A5A5A5A5A5,
}
POISON_BYTE = 0xA5  # every other dtype: each byte 0xA5 (int32 -> -1515870811)


class _Wrapped:
    """An array with the direction it travels in (host -> device, device -> host, or both)."""

    direction: Direction = "in"

    def __init__(self, array: np.ndarray) -> None:
        self.array = check_array(array, type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(array of {self.array.dtype} {self.array.shape})"


class In(_Wrapped):
    """Copied to the device before the launch; never copied back."""

    direction: Direction = "in"


class Out(_Wrapped):
    """Not copied in: the kernel sees poison (NaN for floats) and must write every element.

    Copied back after the launch.
    """

    direction: Direction = "out"


class InOut(_Wrapped):
    """Copied in before and back after the launch."""

    direction: Direction = "inout"


def reject_options(
    options: Sequence[str],
    what: str,
    accepted: Sequence[str],
    foreign: Sequence[str] = (),
    foreign_note: str = "",
) -> None:
    """Refuse the first keyword in ``options``: with ``foreign_note`` when it belongs to another
    backend (``foreign``), else with the closest accepted names."""
    for key in options:
        if key in foreign:
            raise UsageError(f"{what} got {key}=, {foreign_note}")
        close = suggest(key, accepted)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UsageError(
            f"{what} got an unexpected keyword {key}=.{hint} It accepts: {', '.join(accepted)}."
        )


def check_array(array: object, wrapper: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        got = type(array).__name__
        raise UsageError(
            f"{wrapper}(...) needs a numpy array, got {got}. "
            f"Convert it first, e.g. {wrapper}(np.asarray(x, dtype=np.float32))."
        )
    if not array.flags.c_contiguous:
        raise UsageError(
            f"{wrapper}(...) got a non-contiguous array (shape {array.shape}, strides "
            f"{array.strides}): a kernel sees raw memory. Pass np.ascontiguousarray(x)."
        )
    if array.dtype.hasobject:
        raise UsageError(f"{wrapper}(...) got an array of Python objects; kernels need numbers.")
    if wrapper in ("Out", "InOut") and not array.flags.writeable:
        raise UsageError(f"{wrapper}(...) got a read-only array; results are copied back into it.")
    return array


def poison_fill(array: np.ndarray) -> None:
    """Fill ``array`` with the poison value of its dtype."""
    bits = POISON_BITS.get(array.dtype.name)
    if bits is not None:
        array.view(f"u{array.dtype.itemsize}")[...] = bits
    else:
        array.view(np.uint8)[...] = POISON_BYTE


def count_poison(array: np.ndarray) -> int:
    """How many elements of ``array`` still hold the poison value bit for bit."""
    bits = POISON_BITS.get(array.dtype.name)
    if bits is not None:
        return int(np.count_nonzero(array.view(f"u{array.dtype.itemsize}") == bits))
    if array.dtype.itemsize == 0 or array.size == 0:
        return 0
    raw = array.view(np.uint8).reshape(array.size, array.dtype.itemsize)
    return int(np.count_nonzero(np.all(raw == POISON_BYTE, axis=1)))


def normalize_dims(value: object, what: str, limits: tuple[int, int, int]) -> tuple[int, int, int]:
    """Check a ``block=`` or ``grid=`` value and pad it to three dimensions."""
    if isinstance(value, (int, np.integer)):
        dims: Sequence[object] = (value,)
    elif isinstance(value, (tuple, list)):
        dims = value
    else:
        raise UsageError(
            f"{what}={value!r} must be a tuple of 1 to 3 positive ints, e.g. {what}=(256, 1, 1)."
        )
    if not 1 <= len(dims) <= 3:
        raise UsageError(f"{what}={value!r} must have 1 to 3 dimensions (x, y, z).")
    out = []
    for axis, d in zip("xyz", dims, strict=False):
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
            raise UsageError(f"{what}={value!r}: the {axis} dimension must be an int, got {d!r}.")
        if d <= 0:
            raise UsageError(
                f"{what}={value!r}: the {axis} dimension is {d}; every dimension must be at least 1 "
                "(CUDA refuses an empty launch)."
            )
        out.append(int(d))
    out += [1] * (3 - len(out))
    for axis, d, lim in zip("xyz", out, limits, strict=True):
        if d > lim:
            raise UsageError(
                f"{what}={value!r}: the {axis} dimension {d} exceeds CUDA's limit {lim}."
            )
    return out[0], out[1], out[2]


def check_geometry(
    block: object, grid: object, shared: object
) -> tuple[tuple[int, int, int], tuple[int, int, int], int]:
    """Validate a launch's geometry the way the CUDA driver would, with clearer messages."""
    if block is None:
        raise UsageError("block= is required, e.g. f(..., block=(256, 1, 1), grid=(rows, 1)).")
    b = normalize_dims(block, "block", MAX_BLOCK)
    threads = b[0] * b[1] * b[2]
    if threads > MAX_THREADS_PER_BLOCK:
        raise UsageError(
            f"block={block!r} has {threads} threads; CUDA allows at most {MAX_THREADS_PER_BLOCK} per "
            "block. Use fewer threads and loop (a block-stride loop), or more blocks."
        )
    g = normalize_dims(grid, "grid", MAX_GRID)
    if not isinstance(shared, (int, np.integer)) or isinstance(shared, bool) or shared < 0:
        raise UsageError(f"shared={shared!r} must be a number of bytes >= 0.")
    if shared > MAX_DYNAMIC_SHARED_BYTES:
        raise UsageError(
            f"shared={shared} bytes of dynamic shared memory exceeds {MAX_DYNAMIC_SHARED_BYTES} "
            "(227 KiB, the most any current GPU grants a block)."
        )
    return b, g, int(shared)


# The numpy scalar types a kernel parameter can take, by C type name (for messages).
SCALAR_C_NAMES: dict[str, str] = {
    "int8": "signed char",
    "uint8": "unsigned char",
    "int16": "short",
    "uint16": "unsigned short",
    "int32": "int",
    "uint32": "unsigned int",
    "int64": "long long",
    "uint64": "unsigned long long",
    "float32": "float",
    "float64": "double",
    "bool": "bool",
}


def check_scalar(value: object, index: int, name: str = "") -> np.generic:
    """A kernel scalar must be a sized numpy scalar, as in PyCUDA."""
    label = f"argument {index}" + (f" ({name})" if name else "")
    if isinstance(value, np.ndarray):
        raise UsageError(
            f"{label} is a bare numpy array: wrap it as In(x), Out(x) or InOut(x) to say how it "
            "travels to the kernel."
        )
    if isinstance(value, np.generic):
        if value.dtype.hasobject:
            raise UsageError(f"{label} is a numpy object scalar; kernels take numbers.")
        return value
    if isinstance(value, bool):
        hint = "np.bool_(...)"
    elif isinstance(value, int):
        hint = f"np.int32({value})"
    elif isinstance(value, float):
        hint = f"np.float32({value})"
    else:
        raise UsageError(
            f"{label} is a {type(value).__name__}; a kernel takes arrays wrapped in In/Out/InOut "
            "or sized numpy scalars such as np.int32(n) or np.float32(x)."
        )
    raise UsageError(
        f"{label} is a Python {type(value).__name__} ({value!r}); its size in the kernel is "
        f"ambiguous. Pass a sized numpy scalar, e.g. {hint}, matching the kernel's parameter type."
    )


@dataclass(frozen=True)
class Launch:
    """What one kernel launch did: which backend ran it, how, and what it left unwritten."""

    backend: str
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared: int
    elapsed_s: float
    schedule: str = ""
    seed: int = 0
    # Out arguments with elements the kernel never wrote: argument index -> element count.
    unwritten: dict[int, int] = field(default_factory=dict)
