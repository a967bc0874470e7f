"""GPU tests run only where PyCUDA sees a CUDA device; elsewhere each is skipped with the reason."""

from __future__ import annotations

import pytest

from gradcheck.backends._detect import cuda_status


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    status = cuda_status()  # covers nvcc too: PyCUDA compiles with it
    if status.available:
        return
    skip = pytest.mark.skip(reason=f"no usable CUDA device: {status.reason}")
    for item in gpu_items:
        item.add_marker(skip)
