"""layernorm-bwd: the JAX reference against the closed form, the noise bound, the input suite and
the named wrong formulas, without a kernel (the float32 reference plays the correct kernel)."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck.reference import layernorm

import gradcheck
from gradcheck.compare import compare_output
from gradcheck.fd import directional
from gradcheck.ops import Case, get_op
from gradcheck.where import matching_variants

OP = get_op("layernorm-bwd")


def closed_form(case: Case) -> dict[str, np.ndarray]:
    """The textbook backward in float64 numpy, from float64 statistics."""
    a = case.arrays
    x, dy, gamma = (a[n].astype(np.float64) for n in ("x", "dy", "gamma"))
    mean, rstd = layernorm.stats(a["x"], float(case.scalars["eps"]))
    xhat = (x - mean[:, None]) * rstd[:, None]
    g = dy * gamma
    dx = rstd[:, None] * (g - g.mean(1, keepdims=True) - xhat * (g * xhat).mean(1, keepdims=True))
    return {"dx": dx, "dgamma": (dy * xhat).sum(0), "dbeta": dy.sum(0)}


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return OP.cases({"rows": 12, "hidden": 300}, 128, 0, {"eps": 1e-5})


def test_suite_covers_the_shapes_and_inputs_that_break_kernels(cases: list[Case]) -> None:
    names = [c.name for c in cases]
    assert names == [
        "plain", "large-activations", "near-constant", "rows=1",
        "hidden=127", "hidden=128", "hidden=129",
    ]  # fmt: skip
    flat = next(c for c in cases if c.name == "near-constant")
    assert np.std(flat.arrays["x"], axis=1).max() < 1e-2  # the variance is near eps


def test_reference_matches_the_closed_form(cases: list[Case]) -> None:
    for case in cases:
        ref = OP.reference(case, np.float64)
        want = closed_form(case)
        for name in ("dx", "dgamma", "dbeta"):
            np.testing.assert_allclose(ref[name], want[name], rtol=1e-9, atol=1e-12)


def test_float32_reference_passes_with_power_and_a_small_error_fails(cases: list[Case]) -> None:
    for case in cases:
        ref64, ref32 = OP.reference(case, np.float64), OP.reference(case, np.float32)
        floor = OP.noise_floor(case, ref64)
        for name in ("dx", "dgamma", "dbeta"):
            cmp = compare_output(ref32[name], ref64[name], ref32[name], floor[name])
            assert cmp.n_bad == 0 and cmp.has_power, (case.name, name)
    case = cases[0]
    ref64, ref32 = OP.reference(case, np.float64), OP.reference(case, np.float32)
    floor = OP.noise_floor(case, ref64)
    wrong = ref32["dgamma"].copy()
    wrong[7] *= np.float32(1 + 1e-3)
    cmp = compare_output(wrong, ref64["dgamma"], ref32["dgamma"], floor["dgamma"])
    assert cmp.n_bad == 1 and cmp.worst == (7,)


def test_reference_fd_agrees_over_x_gamma_and_beta(cases: list[Case]) -> None:
    case = cases[0]
    ref = OP.reference(case, np.float64)
    d = directional(OP, case, ref, {k: v.astype(np.float32) for k, v in ref.items()}, seed=0)
    assert d.agrees and d.error_bar > 0
    wrong = dict(ref, dbeta=ref["dbeta"] * 1.01)
    assert not directional(OP, case, wrong, ref, seed=0).agrees


def test_a_wrong_mean_term_is_named(cases: list[Case]) -> None:
    case = cases[0]
    variants = {v.key: v for v in OP.variants(case)}
    ref64 = OP.reference(case, np.float64)
    kernel = variants["mean-term-dy"].outputs["dx"].astype(np.float32)
    bound = 3 * OP.noise_floor(case, ref64)["dx"]
    found = matching_variants(list(variants.values()), "dx", kernel, bound)
    assert [p.keys for p in found] == [("variant:mean-term-dy",)]
    assert "mean(dy)" in found[0].text
    right = ref64["dx"].astype(np.float32)
    assert matching_variants(list(variants.values()), "dx", right, bound) == []


def test_check_with_a_callable_names_the_bug() -> None:
    def kernel(dy, x, gamma, mean, rstd):  # type: ignore[no-untyped-def]
        r = layernorm.grads(dy, x, gamma, 1e-5, np.float32)
        return r["dx"], r["dgamma"] * np.float32(2), r["dbeta"]

    report = gradcheck.check("layernorm-bwd", kernel, rows=8, hidden=64, case="plain")
    assert report.verdict == "kernel-bug"
    bad = [c for c in report.findings if c.name == "compare"]
    assert [c.output for c in bad] == ["dgamma"]
    assert "scale off by a constant factor 2" in " | ".join(bad[0].where)


def test_options_are_checked() -> None:
    with pytest.raises(gradcheck.UsageError, match="eps=0 must be a positive number"):
        gradcheck.check("layernorm-bwd", rows=2, hidden=8, eps=0)
    with pytest.raises(gradcheck.UsageError, match="no dimension or option 'vocab'"):
        gradcheck.check("layernorm-bwd", rows=2, hidden=8, vocab=3)


def test_hidden_2_cancels_below_float32_and_says_so() -> None:
    """With two features dx cancels to the rounding level: inconclusive, with the reason."""

    def kernel(dy, x, gamma, mean, rstd):  # type: ignore[no-untyped-def]
        r = layernorm.grads(dy, x, gamma, 1e-5, np.float32)
        return r["dx"], r["dgamma"], r["dbeta"]

    report = gradcheck.check("layernorm-bwd", kernel, rows=4, hidden=2, case="plain")
    assert report.verdict == "inconclusive"
    (c,) = [c for c in report.findings if c.name == "compare"]
    assert c.output == "dx" and "dx is at float32's rounding level" in c.likely_cause
