"""GPU tests run only where PyCUDA sees a CUDA device; elsewhere each is skipped with the reason."""

from __future__ import annotations

import pytest

from gradcheck.backends._detect import cuda_status, nvcc_path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    status = cuda_status()
    if not status.available:
        reason = f"no usable CUDA device: {status.reason}"
    elif nvcc_path() is None:
        reason = "a CUDA device is usable but nvcc is not (looked on PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)"
    else:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in gpu_items:
        item.add_marker(skip)
