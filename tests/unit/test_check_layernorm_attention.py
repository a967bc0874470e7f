"""gradcheck.check() on layernorm-bwd and attention-bwd: the shipped correct kernels pass, and every
catalogue kernel is a kernel-bug with the evidence ("where") that names its bug."""

from __future__ import annotations

from typing import Any

import pytest

import gradcheck
from gradcheck.backends.cpu import CpuFunction
from gradcheck.ops import attention_bwd, get_op

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


# --------------------------------------------------------------------------------------------
# A case too large to repeat whole: the repeats run on a sample of its query rows


@pytest.fixture
def sampled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeats on 8 of ATTN_SIZE's 40 query rows (a head at seq 8192 is sampled the same way)."""
    monkeypatch.setattr(attention_bwd, "REPEAT_SCORES", 64)
    monkeypatch.setattr(attention_bwd, "MIN_REPEAT_ROWS", 8)


SAMPLE_TEXT = "8 of 40 query rows of each head (the first 2, the last 2 and 4 spread between)"


def test_the_sample_is_the_first_and_last_rows_of_each_head_and_rows_between(sampled: None) -> None:
    case = ATTN.cases(dict(batch=1, heads=2, seq=40, head_dim=16), 32, 0, {"causal": True})[0]
    s = ATTN.repeat_sample(case, 32, None)
    assert s is not None and s.text == SAMPLE_TEXT
    rows = [0, 1, 2, 11, 20, 29, 38, 39]
    assert s.blocks.tolist() == rows + [40 + r for r in rows]  # grid = (seq, heads): x is the row
    assert ATTN.repeat_sample(case, 32, (40, 2, 1)) is not None
    assert ATTN.repeat_sample(case, 32, (20, 2, 1)) is None  # the user's own grid: no sample


def test_a_sampled_case_runs_whole_once_and_repeats_on_the_sample(
    sampled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    launches: list[tuple[bool, int | None]] = []  # (race check, blocks run when a sample)
    launch = CpuFunction.launch

    def spy(self: CpuFunction, *args: Any, **kw: Any) -> Any:
        only = kw.get("only_blocks")
        launches.append((bool(kw.get("races")), None if only is None else len(only)))
        return launch(self, *args, **kw)

    monkeypatch.setattr(CpuFunction, "launch", spy)
    report = gradcheck.check("attention-bwd", backend="cpu", case="plain", **ATTN_SIZE)  # type: ignore[arg-type]
    assert report.verdict == "pass", str(report)
    # the whole grid once (compared with the reference), then asc + race check, desc, random and
    # the other alignment on the 16 sampled blocks (8 rows of 2 heads)
    assert launches == [(False, None), (True, 16), (False, 16), (False, 16), (False, 16)]
    assert report.cases[0]["repeats_on"] == SAMPLE_TEXT
    assert SAMPLE_TEXT in report.cases[0]["description"]
    compare = _finding(report, "plain", "compare", "dq")
    assert compare.numbers["elements"] == 2 * 40 * 16  # every element of the whole run
    text = str(report)
    assert "identical (3, sample)" in text and "identical (sample)" in text
    assert f"repeat on a sample of the blocks (plain: {SAMPLE_TEXT})" in text


def test_a_missing_barrier_shows_on_the_sample(sampled: None) -> None:
    report = gradcheck.check("attention-bwd", "missing-barrier", backend="cpu", **ATTN_SIZE)  # type: ignore[arg-type]
    c = _finding(report, "plain", "schedules", "dq")
    assert c.verdict == "kernel-bug" and c.numbers["repeated_on"] == SAMPLE_TEXT
    assert "differ between thread orders" in c.summary and c.summary.endswith(f"on {SAMPLE_TEXT}")


def test_a_race_on_dk_between_blocks_is_found_on_the_sample(sampled: None) -> None:
    source = ATTN.kernel("attn-bwd").path().read_text()  # type: ignore[union-attr]
    racy = source.replace("atomicAdd(&dkj[d], sds * qi[d]);", "dkj[d] += sds * qi[d];")
    assert racy != source
    report = gradcheck.check("attention-bwd", racy, backend="cpu", case="plain", **ATTN_SIZE)  # type: ignore[arg-type]
    c = _finding(report, "plain", "fault", "")
    assert c.numbers["fault"] == "data-race" and c.numbers["arg_name"] == "dk"
    assert f"found running {SAMPLE_TEXT}" in c.where
