"""A scoped float64 switch for JAX: references never flip ``jax_enable_x64`` globally."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


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
