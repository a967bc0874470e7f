"""attention-bwd: the JAX reference against the closed form, the noise bound, the input suite and
the named wrong formulas, without a kernel (the float32 reference plays the correct kernel)."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck.reference import attention

import gradcheck
from gradcheck.compare import compare_output
from gradcheck.ops import Case, get_op
from gradcheck.where import matching_variants

OP = get_op("attention-bwd")
DIMS = {"batch": 1, "heads": 2, "seq": 24, "head_dim": 16}


def closed_form(case: Case) -> dict[str, np.ndarray]:
    """The backward formulas in float64 numpy, with float64 softmax (not the kernel's inputs)."""
    a = case.arrays
    q, k, v, dout = (a[n].astype(np.float64) for n in ("q", "k", "v", "dout"))
    scale, seq = float(case.scalars["scale"]), q.shape[2]
    s = scale * np.einsum("bhid,bhjd->bhij", q, k)
    if case.scalars["causal"]:
        s = np.where(np.tril(np.ones((seq, seq), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = p @ v
    ds = p * (dout @ np.swapaxes(v, -1, -2) - (dout * o).sum(-1, keepdims=True))
    return {
        "dq": scale * ds @ k,
        "dk": scale * np.swapaxes(ds, -1, -2) @ q,
        "dv": np.swapaxes(p, -1, -2) @ dout,
    }


@pytest.fixture(scope="module", params=[False, True], ids=["no-mask", "causal"])
def cases(request: pytest.FixtureRequest) -> list[Case]:
    return OP.cases(DIMS, 32, 0, {"causal": request.param})


def test_suite_covers_the_shapes_and_inputs_that_break_kernels(cases: list[Case]) -> None:
    names = [c.name for c in cases]
    causal = bool(cases[0].scalars["causal"])
    assert names[:4] == ["plain", "saturated", "large-scores", "no-mask" if causal else "causal"]
    assert names[4:] == ["seq=1", "seq=31", "seq=32", "seq=33", "head_dim=15"]
    p = np.exp(
        float(cases[1].scalars["scale"])
        * np.einsum("bhid,bhjd->bhij", cases[1].arrays["q"], cases[1].arrays["k"])
        - cases[1].arrays["lse"][..., None]
    )
    if causal:
        p = np.where(np.tril(np.ones(p.shape[-2:], bool)), p, 0)
    assert np.median(p.max(-1)) == pytest.approx(0.99, abs=2e-3)  # one key takes 99% of the softmax


def test_reference_matches_the_closed_form(cases: list[Case]) -> None:
    for case in cases:
        ref = OP.reference(case, np.float64)
        want = closed_form(case)
        for name in ("dq", "dk", "dv"):
            np.testing.assert_allclose(ref[name], want[name], rtol=1e-8, atol=1e-10)


def test_float32_reference_passes_with_power(cases: list[Case]) -> None:
    for case in cases:
        ref64, ref32 = OP.reference(case, np.float64), OP.reference(case, np.float32)
        floor = OP.noise_floor(case, ref64)
        for name in ("dq", "dk", "dv"):
            cmp = compare_output(ref32[name], ref64[name], ref32[name], floor[name])
            assert cmp.n_bad == 0, (case.name, name)
            assert cmp.has_power or case.name == "seq=1", (case.name, name)


def test_named_wrong_formulas(cases: list[Case]) -> None:
    case = cases[0]
    ref64 = OP.reference(case, np.float64)
    floor = OP.noise_floor(case, ref64)
    variants = OP.variants(case)
    by_key = {v.key: v for v in variants}
    causal = bool(case.scalars["causal"])
    expect = {
        "dv-from-p": "dv",
        "dk-unscaled": "dk",
        "causal-1" if causal else "causal-applied": "dq",
    }
    for key, output in expect.items():
        kernel = by_key[key].outputs[output].astype(np.float32)
        found = matching_variants(variants, output, kernel, 3 * floor[output])
        assert f"variant:{key}" in {k for p in found for k in p.keys}, key
    right = ref64["dq"].astype(np.float32)
    assert matching_variants(variants, "dq", right, 3 * floor["dq"]) == []


def test_check_with_a_callable_gets_the_scalars_it_names() -> None:
    seen = []

    def kernel(q, k, v, o, dout, lse, scale, causal):  # type: ignore[no-untyped-def]
        seen.append((scale, causal))
        r = attention.grads(q, k, v, dout, scale, bool(causal), np.float32)
        return r["dq"], r["dk"], r["dv"]

    report = gradcheck.check("attention-bwd", kernel, **DIMS, causal=True, case="plain")
    assert report.verdict == "pass", str(report)
    assert seen == [(pytest.approx(0.25), 1)]
    assert "--causal" in report.reproduce and report.options == {"causal": True}


@pytest.mark.parametrize("causal", [False, True], ids=["no-mask", "causal"])
def test_a_block_of_query_rows_at_a_time_gives_what_the_whole_head_gives(
    causal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At seq 8192 a head's scores (64M) are taken a block of query rows at a time: the cases, the
    references, the FD losses, the noise bound and the wrong formulas come out as they do whole."""
    import gradcheck.ops.attention_bwd as ops_attention

    dims = {**DIMS, "seq": 29}
    options = {"causal": causal}
    whole = OP.cases(dims, 32, 0, options)[:4]
    largest: list[int] = []
    real = ops_attention._probabilities

    def held(*args: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, p = real(*args)  # type: ignore[arg-type]
        largest.append(p.size)
        return s, p

    monkeypatch.setattr(attention, "QUERY_SCORES", 2 * 29 * 6)  # 2 heads x 6 rows: 5 blocks
    monkeypatch.setattr(ops_attention, "_probabilities", held)
    assert attention.query_rows((1, 2, 29, 16)) == 6
    blocked = OP.cases(dims, 32, 0, options)[:4]
    for w, b in zip(whole, blocked, strict=True):
        for name in w.arrays:
            np.testing.assert_allclose(b.arrays[name], w.arrays[name], rtol=2e-6, atol=1e-6)
        got = OP.reference(b, np.float64)  # in blocks of 6 query rows
        monkeypatch.setattr(attention, "QUERY_SCORES", 1 << 22)
        want = OP.reference(b, np.float64)
        want_floor, want_variants = OP.noise_floor(b, want), OP.variants(b)
        points = {n: np.stack([b.arrays[n], 1.01 * b.arrays[n]]) for n in ("q", "k", "v")}
        want_losses = OP.loss_values(b, points, np.float64)
        monkeypatch.setattr(attention, "QUERY_SCORES", 2 * 29 * 6)
        largest.clear()
        floor, variants = OP.noise_floor(b, got), OP.variants(b)
        assert max(largest) == 2 * 6 * 29  # every score matrix is one block of rows
        np.testing.assert_allclose(OP.loss_values(b, points, np.float64), want_losses, rtol=1e-12)
        for name in ("dq", "dk", "dv"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(floor[name], want_floor[name], rtol=1e-10)
        assert [v.key for v in variants] == [v.key for v in want_variants]
        for v, wv in zip(variants, want_variants, strict=True):
            for name, out in v.outputs.items():
                np.testing.assert_allclose(out, wv.outputs[name], rtol=1e-10, atol=1e-13)
