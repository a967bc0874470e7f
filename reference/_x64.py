"""A scoped float64 switch for JAX: references never flip ``jax_enable_x64`` globally."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

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


def as_jax(dtype: type[np.floating[Any]], *arrays: np.ndarray) -> list[Any]:
    """``arrays`` as JAX arrays of ``dtype`` (call inside ``precision(dtype)``)."""
    import jax.numpy as jnp

    jd = jnp.float64 if dtype is np.float64 else jnp.float32
    return [jnp.asarray(a, jd) for a in arrays]
