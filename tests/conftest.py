"""Shared fixtures: a private build cache for the session, and the kernel sources under tests/kernels."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Build into a fresh cache, so the suite neither reuses nor litters the user's cache."""
    old = os.environ.get("GRADCHECK_CACHE_DIR")
    os.environ["GRADCHECK_CACHE_DIR"] = str(tmp_path_factory.mktemp("gradcheck-cache"))
    yield
    if old is None:
        os.environ.pop("GRADCHECK_CACHE_DIR", None)
    else:
        os.environ["GRADCHECK_CACHE_DIR"] = old
