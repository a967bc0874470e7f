"""A scoped float64 switch for JAX (references never flip ``jax_enable_x64`` globally), and how the
references call their jitted functions."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np


@contextlib.contextmanager
def enable_x64() -> Iterator[None]:
    """Run the enclosed JAX code with 64-bit types, restoring the caller's setting afterwards."""
    import importlib

    import jax

    manager: Any = getattr(jax, "enable_x64", None)
    if manager is None:  # older JAX keeps it under experimental
        manager = importlib.import_module("jax.experimental").enable_x64
    with manager(True):
        yield


def precision(dtype: type[np.floating[Any]]) -> contextlib.AbstractContextManager[None]:
    """The JAX context for references evaluated in ``dtype``: float64 scoped on, float32 as is."""
    return enable_x64() if dtype is np.float64 else contextlib.nullcontext()


def cast(dtype: type[np.floating[Any]], *arrays: np.ndarray) -> list[np.ndarray]:
    """``arrays`` in ``dtype``, as numpy arrays: a jitted function takes them as they are, where
    ``jnp.asarray`` would compile a conversion function of its own for every shape."""
    return [np.asarray(a, dtype) for a in arrays]


T = TypeVar("T")


def built_once(build: Callable[[], T]) -> Callable[[], T]:
    """``functools.cache`` for a reference's table of jitted functions, safe across threads: two
    threads asking first would otherwise each build (and trace) a table of their own."""
    lock = threading.Lock()
    made: list[T] = []

    @functools.wraps(build)
    def get() -> T:
        with lock:
            if not made:
                made.append(build())
        return made[0]

    return get
