"""The JAX loss-ce reference: the formula in the issue, in float64, and never NaN."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck.reference import loss_ce


def closed_form(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(x)), targets] -= 1.0
    n = np.count_nonzero(mask)
    return (mask.astype(np.float64)[:, None] / max(n, 1)) * p


@pytest.fixture
def inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((6, 40)) * 3).astype(np.float32)
    targets = rng.integers(0, 40, 6).astype(np.int32)
    mask = np.array([1, 0, 1, 1, 0, 1], np.float32)
    return logits, targets, mask


def test_float64_gradient_is_the_closed_form(inputs: tuple[np.ndarray, ...]) -> None:
    g = loss_ce.grad(*inputs, np.float64)
    assert g.dtype == np.float64
    np.testing.assert_allclose(g, closed_form(*inputs), rtol=1e-13, atol=1e-16)
    assert np.all(g[[1, 4]] == 0.0)  # masked rows


def test_float32_reference_is_float32_precision(inputs: tuple[np.ndarray, ...]) -> None:
    g32 = loss_ce.grad(*inputs, np.float32)
    err = np.max(np.abs(g32 - closed_form(*inputs)))
    assert g32.dtype == np.float32
    assert 1e-12 < err < 1e-6  # float32 rounding: visible, and small


def test_no_valid_rows_gives_zeros_not_nan(inputs: tuple[np.ndarray, ...]) -> None:
    logits, targets, _ = inputs
    zero = np.zeros(len(logits), np.float32)
    for dtype in (np.float64, np.float32):
        g = loss_ce.grad(logits, targets, zero, dtype)
        assert np.all(g == 0.0)
        assert loss_ce.loss_value(logits, targets, zero, dtype) == 0.0


def test_loss_values_batch_matches_single(inputs: tuple[np.ndarray, ...]) -> None:
    logits, targets, mask = inputs
    batch = np.stack([logits, logits * 2])
    values = loss_ce.loss_values(batch, targets, mask, np.float64)
    assert values[0] == pytest.approx(loss_ce.loss_value(logits, targets, mask, np.float64))
    assert values[1] == pytest.approx(loss_ce.loss_value(logits * 2, targets, mask, np.float64))


def test_reference_does_not_flip_x64_globally(inputs: tuple[np.ndarray, ...]) -> None:
    import jax
    import jax.numpy as jnp

    loss_ce.grad(*inputs, np.float64)
    assert jnp.asarray(1.0).dtype == jnp.float32
    assert not jax.config.jax_enable_x64


def test_large_logits_stay_finite_and_exact() -> None:
    # the large-logits case: the row maximum is taken out before exp()
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((4, 30)) * 2e4).astype(np.float32)
    targets = rng.integers(0, 30, 4).astype(np.int32)
    mask = np.ones(4, np.float32)
    g = loss_ce.grad(logits, targets, mask, np.float64)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, closed_form(logits, targets, mask), rtol=1e-13, atol=1e-16)


def test_threads_asking_first_share_one_table_of_functions() -> None:
    # two tables would trace every reference twice (JAX's cache is per jitted function)
    import threading
    import time

    from gradcheck.reference._x64 import built_once

    built: list[object] = []
    gate = threading.Barrier(4)

    @built_once
    def table() -> object:
        time.sleep(0.2)  # a slow build: the other threads ask while it goes on
        built.append(object())
        return built[-1]

    got: list[object] = []

    def ask() -> None:
        gate.wait()
        got.append(table())

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and got == built * 4
