"""loss-ce verdicts over the shapes that break kernels.

The issue's grid (vocab x block) must give zero false kernel-bug verdicts on correct kernels
written in different ways; Hypothesis then looks between the grid points, and checks that every
catalogue bug is caught whatever size the user asks for (the suite adds shapes around the block).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradcheck
from gradcheck.ops import get_op

OP = get_op("loss-ce")
CORRECT = [k.name for k in OP.kernels if k.expect == "pass"]
BUGS = [k.name for k in OP.kernels if k.expect == "kernel-bug"]
VOCABS = (1, 2, 31, 50, 255, 256, 257, 1023, 1024, 1025, 2000, 4099, 50257)
BLOCKS = (32, 128, 256, 1024)
# First launches compile: no deadline (Hypothesis's 200 ms would flag the compile, not the kernel).
SETTINGS = settings(
    deadline=None, max_examples=8, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


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


@st.composite
def sizes(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """(rows, vocab, block, seed), vocab biased to block - 1, block, block + 1 and odd tails."""
    block = draw(st.sampled_from((32, 64, 96, 128, 256, 512, 1024)))
    vocab = draw(
        st.one_of(
            st.sampled_from([1, 3, block - 1, block, block + 1, 2 * block + 1, 4 * block + 3]),
            st.integers(1, 5000),
        )
    )
    return draw(st.integers(1, 9)), max(1, vocab), block, draw(st.integers(0, 2**16))


@SETTINGS
@given(sizes(), st.sampled_from(CORRECT))
def test_correct_kernels_never_called_buggy(size: tuple[int, int, int, int], kernel: str) -> None:
    rows, vocab, block, seed = size
    report = gradcheck.check(
        "loss-ce", kernel, vocab=vocab, rows=rows, block=block, seed=seed, backend="cpu"
    )
    assert report.verdict == "pass", str(report)


@SETTINGS
@given(sizes(), st.sampled_from(BUGS))
def test_catalogue_bugs_caught_at_any_size(size: tuple[int, int, int, int], kernel: str) -> None:
    rows, vocab, block, seed = size
    report = gradcheck.check(
        "loss-ce", kernel, vocab=vocab, rows=rows, block=block, seed=seed, backend="cpu"
    )
    assert report.verdict == "kernel-bug", str(report)
    assert all(c.reproduce for c in report.findings if c.verdict == "kernel-bug")
