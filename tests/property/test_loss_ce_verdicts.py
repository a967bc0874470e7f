"""loss-ce verdicts over the shapes that break kernels.

The issue's grid (vocab x block) must give zero false kernel-bug verdicts on correct kernels
written in different ways; Hypothesis then looks between the grid points, and checks that every
catalogue bug is caught whatever size the user asks for (the suite adds shapes around the block).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck
from gradcheck.ops import get_op
from gradcheck.strategies import PROFILE, checks

OP = get_op("loss-ce")
CORRECT = [k.name for k in OP.kernels if k.expect == "pass"]
BUGS = [k.name for k in OP.kernels if k.expect == "kernel-bug"]
VOCABS = (1, 2, 31, 50, 255, 256, 257, 1023, 1024, 1025, 2000, 4099, 50257)
BLOCKS = (32, 128, 256, 1024)
# The CI profile: derandomized, no deadline (first launches compile), too_slow suppressed.
SETTINGS = settings(settings.get_profile(PROFILE), max_examples=8)
# vocab biased to block - 1, block, block + 1, 2 * block + 1, primes, % 4 tails, > 1024; the whole
# input suite (case=None) at each example.
CHECKS = checks("loss-ce", case=None)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", CORRECT)
def test_issue_grid_has_no_false_kernel_bug(kernel: str) -> None:
    verdicts = {}
    for vocab in VOCABS:
        for block in BLOCKS:
            report = gradcheck.check(
                "loss-ce", kernel, vocab=vocab, rows=4, block=block, backend="cpu"
            )
            verdicts[(vocab, block)] = report.verdict
            assert report.verdict == "pass", f"vocab={vocab} block={block}\n{report}"
    assert len(verdicts) == len(VOCABS) * len(BLOCKS)


@SETTINGS
@given(CHECKS, st.sampled_from(CORRECT))
def test_correct_kernels_never_called_buggy(kw: dict[str, Any], kernel: str) -> None:
    report = gradcheck.check("loss-ce", kernel, backend="cpu", **kw)
    assert report.verdict == "pass", str(report)


@SETTINGS
@given(CHECKS, st.sampled_from(BUGS))
def test_catalogue_bugs_caught_at_any_size(kw: dict[str, Any], kernel: str) -> None:
    report = gradcheck.check("loss-ce", kernel, backend="cpu", **kw)
    assert report.verdict == "kernel-bug", str(report)
    assert all(c.reproduce for c in report.findings if c.verdict == "kernel-bug")
