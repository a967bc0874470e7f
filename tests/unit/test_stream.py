"""Checks at the scale people train at: buffers used in place, comparisons a block of rows at a time."""

from __future__ import annotations

import time

import numpy as np
import pytest

import gradcheck
import gradcheck._stream as stream
from gradcheck import In, Out
from gradcheck.backends.cpu import CpuSourceModule, shared_empty
from gradcheck.compare import compare_output, merge_rows
from gradcheck.ops import get_op
from gradcheck.report import render_text

OP = get_op("loss-ce")

COPY = r"""
__global__ void copy(float* out, const float* in, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 2.0f * in[i];
}
__global__ void scribble(float* out, const float* in, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { out[i] = in[i]; if (i == 5) ((float*)in)[i] = 0.0f; }
}
__global__ void past_end(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = 1.0f;  // no bounds test: the last block writes past n
}
"""


@pytest.fixture(scope="module")
def mod() -> CpuSourceModule:
    return CpuSourceModule(COPY)


def test_shared_arrays_are_used_in_place(mod: CpuSourceModule) -> None:
    n = 1000
    x = shared_empty(n)
    x[...] = np.arange(n, dtype=np.float32)
    out = shared_empty((n,))
    mod.get_function("copy")(Out(out), In(x), np.int32(n), block=(128, 1, 1), grid=(8, 1))
    np.testing.assert_array_equal(out, 2 * np.arange(n, dtype=np.float32))
    # the same call on ordinary arrays (copied through the launch arena) agrees
    plain_out = np.empty(n, np.float32)
    mod.get_function("copy")(
        Out(plain_out), In(x.copy()), np.int32(n), block=(128, 1, 1), grid=(8, 1)
    )
    np.testing.assert_array_equal(out, plain_out)


def test_a_kernel_writing_a_shared_input_faults_and_leaves_it_as_it_was(
    mod: CpuSourceModule,
) -> None:
    n = 64
    x = shared_empty(n)
    x[...] = 3.0
    out = shared_empty(n)
    with pytest.raises(
        gradcheck.OutOfBounds, match=r"write to an input .* passed as In \(read-only\)"
    ) as exc:
        mod.get_function("scribble")(Out(out), In(x), np.int32(n), block=(64, 1, 1), grid=(1, 1))
    assert exc.value.arg_name == "in" and exc.value.offset_bytes == 5 * 4
    assert np.all(x == 3.0)


def test_shared_buffers_keep_their_guard_page(mod: CpuSourceModule) -> None:
    out = shared_empty(100)
    with pytest.raises(
        gradcheck.OutOfBounds, match=r"out-of-bounds write .* just past the end"
    ) as exc:
        mod.get_function("past_end")(Out(out), np.int32(100), block=(64, 1, 1), grid=(2, 1))
    assert exc.value.arg_name == "out"
    # guard="start" (and the race check) copy a shared array as any other: a result all the same
    mod.get_function("copy")(
        Out(out), In(np.ones(100, np.float32)), np.int32(100), block=(64, 1, 1), grid=(2, 1),
        guard="start",
    )  # fmt: skip
    assert np.all(out == 2.0)


def _blocks(case: object, output: np.ndarray, step: int) -> list[tuple[int, object]]:
    parts = []
    for lo in range(0, output.shape[0], step):
        hi = min(output.shape[0], lo + step)
        sub = OP.rows(case, lo, hi)  # type: ignore[arg-type]
        r64, r32 = OP.reference(sub, np.float64), OP.reference(sub, np.float32)
        floor = OP.noise_floor(sub, r64)
        parts.append(
            (
                lo,
                compare_output(
                    output[lo:hi], r64["grad"], r32["grad"], floor["grad"], mergeable=True
                ),
            )
        )
    return parts


def test_blocks_of_rows_merge_into_the_whole_comparison() -> None:
    case = OP.cases({"rows": 37, "vocab": 3001}, 256, 4, {})[1]  # masked: n_valid < rows
    r64, r32 = OP.reference(case, np.float64), OP.reference(case, np.float32)
    floor = OP.noise_floor(case, r64)
    out = r32["grad"].copy()
    out[3, 17] *= np.float32(1.01)  # two wrong elements, in different blocks
    out[30, 3000] = np.float32(np.nan)
    whole = compare_output(out, r64["grad"], r32["grad"], floor["grad"])
    merged = merge_rows(_blocks(case, out, 5), out.shape)  # type: ignore[arg-type]
    assert (merged.n, merged.n_bad, merged.n_nonfinite, merged.n_exact) == (
        whole.n, whole.n_bad, whole.n_nonfinite, whole.n_exact
    )  # fmt: skip
    assert merged.n_bad == 2 and merged.worst == whole.worst == (30, 3000)
    np.testing.assert_array_equal(merged.bad, whole.bad)
    assert merged.power_share == pytest.approx(whole.power_share, rel=1e-12)
    assert merged.ref32_ratio == whole.ref32_ratio
    # the median of bound / |ref| comes from histograms: within 1.2%
    assert merged.detectable_rel == pytest.approx(whole.detectable_rel, rel=0.012)


def test_a_block_reference_is_the_whole_reference_cut() -> None:
    """The rows' share of the loss keeps the whole batch's 1 / n_valid."""
    case = OP.cases({"rows": 20, "vocab": 300}, 256, 2, {})[1]
    whole = OP.reference(case, np.float64)["grad"]
    part = OP.reference(OP.rows(case, 6, 13), np.float64)["grad"]
    np.testing.assert_allclose(part, whole[6:13], rtol=1e-15, atol=0)


def test_a_large_check_runs_plain_once_and_compares_it_in_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream, "BLOCK_ELEMENTS", 1 << 19)
    seen: list[tuple[int, int]] = []
    report = gradcheck.check(
        "loss-ce", rows=48, vocab=100_003, backend="cpu", steps=lambda d, t: seen.append((d, t))
    )
    assert report.verdict == "pass"
    plain = report.cases[0]
    assert plain["name"] == "plain"
    assert (
        "the whole problem, run once on every core, compared in 10 blocks of rows"
        in plain["description"]
    )
    # which cases the repeats ran on, and on how much of the problem
    assert (
        "repeat on the sampled cases (masked, all-masked, large-logits, edge-targets on 41 of 48 "
        "rows at the full vocab)" in plain["description"]
    )
    names = {(c.case, c.name) for c in report.checks}
    assert ("plain", "schedules") not in names and ("masked", "schedules") in names
    compare = next(c for c in report.checks if c.case == "plain" and c.name == "compare")
    assert compare.numbers["elements"] == 48 * 100_003
    fd = next(c for c in report.checks if c.case == "plain" and c.name == "reference-fd")
    assert "a random direction in rows" in fd.summary and fd.verdict == "pass"
    assert seen[-1][0] == seen[-1][1] and len(seen) > 10  # a step per block
    table = render_text(report)
    plain_line = next(line for line in table.splitlines() if line.startswith("plain "))
    assert plain_line.count("ran once") == 2  # the thread-order and alignment columns
    assert "plain: logits ~ N(0, 2^2), every row unmasked; the whole problem, run once" in " ".join(
        table.split()
    )


@pytest.mark.parametrize(
    ("kernel", "where"),
    [
        ("sign-flipped", "sign flipped: kernel = -reference (in rows"),
        ("vec4-tail", "the vocab % 4 = 3 tail after the last full float4"),
    ],
)
def test_bugs_are_found_and_placed_in_a_case_compared_in_blocks(kernel: str, where: str) -> None:
    report = gradcheck.check("loss-ce", kernel, rows=48, vocab=100_003, backend="cpu", case="plain")
    assert report.verdict == "kernel-bug"
    compare = next(c for c in report.checks if c.name == "compare")
    assert compare.verdict == "kernel-bug"
    assert any(where in w for w in compare.where), compare.where


ATT = get_op("attention-bwd")


@pytest.fixture(scope="module")
def att_case() -> object:
    return ATT.cases({"batch": 2, "heads": 3, "seq": 16, "head_dim": 8}, 128, 0, {"causal": True})[
        0
    ]


def test_attention_blocks_of_heads_are_the_whole_reference_cut(att_case: object) -> None:
    whole = ATT.reference(att_case, np.float64)  # type: ignore[arg-type]
    part = ATT.reference(ATT.rows(att_case, 2, 5), np.float64)  # type: ignore[arg-type]
    for name in ("dq", "dk", "dv"):
        np.testing.assert_allclose(
            part[name][0], whole[name].reshape(6, 16, 8)[2:5], rtol=1e-13, atol=1e-15
        )


def test_attention_compared_a_head_at_a_time_finds_the_element_the_whole_comparison_finds(
    att_case: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "BLOCK_ELEMENTS", 3 * 16 * 8)  # one head per block
    r32 = ATT.reference(att_case, np.float32)  # type: ignore[arg-type]
    out = {name: a.copy() for name, a in r32.items()}
    out["dk"][1, 0, 5, 3] *= np.float32(1.01)
    merged, worst_block, _ = stream.compare_streamed(ATT, att_case, out, 3.0)  # type: ignore[arg-type]
    assert merged["dk"].n_bad == 1 and merged["dk"].worst == (1, 0, 5, 3)
    assert merged["dq"].n_bad == merged["dv"].n_bad == 0
    assert merged["dk"].bad[1, 0, 5, 3] and merged["dk"].bad.sum() == 1
    assert (worst_block.lo, worst_block.hi, worst_block.rows_text) == (3, 4, "heads 3..3")


def test_an_interrupted_comparison_stops_without_finishing_the_other_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C (here: an error from the progress callback) drops the blocks not yet started,
    however far the other threads got while the first block ran: only the blocks handed out
    (AHEAD a thread) run."""
    monkeypatch.setattr(stream, "BLOCK_ELEMENTS", 3001)  # one row per block: 60 blocks
    case = OP.cases({"rows": 60, "vocab": 3001}, 256, 0, {})[0]
    out = OP.reference(case, np.float32)
    done: list[int] = []
    real = stream.compare_block

    def counted(*args: object, **kw: object) -> stream.Block:
        done.append(1)
        if args[3] == 0:  # the first block is slow: the other thread runs on meanwhile
            time.sleep(0.5)
        return real(*args, **kw)  # type: ignore[arg-type]

    def stop() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(stream, "compare_block", counted)
    with pytest.raises(KeyboardInterrupt):
        stream.compare_streamed(OP, case, out, 3.0, tick=stop, workers=2)
    assert len(done) <= stream.AHEAD * 2 + 1  # those handed out, and one handed out after the first


LN = get_op("layernorm-bwd")


def test_layernorm_blocks_of_rows_add_up_to_the_whole_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # dx is cut into rows; dgamma and dbeta sum over the rows: each block gives its share of
    # their references and noise bound, and the kernel's output is compared with the totals
    monkeypatch.setattr(stream, "BLOCK_ELEMENTS", 7 * 64)  # 7 rows a block: 6 blocks
    case = LN.cases({"rows": 40, "hidden": 64}, 256, 3, {})[1]  # large activations
    r64, r32 = LN.reference(case, np.float64), LN.reference(case, np.float32)
    floor = LN.noise_floor(case, r64)
    out = {name: a.copy() for name, a in r32.items()}
    out["dx"][33, 5] *= np.float32(1.5)
    out["dgamma"][7] += np.float32(100 * floor["dgamma"][7])
    whole = {name: compare_output(out[name], r64[name], r32[name], floor[name]) for name in out}
    merged, worst, totals = stream.compare_streamed(LN, case, out, 3.0, workers=2)
    assert stream.block_count(LN, case) == 6
    for name in ("dx", "dgamma", "dbeta"):
        assert (merged[name].n_bad, merged[name].worst) == (whole[name].n_bad, whole[name].worst)
        assert merged[name].max_ratio == pytest.approx(whole[name].max_ratio, rel=1e-6)
    assert merged["dx"].worst == (33, 5) and merged["dgamma"].worst == (7,)
    assert merged["dbeta"].n_bad == 0
    for name in ("dgamma", "dbeta"):  # the shares add up to the whole reference
        np.testing.assert_allclose(totals[name], r64[name], rtol=1e-12, atol=1e-12)
    assert (worst.lo, worst.hi) == (28, 35) and set(worst.comparisons) == {"dx"}


def test_a_large_layernorm_check_is_compared_in_blocks_and_names_its_bugs() -> None:
    # rows x hidden above 2^22: plain runs once and is compared 512 rows at a time
    report = gradcheck.check(
        "layernorm-bwd", rows=1100, hidden=4096, backend="cpu", case="plain", fd32=True
    )
    assert report.verdict == "fd-noise"  # the hand-written float32 FD "fails"; the kernel is right
    assert "compared in 3 blocks of rows" in report.cases[0]["description"]
    fd = next(c for c in report.checks if c.name == "reference-fd")
    assert "a random direction in x of rows 512..1,023" in fd.summary and fd.verdict == "pass"
    fd32 = next(c for c in report.checks if c.name == "fd32")
    assert "the loss of rows 512..1,023 only" in fd32.summary
    bad = gradcheck.check(
        "layernorm-bwd", "thread-per-element", rows=1100, hidden=4096, backend="cpu", case="plain"
    )
    flagged = {c.output: c for c in bad.checks if c.name == "compare"}
    assert {name for name, c in flagged.items() if c.verdict == "kernel-bug"} == {
        "dx",
        "dgamma",
        "dbeta",
    }
    assert any("hidden index >= 256 (= blockDim.x)" in w for w in flagged["dx"].where)


def test_rows_larger_than_a_block_are_compared_fewer_at_a_time(
    att_case: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an attention head at seq 2048 is 4M scores of float64 temporaries: on 2 cores, one at a time
    monkeypatch.setattr(stream, "BLOCK_ELEMENTS", 100)  # a head here is 256 scores
    monkeypatch.setattr(stream.os, "cpu_count", lambda: 2)
    running: list[int] = []
    most = [0]
    block = stream.compare_block

    def counted(*args: object, **kwargs: object) -> stream.Block:
        running.append(1)
        most[0] = max(most[0], len(running))
        try:
            time.sleep(0.05)  # long enough for the blocks that may run together to meet
            return block(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            running.pop()

    monkeypatch.setattr(stream, "compare_block", counted)
    r32 = ATT.reference(att_case, np.float32)  # type: ignore[arg-type]
    merged, _, _ = stream.compare_streamed(ATT, att_case, r32, 3.0)  # type: ignore[arg-type]
    assert merged["dq"].n_bad == 0 and most[0] == 1
    # rows as large as a block run a thread per core
    monkeypatch.setattr(stream, "BLOCK_ELEMENTS", 256)
    most[0] = 0
    stream.compare_streamed(ATT, att_case, r32, 3.0)  # type: ignore[arg-type]
    assert most[0] == 2
