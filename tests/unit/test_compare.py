"""The noise bound: a correct float32 result passes, a small real error fails, and power is stated."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck._launch import poison_fill
from gradcheck.compare import compare_output, noise, poison_mask
from gradcheck.ops import get_op

OP = get_op("loss-ce")


@pytest.fixture(scope="module")
def plain() -> tuple[object, np.ndarray, np.ndarray, np.ndarray]:
    case = OP.cases({"rows": 16, "vocab": 300}, 256, 1, {})[0]
    ref64 = OP.reference(case, np.float64)
    ref32 = OP.reference(case, np.float32)
    return case, ref64["grad"], ref32["grad"], OP.noise_floor(case, ref64)["grad"]


def test_float32_reference_itself_passes(plain: tuple) -> None:  # type: ignore[type-arg]
    _, ref64, ref32, floor = plain
    cmp = compare_output(ref32, ref64, ref32, floor)
    assert cmp.n_bad == 0 and cmp.max_ratio <= 1.0
    assert cmp.has_power and cmp.detectable_rel < 1e-4


def test_an_error_of_one_part_in_ten_thousand_is_caught(plain: tuple) -> None:  # type: ignore[type-arg]
    _, ref64, ref32, floor = plain
    wrong = ref32.copy()
    wrong[5, 7] *= np.float32(1 + 1e-3)
    cmp = compare_output(wrong, ref64, ref32, floor)
    assert cmp.n_bad == 1 and cmp.worst == (5, 7)


def test_a_huge_factor_has_no_power(plain: tuple) -> None:  # type: ignore[type-arg]
    _, ref64, ref32, floor = plain
    cmp = compare_output(ref32 * np.float32(1.2), ref64, ref32, floor, factor=1e7)
    assert cmp.n_bad == 0  # a 20% error "passes" ...
    assert not cmp.has_power  # ... and the comparison says it could not have seen it


def test_unwritten_elements_are_counted_exactly(plain: tuple) -> None:  # type: ignore[type-arg]
    _, ref64, ref32, floor = plain
    out = ref32.copy()
    poison_fill(out[:, 200:])
    assert poison_mask(out).sum() == 16 * 100
    cmp = compare_output(out, ref64, ref32, floor)
    assert cmp.n_unwritten == 1600 and cmp.n_bad == 1600 and cmp.n_nonfinite == 0
    assert np.isinf(cmp.max_ratio)


def test_noise_rises_to_the_float32_reference_where_it_is_worse() -> None:
    floor = np.full((2, 3), 1e-9)
    ref64 = np.zeros((2, 3))
    ref32 = np.array([[5e-9, 0, 0], [0, 0, 0]], np.float32)
    n, ratio = noise(floor, ref64, ref32)
    assert ratio == pytest.approx(5.0, rel=1e-6)
    assert n[0] == pytest.approx(5e-9, rel=1e-6) and np.all(n[1] == 1e-9)
