"""Finite differences: error bars on the float64 reference, and the float32 check taken apart."""

from __future__ import annotations

import numpy as np

from gradcheck.fd import directional, naive_fd32
from gradcheck.ops import get_op

OP = get_op("loss-ce")


def test_richardson_fd_agrees_with_autodiff_within_its_error_bar() -> None:
    case = OP.cases({"rows": 8, "vocab": 100}, 256, 0, {})[0]
    ref = OP.reference(case, np.float64)
    d = directional(OP, case, ref, {"grad": ref["grad"].astype(np.float32)}, seed=0)
    assert d.agrees
    assert 0 < d.error_bar < 1e-9
    assert abs(d.fd - d.autodiff) <= 3 * d.error_bar


def test_fd_disagrees_with_a_wrong_gradient() -> None:
    case = OP.cases({"rows": 8, "vocab": 100}, 256, 0, {})[0]
    ref = OP.reference(case, np.float64)["grad"]
    d = directional(OP, case, {"grad": ref * 1.01}, {"grad": ref.astype(np.float32)}, seed=0)
    assert not d.agrees


def test_float32_fd_failures_at_small_vocab_are_fd_error() -> None:
    """The field notes' story: many "failures" at vocab 50 on a correct gradient."""
    case = OP.cases({"rows": 64, "vocab": 50}, 256, 0, {})[0]
    ref = OP.reference(case, np.float64)["grad"]
    kernel = ref.astype(np.float32)
    fd = naive_fd32(
        OP, case, ref, kernel, np.zeros(ref.shape, bool),
        eps=1e-3, rtol=1e-2, atol=0.0, samples=60, seed=0,
    )  # fmt: skip
    assert fd.n == 60 and fd.n_failed > 20
    assert fd.n_noise == fd.n_failed  # every one explained by the FD error, not the kernel
    # the decomposition is exact: rounding + step + truncation = FD error
    total = fd.rounding + fd.step + fd.truncation
    np.testing.assert_allclose(total, fd.fd - fd.ref64, rtol=1e-9, atol=1e-15)
    # and the model predicts the size of the rounding part
    assert np.max(np.abs(fd.rounding)) < 10 * fd.predicted_rounding


def test_float32_fd_with_an_absolute_tolerance_has_no_power_at_large_vocab() -> None:
    case = OP.cases({"rows": 64, "vocab": 2000}, 256, 0, {})[0]
    ref = OP.reference(case, np.float64)["grad"]
    fd = naive_fd32(
        OP, case, ref, (ref * 1.2).astype(np.float32), np.ones(ref.shape, bool),
        eps=1e-3, rtol=0.0, atol=1e-3, samples=40, seed=0,
    )  # fmt: skip
    assert fd.n_failed == 0  # a 20% error "passes" every element ...
    assert fd.power_share < 0.1  # ... because the check could not have seen it
