"""Launch arguments shared by both backends: wrappers, geometry, scalars, poison."""

from __future__ import annotations

import numpy as np
import pytest

import gradcheck as gc
from gradcheck._launch import check_geometry, check_scalar, count_poison, poison_fill


def test_geometry_is_padded_and_checked() -> None:
    assert check_geometry((256,), (4, 2), 0) == ((256, 1, 1), (4, 2, 1), 0)
    assert check_geometry(32, 7, 128) == ((32, 1, 1), (7, 1, 1), 128)
    with pytest.raises(gc.UsageError, match="the y dimension is -1"):
        check_geometry((32, -1), 1, 0)
    with pytest.raises(gc.UsageError, match="z dimension 65 exceeds CUDA's limit 64"):
        check_geometry((1, 1, 65), 1, 0)
    with pytest.raises(gc.UsageError, match="shared=-4"):
        check_geometry(32, 1, -4)
    with pytest.raises(gc.UsageError, match="227 KiB"):
        check_geometry(32, 1, 300_000)
    with pytest.raises(gc.UsageError, match="must be an int"):
        check_geometry((32.0, 1, 1), 1, 0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.uint8])
def test_poison_is_counted_exactly(dtype: type) -> None:
    a = np.zeros(10, dtype)
    poison_fill(a)
    assert count_poison(a) == 10
    a[3] = 1
    assert count_poison(a) == 9
    if np.dtype(dtype).kind == "f":
        assert np.isnan(a).sum() == 9
        a[4] = np.nan  # a NaN the kernel computed is not poison
        assert count_poison(a) == 8


def test_wrappers_refuse_what_a_kernel_cannot_use() -> None:
    with pytest.raises(gc.UsageError, match=r"Out\(...\) got a read-only array"):
        ro = np.zeros(3, np.float32)
        ro.flags.writeable = False
        gc.Out(ro)
    with pytest.raises(gc.UsageError, match="Python objects"):
        gc.In(np.array([object()]))
    assert repr(gc.In(np.zeros((2, 3), np.float32))) == "In(array of float32 (2, 3))"


def test_scalars_must_be_sized() -> None:
    assert check_scalar(np.float32(1.5), 0) == np.float32(1.5)
    with pytest.raises(gc.UsageError, match=r"np.float32\(0.5\)"):
        check_scalar(0.5, 2, "scale")
    with pytest.raises(gc.UsageError, match="bare numpy array"):
        check_scalar(np.zeros(2), 1)
