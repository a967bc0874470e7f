"""gradcheck.training.diagnose_training: learning rate or gradient, on small JAX models.

Each test reads what a user reads: the verdict, the numbers in the report text, suggested_lr.
The models are tiny (softmax regression, a 2-layer tanh MLP, a quadratic) so that the exact
Hessian is cheap, and their shapes stay fixed so the jitted references compile once per model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gradcheck.reference._x64 import enable_x64
from jax.flatten_util import ravel_pytree

import gradcheck
from gradcheck._errors import UsageError
from gradcheck.training import SGD, Adam, TrainingReport, diagnose_training

Params = dict[str, np.ndarray]
Batch = tuple[np.ndarray, np.ndarray]
D, H, V, B = 6, 12, 4, 32  # inputs, hidden units, classes, rows per batch


def softmax_loss(params: Any, batch: Any) -> Any:
    x, y = batch
    logp = jax.nn.log_softmax(x @ params["w"] + params["b"])
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def mlp_loss(params: Any, batch: Any) -> Any:
    x, y = batch
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return jnp.mean(
        jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    )


def quadratic_loss(params: Any, batch: Any) -> Any:
    a, b = batch
    x = params["x"]
    return 0.5 * x @ a @ x - b @ x


def softmax_params(seed: int) -> Params:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.normal(0, 0.5, (D, V)).astype(np.float32),
        "b": rng.normal(0, 0.1, V).astype(np.float32),
    }


def mlp_params(seed: int) -> Params:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.normal(0, D**-0.5, (D, H)).astype(np.float32),
        "b1": rng.normal(0, 0.1, H).astype(np.float32),
        "w2": rng.normal(0, H**-0.5, (H, V)).astype(np.float32),
        "b2": rng.normal(0, 0.1, V).astype(np.float32),
    }


def make_batches(seed: int, n: int = 4) -> list[Batch]:
    rng = np.random.default_rng(1000 + seed)
    return [
        (rng.normal(size=(B, D)).astype(np.float32), rng.integers(0, V, B).astype(np.int32))
        for _ in range(n)
    ]


def exact_lambda_max(loss_fn: Callable[[Any, Any], Any], params: Params, batch: Batch) -> float:
    """The largest eigenvalue of the float64 Hessian, from the full matrix (tiny models only)."""
    with enable_x64():
        flat, unravel = ravel_pytree({k: jnp.asarray(v, jnp.float64) for k, v in params.items()})
        x = jnp.asarray(batch[0], jnp.float64)
        hess = jax.hessian(lambda f: loss_fn(unravel(f), (x, batch[1])))(flat)
        return float(np.linalg.eigvalsh(np.asarray(hess))[-1])


def scaled(factor: float) -> Callable[[Any, Any], Any]:
    """A gradient path that multiplies the true gradient by ``factor`` (a normalisation bug)."""

    def grad_fn(params: Any, batch: Any) -> Any:
        g = jax.grad(softmax_loss)(params, batch)
        return jax.tree_util.tree_map(lambda a: factor * a, g)

    return grad_fn


# --- float32 gradient paths computed in another order: correct, never kernel-bug -------------


def _softmax32(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def numpy_softmax_grad(order: str) -> Callable[[Params, Batch], Params]:
    """The softmax-regression gradient written out in numpy float32, summing rows in ``order``."""

    def grad_fn(params: Params, batch: Batch) -> Params:
        x, y = batch
        if order == "reversed":
            x, y = x[::-1].copy(), y[::-1].copy()
        d = _softmax32(x @ params["w"] + params["b"])
        d[np.arange(len(y)), y] -= 1
        d /= np.float32(len(y))
        if order == "sequential":  # one row at a time, as a naive per-thread loop would
            gw = np.zeros_like(params["w"])
            gb = np.zeros_like(params["b"])
            for i in range(len(y)):
                gw += np.outer(x[i], d[i])
                gb += d[i]
            return {"w": gw, "b": gb}
        return {"w": np.einsum("bi,bj->ij", x, d), "b": d.sum(axis=0)}

    return grad_fn


def numpy_mlp_grad(params: Params, batch: Batch) -> Params:
    """The MLP's backward pass by hand in numpy float32, rows in reverse order."""
    x, y = batch[0][::-1].copy(), batch[1][::-1].copy()
    h = np.tanh(x @ params["w1"] + params["b1"])
    d = _softmax32(h @ params["w2"] + params["b2"])
    d[np.arange(len(y)), y] -= 1
    d /= np.float32(len(y))
    da = (d @ params["w2"].T) * (1 - h * h)
    return {"w1": x.T @ da, "b1": da.sum(0), "w2": h.T @ d, "b2": d.sum(0)}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("order", ["reversed", "sequential", "einsum"])
def test_correct_float32_gradient_in_another_order_is_never_a_kernel_bug(
    seed: int, order: str
) -> None:
    params = softmax_params(seed)
    report = diagnose_training(
        softmax_loss, numpy_softmax_grad(order), params, make_batches(seed), lr=0.05
    )
    assert report.verdict == "pass", str(report)
    # far inside the bound, not just under it: the calibration margin
    assert max(b.ratio for b in report.batches) < 0.5, str(report)


@pytest.mark.parametrize("seed", range(3))
def test_mlp_backward_by_hand_in_float32_passes(seed: int) -> None:
    report = diagnose_training(
        mlp_loss, numpy_mlp_grad, mlp_params(seed), make_batches(seed), lr=0.1
    )
    assert report.verdict == "pass", str(report)
    assert "gradient verified on 4 of 4 batches" in str(report)
    assert report.suggested_lr is not None and report.suggested_lr > 0.1


# --- SGD: the learning rate against the exact curvature ---------------------------------------


def test_sane_sgd_lr_passes_and_suggests_more_headroom() -> None:
    params, batches = softmax_params(0), make_batches(0)
    lam = exact_lambda_max(softmax_loss, params, batches[0])
    lr = 0.3 * 2 / lam
    report = diagnose_training(softmax_loss, jax.grad(softmax_loss), params, batches, lr=lr)
    text = str(report)
    assert report.verdict == "pass", text
    assert report.suggested_lr is not None and report.suggested_lr > lr
    assert "-> 1.000 as eta -> 0" in text
    assert "above 1 on 0 of 4 batches" in text
    assert f"lr * lambda_max(H) = {lr * report.lambda_max:.3g}" in text
    assert "stable below 2" in text


def test_sgd_lr_three_times_the_edge_is_an_lr_problem() -> None:
    params, batches = softmax_params(0), make_batches(0)
    lam = exact_lambda_max(softmax_loss, params, batches[0])
    lr = 3 * 2 / lam
    report = diagnose_training(softmax_loss, jax.grad(softmax_loss), params, batches, lr=lr)
    text = str(report)
    assert report.verdict == "lr-problem", text
    assert report.lambda_max == pytest.approx(lam, rel=0.01)
    assert report.lr_lambda == pytest.approx(6.0, rel=0.01)
    assert report.suggested_lr == pytest.approx(2 / lam, rel=0.05)
    assert "the gradient is right" in text
    assert (
        f"suggested largest stable learning rate: {report.suggested_lr:.1e} (you use {lr:.3g})"
        in text
    )
    assert "lr-problem" in text.splitlines()[0]


def test_momentum_raises_the_stability_threshold() -> None:
    params, batches = softmax_params(0), make_batches(0)
    report = diagnose_training(
        softmax_loss, jax.grad(softmax_loss), params, batches, lr=0.1, optimizer="momentum"
    )
    assert report.threshold == pytest.approx(3.8)
    assert "sgd (momentum 0.9)" in str(report) and "stable below 3.8" in str(report)
    assert report.optimizer == SGD(momentum=0.9).describe()


def test_critical_step_and_sharpness_on_a_quadratic_are_exact() -> None:
    """L = x'Ax/2 - b'x: eta_c along -g is 2 g'g / g'Ag, and lambda_max is A's largest eigenvalue."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    eig = np.geomspace(0.1, 10.0, 10)
    a = ((q * eig) @ q.T).astype(np.float32)
    b = rng.normal(size=10).astype(np.float32)
    params = {"x": rng.normal(size=10).astype(np.float32)}
    g = (a.astype(np.float64) @ params["x"] - b).astype(np.float64)
    eta_c = 2 * (g @ g) / (g @ a.astype(np.float64) @ g)
    report = diagnose_training(
        quadratic_loss, jax.grad(quadratic_loss), params, [(a, b)], lr=0.05, power_iters=60
    )
    assert report.verdict == "pass", str(report)
    assert report.lambda_max == pytest.approx(10.0, rel=1e-3)
    # bisection in log space leaves a factor of 10 ** (1 / 32) either side
    assert report.batches[0].eta_c == pytest.approx(eta_c, rel=0.08)
    assert report.batches[0].lr_over_eta_c < 1


def quadratic_with_gradient_along(k: int) -> tuple[Params, tuple[np.ndarray, np.ndarray]]:
    """A quadratic (eigenvalues 0.1 ... 10) whose gradient at params is A's k-th eigenvector."""
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    a = (q * np.geomspace(0.1, 10.0, 10)) @ q.T
    x = rng.normal(size=10)
    b = a @ x - q[:, k]  # g = A x - b = q_k
    return {"x": x.astype(np.float32)}, (a.astype(np.float32), b.astype(np.float32))


def test_lr_beyond_the_sharpest_direction_is_an_lr_problem_though_this_step_descends() -> None:
    """g along the flattest direction: one step at lr still lowers the loss (eta_c = 2 / 0.1),
    but lr * lambda_max = 6 > 2, so the sharp direction diverges: the curvature alone decides."""
    params, batch = quadratic_with_gradient_along(0)
    report = diagnose_training(
        quadratic_loss, jax.grad(quadratic_loss), params, [batch], lr=0.6, power_iters=60
    )
    text = str(report)
    assert report.verdict == "lr-problem", text
    assert "above 1 on 0 of 1 batches" in text
    assert "this step still descends, but the sharpest direction will oscillate" in text
    assert "lr * lambda_max(H) = 6 " in text and "stable below 2" in text
    assert report.batches[0].eta_c == pytest.approx(20.0, rel=0.08)
    assert report.suggested_lr == pytest.approx(0.2, rel=1e-3)


def test_a_step_that_raises_the_loss_is_an_lr_problem_even_below_the_momentum_threshold() -> None:
    """g along the sharpest direction with momentum 0.9: lr * lambda_max = 3 < 3.8, but one step
    at lr overshoots (lr / eta_c = 1.5): the critical step alone decides."""
    params, batch = quadratic_with_gradient_along(9)
    report = diagnose_training(
        quadratic_loss, jax.grad(quadratic_loss), params, [batch], lr=0.3, optimizer="momentum",
        power_iters=60,
    )  # fmt: skip
    text = str(report)
    assert report.verdict == "lr-problem", text
    assert "(above 1 on 1 of 1 batches)" in text
    assert report.batches[0].lr_over_eta_c == pytest.approx(1.5, rel=0.08)
    assert "a step at this learning rate raises the batch loss" in text
    assert "lr * lambda_max(H) = 3 " in text and "stable below 3.8" in text
    assert report.suggested_lr == pytest.approx(0.2, rel=0.08)


def test_at_a_saddle_the_sharpness_is_the_largest_positive_eigenvalue() -> None:
    """Eigenvalues -20 ... 10: plain power iteration lands on -20; stability needs +10."""
    rng = np.random.default_rng(6)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    a = ((q * np.array([-20.0, -1, 0.5, 1, 2, 4, 8, 10])) @ q.T).astype(np.float32)
    params = {"x": rng.normal(size=8).astype(np.float32)}
    batch = (a, rng.normal(size=8).astype(np.float32))
    report = diagnose_training(
        quadratic_loss, jax.grad(quadratic_loss), params, [batch], lr=0.1, power_iters=80
    )
    assert report.lambda_max == pytest.approx(10.0, rel=1e-3), str(report)
    assert report.verdict == "pass", str(report)


# --- wrong gradients: kernel-bug, with the Taylor and Armijo evidence ------------------------


def test_gradient_scaled_by_two_is_a_kernel_bug_with_r_flat_at_half() -> None:
    report = diagnose_training(
        softmax_loss, scaled(2.0), softmax_params(0), make_batches(0), lr=0.05
    )
    text = str(report)
    assert report.verdict == "kernel-bug", text
    assert report.suggested_lr is None
    assert all(b.r_limit == pytest.approx(0.5, abs=0.01) for b in report.batches)
    assert "flat at 0.50, not 1" in text
    assert "norm ratio 2.00" in text and "cosine to the reference 1.00" in text
    assert "wrong on 4 of 4 batches" in text
    assert "not the learning rate" in text and "DIAGNOSTIC_GUIDE.md#lr-or-gradient" in text


def test_gradient_rotated_to_cosine_point_seven_is_a_kernel_bug() -> None:
    def rotated(params: Any, batch: Any) -> Any:
        g, unravel = ravel_pytree(jax.grad(softmax_loss)(params, batch))
        g = np.asarray(g, np.float64)
        w = np.random.default_rng(5).normal(size=g.size)
        w -= (w @ g) / (g @ g) * g
        w *= np.linalg.norm(g) / np.linalg.norm(w)
        return unravel(jnp.asarray(0.7 * g + np.sqrt(1 - 0.49) * w, jnp.float32))

    report = diagnose_training(softmax_loss, rotated, softmax_params(1), make_batches(1), lr=0.05)
    text = str(report)
    assert report.verdict == "kernel-bug", text
    assert "cosine to the reference 0.70; norm ratio 1.00" in text
    assert report.batches[0].r_limit == pytest.approx(0.7, abs=0.01)
    assert "flat at 0.70, not 1" in text


def test_sign_flipped_in_one_parameter_array_is_a_kernel_bug_there() -> None:
    def flipped_w2(params: Any, batch: Any) -> Any:
        g = dict(jax.grad(mlp_loss)(params, batch))
        g["w2"] = -g["w2"]
        return g

    report = diagnose_training(mlp_loss, flipped_w2, mlp_params(0), make_batches(0), lr=0.1)
    text = str(report)
    assert report.verdict == "kernel-bug", text
    assert "% of the error is in ['w2']" in text
    assert report.batches[0].r_limit < 0.9


def test_fully_sign_flipped_gradient_is_not_a_descent_direction() -> None:
    report = diagnose_training(
        softmax_loss, scaled(-1.0), softmax_params(2), make_batches(2), lr=0.05
    )
    text = str(report)
    assert report.verdict == "kernel-bug", text
    assert (
        "Armijo (c = 0.1): no step down to 1e-08/||g|| decreases the loss: not a descent direction"
        in text
    )
    assert "cosine to the reference -1.00" in text
    assert "flat at -1.00, not 1" in text
    assert report.batches[0].armijo_eta is None


def test_kernel_fault_in_grad_fn_is_a_kernel_bug_with_its_message() -> None:
    calls = []

    def faulting(params: Any, batch: Any) -> Any:
        calls.append(1)
        raise gradcheck.OutOfBounds("ce_grad read 4 bytes past logits", kernel="ce_grad")

    report = diagnose_training(softmax_loss, faulting, softmax_params(0), make_batches(0), lr=0.05)
    text = str(report)
    assert report.verdict == "kernel-bug", text
    assert "kernel-bug: grad_fn raised a kernel fault (batch 0 of 4" in text
    assert "OutOfBounds: ce_grad read 4 bytes past logits" in text
    assert report.suggested_lr is None and len(calls) == 1


def test_other_exceptions_from_grad_fn_propagate() -> None:
    def broken(params: Any, batch: Any) -> Any:
        raise RuntimeError("CUDA driver not initialised")

    with pytest.raises(RuntimeError, match="driver"):
        diagnose_training(softmax_loss, broken, softmax_params(0), make_batches(0), lr=0.05)


def test_nan_in_the_gradient_is_a_kernel_bug() -> None:
    def with_nan(params: Any, batch: Any) -> Any:
        g = {k: np.array(v) for k, v in jax.grad(softmax_loss)(params, batch).items()}
        g["b"][2] = np.nan
        return g

    report = diagnose_training(softmax_loss, with_nan, softmax_params(0), make_batches(0), lr=0.05)
    text = str(report)
    assert report.verdict == "kernel-bug", text
    assert "1 of 28 entries are NaN or inf (first in ['b'])" in text


# --- Adam ------------------------------------------------------------------------------------


def test_adam_at_a_sane_lr_passes() -> None:
    report = diagnose_training(
        softmax_loss, jax.grad(softmax_loss), softmax_params(0), make_batches(0), lr=1e-3,
        optimizer="adam",
    )  # fmt: skip
    text = str(report)
    assert report.verdict == "pass", text
    assert "lambda_max(P^-1 H)" in text and "stable below 38" in text
    assert report.suggested_lr is not None and report.suggested_lr > 1e-3


def test_adam_at_a_too_high_lr_is_an_lr_problem() -> None:
    report = diagnose_training(
        softmax_loss, jax.grad(softmax_loss), softmax_params(0), make_batches(0), lr=3.0,
        optimizer=Adam(),
    )  # fmt: skip
    text = str(report)
    assert report.verdict == "lr-problem", text
    assert report.lr_lambda is not None and report.lr_lambda > 38
    assert report.suggested_lr is not None and report.suggested_lr < 3.0


def test_adam_state_sets_the_update_and_the_preconditioner() -> None:
    params = softmax_params(0)
    ones = {k: np.full_like(v, 1e-2) for k, v in params.items()}
    zeros = {k: np.zeros_like(v) for k, v in params.items()}
    opt = Adam(b1=0.5, m=zeros, v=ones, step=10_000)
    report = diagnose_training(
        softmax_loss, jax.grad(softmax_loss), params, make_batches(0), lr=1e-3, optimizer=opt
    )
    assert report.threshold == pytest.approx(6.0)  # (2 + 2 b1) / (1 - b1) at b1 = 0.5
    assert "moments after step 10000" in report.optimizer
    assert report.verdict == "pass", str(report)
    # v = 1e-2 everywhere: P is almost a constant 0.1, so the sharpness is about 10 lambda_max(H)
    lam = exact_lambda_max(softmax_loss, params, make_batches(0)[0])
    assert report.lambda_max == pytest.approx(10 * lam, rel=0.15)


# --- inconclusive ----------------------------------------------------------------------------


def test_non_finite_loss_at_params_is_inconclusive() -> None:
    params = softmax_params(0)
    params["w"][0, 0] = np.inf
    report = diagnose_training(
        softmax_loss, jax.grad(softmax_loss), params, make_batches(0), lr=0.05
    )
    text = str(report)
    assert report.verdict == "inconclusive", text
    assert "the float64 loss is nan" in text and "not a pass" in text
    assert report.suggested_lr is None


def test_zero_gradient_is_inconclusive() -> None:
    def bowl(params: Any, batch: Any) -> Any:
        return jnp.sum((params["w"] - batch[0]) ** 2)

    centre = np.ones((2, 3), np.float32)
    report = diagnose_training(
        bowl, jax.grad(bowl), {"w": centre.copy()}, [(centre, np.zeros(1))], lr=0.1
    )
    assert report.verdict == "inconclusive", str(report)
    assert "the gradient is zero: no step to test" in str(report)


# --- the report ------------------------------------------------------------------------------


def test_report_json_is_versioned_and_has_no_nan() -> None:
    report = diagnose_training(
        softmax_loss, scaled(2.0), softmax_params(0), make_batches(0, n=2), lr=0.05
    )
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["schema"] == "gradcheck.training" and data["schema_version"] == 1
    assert data["verdict"] == "kernel-bug" and data["suggested_lr"] is None
    assert data["batches"][0]["eta_c"] is None  # NaN (not probed) becomes null
    assert len(data["batches"]) == 2 and data["n_params"] == 28
    assert json.loads(report.to_json())["batches"][1]["r_limit"] == pytest.approx(0.5, abs=0.01)
    taylor = data["batches"][0]["taylor"]
    assert len(taylor) >= 12 and all(t["eta"] > 0 for t in taylor)


def test_taylor_points_below_float64_resolution_are_skipped_and_said() -> None:
    report = diagnose_training(
        softmax_loss, jax.grad(softmax_loss), softmax_params(0), make_batches(0, n=1), lr=0.05
    )
    b = report.batches[0]
    skipped = [eta for eta, r in b.taylor if r is None]
    assert skipped and max(skipped) < b.resolved_below
    assert "skipped: below eta" in str(report) and "float64 rounding" in str(report)


def test_takes_max_batches_from_an_iterator_and_leaves_x64_off() -> None:
    batches = iter(make_batches(0, n=5))
    report = diagnose_training(
        softmax_loss, jax.grad(softmax_loss), softmax_params(0), batches, lr=0.05, max_batches=2
    )
    assert len(report.batches) == 2 and "verdict: pass  (2 batches, sgd" in str(report)
    assert len(list(batches)) == 3
    assert not jax.config.jax_enable_x64  # float64 was scoped to the reference
    assert isinstance(report, TrainingReport)


def test_batch_with_a_constant_leaf_and_jax_arrays() -> None:
    def tempered(params: Any, batch: Any) -> Any:
        return softmax_loss(params, (batch["x"] / batch["temperature"], batch["y"]))

    x, y = make_batches(0, n=1)[0]
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "temperature": 2.0}
    report = diagnose_training(tempered, jax.grad(tempered), softmax_params(0), [batch], lr=0.05)
    assert report.verdict == "pass", str(report)


# --- arguments -------------------------------------------------------------------------------


def _call(**changes: Any) -> TrainingReport:
    kw: dict[str, Any] = {
        "loss_fn": softmax_loss,
        "grad_fn": jax.grad(softmax_loss),
        "params": softmax_params(0),
        "batches": make_batches(0, n=1),
        "lr": 0.05,
    }
    kw.update(changes)
    return diagnose_training(**kw)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0.0}, "lr=0.0 must be positive"),
        ({"lr": float("nan")}, "must be positive and finite"),
        ({"lr": "3e-4"}, "lr='3e-4' must be a number"),
        ({"max_batches": 0}, "max_batches=0 must be an int >= 1"),
        ({"power_iters": 0}, "power_iters=0 must be an int >= 1"),
        ({"batches": []}, "batches gave no batch"),
        ({"batches": np.zeros((4, 3))}, "batches=[batch]"),
        ({"optimizer": "adamw"}, "Did you mean 'adam'?"),
        ({"optimizer": 0.9}, "neither a name nor an optimizer"),
        ({"grad_fn": lambda p, b: {"w": p["w"]}}, "has 1 arrays, params has 2"),
        ({"grad_fn": lambda p, b: {"b": p["b"], "w": p["w"].T}}, "has shape (4, 6) for ['w']"),
        ({"loss_fn": lambda p, b: p["b"] * 2}, "must return one floating scalar"),
        ({"params": {"w": np.zeros((D, V), np.int32)}}, "must be a floating array"),
        ({"grad_fn": "grad"}, "grad_fn='grad' is not callable"),
    ],
)
def test_bad_arguments_raise_usage_error(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as info:
        _call(**changes)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SGD(momentum=1.0), "SGD(momentum=1.0): momentum must be a number in [0, 1)"),
        (lambda: Adam(b1=-0.1), "Adam(b1=-0.1)"),
        (lambda: Adam(eps=0.0), "eps must be a positive number"),
        (lambda: Adam(step=-1), "step counts steps taken"),
        (lambda: Adam(m={"w": np.zeros(2)}), "Adam got m without v"),
    ],
)
def test_bad_optimizer_settings_raise_usage_error(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(UsageError) as info:
        make()
    assert message in str(info.value)


def test_adam_state_must_match_params() -> None:
    params = softmax_params(0)
    bad = Adam(m={"w": params["w"]}, v={"w": params["w"]}, step=1)
    with pytest.raises(UsageError, match=r"Adam m .* has 1 arrays, params has 2"):
        _call(optimizer=bad)


def test_module_docstring_example_runs() -> None:
    import doctest

    import gradcheck.training

    result = doctest.testmod(gradcheck.training, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_momentum_buffer_sets_the_probed_update() -> None:
    """With SGD's buffer the critical step probes -(momentum * buf + g), the step torch takes."""
    import jax.numpy as jnp

    params = {"w": jnp.asarray([1.0, -2.0], jnp.float32)}

    def loss(p: Any, batch: Any) -> Any:
        return 0.5 * jnp.sum(p["w"] ** 2)

    def grad(p: Any, batch: Any) -> Any:
        return {"w": p["w"]}

    plain = diagnose_training(loss, grad, params, [0], lr=0.1, optimizer=SGD(momentum=0.9))
    # a buffer pointing uphill (as after an overshoot) makes the real update ascend at once
    uphill = {"w": -30.0 * np.asarray(params["w"])}
    opt = SGD(momentum=0.9, buf=uphill)
    report = diagnose_training(loss, grad, params, [0], lr=0.1, optimizer=opt)
    assert plain.update == "-g" and report.update == "-(momentum*buf+g)"
    assert "buffer given" in str(report)
    assert report.batches[0].lr_over_eta_c > 1 > plain.batches[0].lr_over_eta_c
