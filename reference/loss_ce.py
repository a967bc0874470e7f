"""Softmax cross entropy, mean over unmasked rows: the loss-ce reference in JAX.

``loss(logits, targets, mask)`` is the scalar the kernel differentiates; its gradient with respect to
``logits`` comes from ``jax.grad``:

    grad[r, v] = mask[r] / n_valid * (softmax(logits[r])[v] - onehot(targets[r])[v])

with ``n_valid`` the number of rows whose mask is non-zero. With no valid row the loss and the
gradient are zero, never NaN. The numpy entry points take the kernel's float32 inputs and evaluate
in float64 (the reference) or float32 (the same-precision reference that sets the noise scale).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from ._x64 import as_jax, precision


def loss(logits: Any, targets: Any, mask: Any) -> Any:
    """Mean cross entropy over rows with ``mask != 0`` (JAX arrays in, a JAX scalar out)."""
    import jax.numpy as jnp

    return loss_rows(logits, targets, mask, jnp.sum(mask != 0))


def loss_rows(logits: Any, targets: Any, mask: Any, n_valid: Any) -> Any:
    """The rows' share of the loss of a larger batch with ``n_valid`` unmasked rows: their masked
    cross entropy summed, over ``n_valid``. Its gradient is those rows of the whole batch's
    gradient, so a batch too large to differentiate at once is differentiated a block at a time."""
    import jax
    import jax.numpy as jnp

    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[:, None].astype(jnp.int32), axis=-1)[:, 0]
    valid = mask != 0
    total = jnp.sum(jnp.where(valid, mask * nll, jnp.zeros_like(nll)))
    return jnp.where(n_valid > 0, total / jnp.maximum(n_valid, 1).astype(nll.dtype), 0.0)


@cache
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
    import jax.numpy as jnp

    n = int(np.count_nonzero(mask)) if n_valid is None else int(n_valid)
    with precision(dtype):
        x, m = as_jax(dtype, logits, mask)
        return np.asarray(_compiled()[name](x, jnp.asarray(targets), m, jnp.asarray(n, jnp.int32)))


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
