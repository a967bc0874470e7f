"""gradcheck run loss-ce on a real GPU: the shipped kernels through PyCUDA (skipped without one)."""

from __future__ import annotations

import pytest

import gradcheck
from gradcheck.ops import get_op

OP = get_op("loss-ce")
pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("kernel", [k.name for k in OP.kernels if k.expect == "pass"])
def test_correct_kernels_pass_on_the_gpu(kernel: str) -> None:
    # fast-math uses the real __expf here: the bound's __expf terms must hold it
    for vocab in (50, 2000, 50257):
        report = gradcheck.check("loss-ce", kernel, vocab=vocab, rows=16, backend="cuda")
        assert report.backend == "cuda"
        assert report.verdict == "pass", str(report)


@pytest.mark.parametrize(
    "kernel", ["legacy-thread-per-vocab", "mask-ignored-norm", "naive-exp", "sign-flipped"]
)
def test_value_bugs_are_caught_on_the_gpu(kernel: str) -> None:
    report = gradcheck.check("loss-ce", kernel, vocab=2000, rows=64, backend="cuda")
    assert report.verdict == "kernel-bug", str(report)
