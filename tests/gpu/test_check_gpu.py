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


LN = get_op("layernorm-bwd")
ATTN = get_op("attention-bwd")
# Value bugs: wrong on any device. (missing-barrier and dgamma-race show on a GPU only by timing,
# and head-dim-tail only at the suite's odd head_dim, which every run includes.)
VALUE_BUGS = {
    "layernorm-bwd": ["mean-term-dy", "proj-no-rstd", "thread-per-element", "vec4-tail"],
    "attention-bwd": ["causal-off-by-one", "dkdv-transpose", "head-dim-tail", "no-scale-dk"],
}
SIZES = {
    "layernorm-bwd": {"rows": 64, "hidden": 768},
    "attention-bwd": {"batch": 2, "heads": 4, "seq": 128, "head_dim": 64, "causal": True},
}


@pytest.mark.parametrize(
    ("op", "kernel"),
    [("layernorm-bwd", k.name) for k in LN.kernels if k.expect == "pass"]
    + [("attention-bwd", k.name) for k in ATTN.kernels if k.expect == "pass"],
)
def test_layernorm_and_attention_correct_kernels_pass_on_the_gpu(op: str, kernel: str) -> None:
    # dk, dv (and dgamma, dbeta) are atomically accumulated: runs may differ within rounding
    report = gradcheck.check(op, kernel, backend="cuda", **SIZES[op])  # type: ignore[arg-type]
    assert report.backend == "cuda"
    assert report.verdict == "pass", str(report)


@pytest.mark.parametrize(("op", "kernel"), [(o, k) for o, ks in VALUE_BUGS.items() for k in ks])
def test_layernorm_and_attention_value_bugs_are_caught_on_the_gpu(op: str, kernel: str) -> None:
    report = gradcheck.check(op, kernel, backend="cuda", **SIZES[op])  # type: ignore[arg-type]
    assert report.verdict == "kernel-bug", str(report)
