"""gradcheck.check() on layernorm-bwd and attention-bwd: the shipped correct kernels pass, and every
catalogue kernel is a kernel-bug with the evidence ("where") that names its bug."""

from __future__ import annotations

import pytest

import gradcheck
from gradcheck.ops import get_op

LN = get_op("layernorm-bwd")
ATTN = get_op("attention-bwd")
LN_SIZE = {"rows": 16, "hidden": 300, "block": 128}
ATTN_SIZE = {"batch": 1, "heads": 2, "seq": 40, "head_dim": 16, "block": 32, "causal": True}

# kernel -> (case, check, output, text that must be in its summary or where)
LN_CATALOGUE = {
    "missing-barrier": ("plain", "schedules", "dx", "differ between thread orders"),
    "dgamma-race": ("plain", "fault", "", "300 of 300 elements of dgamma raced"),
    "mean-term-dy": ("plain", "compare", "dx", "the mean term uses dy, not g = dy * gamma"),
    "proj-no-rstd": ("large-activations", "compare", "dx", "(x - mean) in place of xhat"),
    "thread-per-element": ("plain", "compare", "dx", "hidden index >= 128 (= blockDim.x)"),
    "vec4-tail": ("hidden=127", "compare", "dgamma", "the hidden % 4 = 3 tail"),
}
ATTN_CATALOGUE = {
    "causal-off-by-one": (
        "plain",
        "compare",
        "dq",
        "the causal mask j < i (the diagonal key left out)",
    ),
    "dkdv-transpose": ("plain", "compare", "dv", "dv = P dO (P where P^T belongs)"),
    "head-dim-tail": ("head_dim=15", "compare", "dq", "the head_dim % 4 = 3 tail dropped"),
    "missing-barrier": ("plain", "schedules", "dq", "differ between thread orders"),
    "no-scale-dk": ("plain", "compare", "dk", "dk without the softmax scale"),
}


def _finding(report: gradcheck.Report, case: str, check: str, output: str) -> gradcheck.Check:
    found = [
        c
        for c in report.checks
        if c.case == case and c.name == check and (not output or c.output == output)
    ]
    assert found, f"no {check} {output} check on case {case}:\n{report}"
    return found[0]


def test_catalogues_are_covered() -> None:
    assert {k.name for k in LN.kernels if k.expect == "kernel-bug"} == set(LN_CATALOGUE)
    assert {k.name for k in ATTN.kernels if k.expect == "kernel-bug"} == set(ATTN_CATALOGUE)


@pytest.mark.parametrize("name", [k.name for k in LN.kernels if k.expect == "pass"])
def test_layernorm_correct_kernels_pass(name: str) -> None:
    report = gradcheck.check("layernorm-bwd", name, backend="cpu", **LN_SIZE)  # type: ignore[arg-type]
    assert report.verdict == "pass", str(report)
    assert {c.output for c in report.checks if c.name == "compare"} == {"dx", "dgamma", "dbeta"}


@pytest.mark.parametrize("name", sorted(LN_CATALOGUE))
def test_layernorm_catalogue_kernel_is_a_kernel_bug_with_its_where(name: str) -> None:
    case, check, output, text = LN_CATALOGUE[name]
    report = gradcheck.check("layernorm-bwd", name, backend="cpu", **LN_SIZE)  # type: ignore[arg-type]
    assert report.verdict == "kernel-bug" and report.exit_code == 1
    c = _finding(report, case, check, output)
    assert c.verdict == "kernel-bug"
    assert text in c.summary + " | " + " | ".join(c.where)
    assert c.reproduce.startswith("gradcheck run layernorm-bwd --rows ")
    assert f"--kernel {name}" in c.reproduce


@pytest.mark.parametrize("name", [k.name for k in ATTN.kernels if k.expect == "pass"])
def test_attention_correct_kernels_pass(name: str) -> None:
    report = gradcheck.check("attention-bwd", name, backend="cpu", **ATTN_SIZE)  # type: ignore[arg-type]
    assert report.verdict == "pass", str(report)


@pytest.mark.parametrize("name", sorted(ATTN_CATALOGUE))
def test_attention_catalogue_kernel_is_a_kernel_bug_with_its_where(name: str) -> None:
    case, check, output, text = ATTN_CATALOGUE[name]
    report = gradcheck.check("attention-bwd", name, backend="cpu", **ATTN_SIZE)  # type: ignore[arg-type]
    assert report.verdict == "kernel-bug"
    c = _finding(report, case, check, output)
    assert c.verdict == "kernel-bug"
    assert text in c.summary + " | " + " | ".join(c.where)
    assert "--causal" in c.reproduce and f"--kernel {name}" in c.reproduce
