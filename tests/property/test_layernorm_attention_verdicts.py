"""layernorm-bwd and attention-bwd verdicts over the shapes that break kernels.

A sweep over sizes around the block size and partial warps must give zero false kernel-bug verdicts
on the correct kernels (written in different ways) and keep them well inside the bound; Hypothesis
then looks between the sweep's points and checks that every catalogue bug is caught at any size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck
from gradcheck.ops import get_op
from gradcheck.ops._spec import spread_rows
from gradcheck.strategies import PROFILE, checks

LN = get_op("layernorm-bwd")
ATTN = get_op("attention-bwd")
LN_CORRECT = [k.name for k in LN.kernels if k.expect == "pass"]
LN_BUGS = [k.name for k in LN.kernels if k.expect == "kernel-bug"]
ATTN_CORRECT = [k.name for k in ATTN.kernels if k.expect == "pass"]
ATTN_BUGS = [k.name for k in ATTN.kernels if k.expect == "kernel-bug"]
HIDDEN = (1, 33, 257, 1025, 4099)
BLOCKS = (32, 101, 1024)  # a warp, a partial last warp, the largest block
# (seq, head_dim, block, causal): seq around the block, odd head_dims, partial warps, seq = 1
ATTN_SHAPES = (
    (1, 64, 32, True),
    (33, 61, 32, False),
    (65, 3, 101, True),
    (129, 128, 128, True),
    (200, 16, 64, False),
    (7, 256, 256, True),
)
# The CI profile: derandomized, no deadline (first launches compile), too_slow suppressed.
SETTINGS = settings(settings.get_profile(PROFILE), max_examples=6)
# Sizes biased to the block (block - 1, block, block + 1, 2 * block + 1, % 4 tails ...), blocks
# with a partial last warp (100) too, eps and causal drawn; the whole input suite at each example.
LN_CHECKS = checks("layernorm-bwd", blocks=(32, 64, 96, 100, 128, 256, 512, 1024), case=None)
# seq up to 257 (block 256 + 1) at one head: 2^17 scores.
ATTN_CHECKS = checks(
    "attention-bwd", blocks=(32, 64, 100, 128, 256), max_elements=1 << 17, batch=1, case=None
)
# The correct kernels' worst error must stay far inside the bound (3x the noise), not just under it.
MARGIN = 1.0


def _worst_ratio(report: gradcheck.Report) -> float:
    return max(c.numbers["max_ratio"] for c in report.checks if c.name == "compare")


@pytest.mark.slow
@pytest.mark.parametrize("kernel", LN_CORRECT)
def test_layernorm_sweep_has_no_false_kernel_bug(kernel: str) -> None:
    for hidden in HIDDEN:
        for block in BLOCKS:
            report = gradcheck.check(
                "layernorm-bwd", kernel, rows=3, hidden=hidden, block=block, backend="cpu"
            )
            assert report.verdict == "pass", f"hidden={hidden} block={block}\n{report}"
            assert _worst_ratio(report) < MARGIN, str(report)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ATTN_CORRECT)
def test_attention_sweep_has_no_false_kernel_bug(kernel: str) -> None:
    for seq, head_dim, block, causal in ATTN_SHAPES:
        report = gradcheck.check(
            "attention-bwd", kernel, batch=1, heads=2, seq=seq, head_dim=head_dim, block=block,
            causal=causal, backend="cpu",
        )  # fmt: skip
        assert report.verdict == "pass", f"seq={seq} head_dim={head_dim} block={block}\n{report}"
        assert _worst_ratio(report) < MARGIN, str(report)


@SETTINGS
@given(LN_CHECKS, st.sampled_from(LN_CORRECT))
def test_layernorm_correct_kernels_never_called_buggy(kw: dict[str, Any], kernel: str) -> None:
    report = gradcheck.check("layernorm-bwd", kernel, backend="cpu", **kw)
    assert report.verdict == "pass", str(report)


@SETTINGS
@given(LN_CHECKS, st.sampled_from(LN_BUGS))
def test_layernorm_bugs_caught_at_any_size(kw: dict[str, Any], kernel: str) -> None:
    report = gradcheck.check("layernorm-bwd", kernel, backend="cpu", **kw)
    assert report.verdict == "kernel-bug", str(report)
    assert all(c.reproduce for c in report.findings if c.verdict == "kernel-bug")


@SETTINGS
@given(ATTN_CHECKS, st.sampled_from(ATTN_CORRECT))
def test_attention_correct_kernels_never_called_buggy(kw: dict[str, Any], kernel: str) -> None:
    report = gradcheck.check("attention-bwd", kernel, backend="cpu", **kw)
    assert report.verdict == "pass", str(report)


@SETTINGS
@given(ATTN_CHECKS, st.sampled_from(ATTN_BUGS))
def test_attention_bugs_caught_at_any_size(kw: dict[str, Any], kernel: str) -> None:
    report = gradcheck.check("attention-bwd", kernel, backend="cpu", **kw)
    # The suite runs both mask modes and seq around the block, so a causal or seq-dependent bug
    # shows whatever mode and size are asked for.
    assert report.verdict == "kernel-bug", str(report)
    assert all(c.reproduce for c in report.findings if c.verdict == "kernel-bug")


@given(st.integers(1, 100_000).flatmap(lambda t: st.tuples(st.just(t), st.integers(1, t))))
def test_a_row_sample_is_ascending_and_holds_both_ends(total_n: tuple[int, int]) -> None:
    """The query rows attention's repeats run on (spread_rows): n distinct rows inside the head,
    ascending (the backend runs only_blocks in that order), a quarter at each end."""
    total, n = total_n
    rows = spread_rows(total, n)
    assert len(rows) == n and rows[0] == 0 and rows[-1] < total
    assert np.all(np.diff(rows) > 0)
    edge = n // 4 if n < total else 0
    assert rows[:edge].tolist() == list(range(edge))
    assert rows[n - edge :].tolist() == list(range(total - edge, total))
