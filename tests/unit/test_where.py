""" "Where" patterns name the shape of the wrong elements in the launch's own terms."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck.ops import Case, get_op
from gradcheck.where import describe, heatmap, texts

OP = get_op("loss-ce")


@pytest.fixture(scope="module")
def masked() -> tuple[Case, np.ndarray]:
    cases = OP.cases({"rows": 8, "vocab": 600}, 256, 2, {})
    case = next(c for c in cases if c.name == "masked")
    return case, OP.reference(case, np.float64)["grad"]


def _describe(case: Case, ref: np.ndarray, out: np.ndarray, bad: np.ndarray) -> str:
    unwritten = np.isnan(out)
    return " | ".join(texts(describe(bad, out, ref, unwritten, op=OP, case=case, block=256)))


def test_every_element_past_blockdim(masked: tuple[Case, np.ndarray]) -> None:
    case, ref = masked
    out = ref.astype(np.float32)
    out[:, 256:] = np.nan
    text = _describe(case, ref, out, np.isnan(out))
    assert "every element with vocab index >= 256 (= blockDim.x)" in text
    assert "never writes them" in text


def test_only_the_last_row(masked: tuple[Case, np.ndarray]) -> None:
    case, ref = masked
    case.arrays["mask"][-1] = 1.0  # the fixture's last row may be masked; make it count
    bad = np.zeros(ref.shape, bool)
    bad[-1] = True
    out = ref.astype(np.float32)
    out[-1] += 1
    assert "only the last row" in _describe(case, ref, out, bad)


def test_scale_factor_names_the_wrong_normaliser(masked: tuple[Case, np.ndarray]) -> None:
    case, ref = masked
    rows, n_valid = case.dims["rows"], int(case.scalars["n_valid"])
    out = (ref * (n_valid / rows)).astype(np.float32)
    bad = (ref != 0) & (out != ref)
    text = _describe(case, ref, out, bad)
    assert f"scale off by a constant factor {n_valid / rows:.6g}" in text
    assert "normalised by all rows" in text
    assert "never masked rows" in text


def test_sign_flip(masked: tuple[Case, np.ndarray]) -> None:
    case, ref = masked
    out = (-ref).astype(np.float32)
    assert "sign flipped: kernel = -reference" in _describe(case, ref, out, ref != 0)


def test_vocab_tail_after_last_float4() -> None:
    case = OP.cases({"rows": 4, "vocab": 51}, 256, 0, {})[0]
    ref = OP.reference(case, np.float64)["grad"]
    out = ref.astype(np.float32)
    out[:, 48:] = np.nan
    text = _describe(case, ref, out, np.isnan(out))
    assert "vocab index >= 48 (the vocab % 4 = 3 tail after the last full float4)" in text


def test_heatmap_marks_the_wrong_band() -> None:
    bad = np.zeros((64, 2000), bool)
    bad[:, 256:] = True
    lines = heatmap(bad, block=256, width=40, height=8)
    first = lines[0].split("|")[1]
    assert first[:5] == "     " and first[-5:] == "#####"
    assert "^ = blockDim.x (256)" in lines[-1]
