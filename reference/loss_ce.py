"""Softmax cross entropy, mean over unmasked rows: the loss-ce reference in JAX.

``loss(logits, targets, mask)`` is the scalar the kernel differentiates; its gradient with respect to
``logits`` comes from ``jax.grad``:

    grad[r, v] = mask[r] / n_valid * (softmax(logits[r])[v] - onehot(targets[r])[v])

with ``n_valid`` the number of rows whose mask is non-zero. With no valid row the loss and the
gradient are zero, never NaN. The numpy entry points take the kernel's float32 inputs and evaluate
in float64 (the reference) or float32 (the same-precision reference that sets the noise scale).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._x64 import built_once, cast, precision


def loss(logits: Any, targets: Any, mask: Any) -> Any:
    """Mean cross entropy over rows with ``mask != 0`` (JAX arrays in, a JAX scalar out)."""
    import jax.numpy as jnp

    return loss_rows(logits, targets, mask, jnp.sum(mask != 0))


def loss_rows(logits: Any, targets: Any, mask: Any, n_valid: Any) -> Any:
    """The rows' share of the loss of a larger batch with ``n_valid`` unmasked rows: their masked
    cross entropy summed, over ``n_valid``. Its gradient is those rows of the whole batch's
    gradient, so a batch too large to differentiate at once is differentiated a block at a time.

    Written with elementwise operations and sums only (the target's logit is picked by a one-hot
    select, exact: one term is non-zero): JAX traces it in about a third less time than
    ``log_softmax`` and ``take_along_axis``, and a new process traces every reference again."""
    import jax
    import jax.numpy as jnp

    # the row maximum only keeps exp() in range; the loss does not depend on it
    z = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    lse = jnp.log(jnp.sum(jnp.exp(z), axis=-1))
    hit = jnp.arange(logits.shape[-1], dtype=jnp.int32) == targets[:, None]
    nll = lse - jnp.sum(jnp.where(hit, z, 0.0), axis=-1)
    total = jnp.sum(jnp.where(mask != 0, mask * nll, 0.0))
    return jnp.where(n_valid > 0, total / jnp.maximum(n_valid, 1).astype(nll.dtype), 0.0)


@built_once
def _compiled() -> dict[str, Any]:
    import jax

    return {
        "loss": jax.jit(loss_rows),
        "grad": jax.jit(jax.grad(loss_rows)),
        # loss at many points along directions: FD on the reference without a Python loop
        "loss_batch": jax.jit(jax.vmap(loss_rows, in_axes=(0, None, None, None))),
    }


def _run(
    name: str,
    dtype: type[np.floating[Any]],
    logits: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    n_valid: int | None,
) -> Any:
    n = int(np.count_nonzero(mask)) if n_valid is None else int(n_valid)
    with precision(dtype):
        x, m = cast(dtype, logits, mask)
        t = np.asarray(targets, np.int32)
        return np.asarray(_compiled()[name](x, t, m, np.int32(n)))


def grad(
    logits: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    dtype: type[np.floating[Any]],
    n_valid: int | None = None,
) -> np.ndarray:
    """d loss / d logits, evaluated in ``dtype`` (np.float64 or np.float32).

    ``n_valid``: the unmasked rows of the whole batch when these rows are part of one (default:
    the unmasked rows given), as in ``loss_rows``."""
    out: np.ndarray = _run("grad", dtype, logits, targets, mask, n_valid)
    return out


def loss_value(
    logits: np.ndarray, targets: np.ndarray, mask: np.ndarray, dtype: type[np.floating[Any]]
) -> float:
    """The loss, evaluated in ``dtype``."""
    return float(_run("loss", dtype, logits, targets, mask, None))


def loss_values(
    logits_batch: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    dtype: type[np.floating[Any]],
    n_valid: int | None = None,
) -> np.ndarray:
    """The loss at each of ``logits_batch[i]`` (shape [points, rows, vocab]); ``n_valid`` as in
    ``grad``."""
    out: np.ndarray = _run("loss_batch", dtype, logits_batch, targets, mask, n_valid)
    return out.astype(np.float64)
