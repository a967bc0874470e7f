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

from ._x64 import enable_x64


def loss(logits: Any, targets: Any, mask: Any) -> Any:
    """Mean cross entropy over rows with ``mask != 0`` (JAX arrays in, a JAX scalar out)."""
    import jax
    import jax.numpy as jnp

    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[:, None].astype(jnp.int32), axis=-1)[:, 0]
    valid = mask != 0
    n_valid = jnp.sum(valid)
    total = jnp.sum(jnp.where(valid, mask * nll, jnp.zeros_like(nll)))
    return jnp.where(n_valid > 0, total / jnp.maximum(n_valid, 1).astype(nll.dtype), 0.0)


@cache
def _compiled() -> dict[str, Any]:
    import jax

    return {
        "loss": jax.jit(loss),
        "grad": jax.jit(jax.grad(loss)),
        # loss at many points along directions: FD on the reference without a Python loop
        "loss_batch": jax.jit(jax.vmap(loss, in_axes=(0, None, None))),
    }


def _run(name: str, dtype: type[np.floating[Any]], logits: np.ndarray, *rest: np.ndarray) -> Any:
    import jax.numpy as jnp

    if dtype is np.float64:
        with enable_x64():
            args = (jnp.asarray(logits, jnp.float64), *(jnp.asarray(a) for a in rest[:-1]))
            return np.asarray(_compiled()[name](*args, jnp.asarray(rest[-1], jnp.float64)))
    args32 = (jnp.asarray(logits, jnp.float32), *(jnp.asarray(a) for a in rest[:-1]))
    return np.asarray(_compiled()[name](*args32, jnp.asarray(rest[-1], jnp.float32)))


def grad(
    logits: np.ndarray, targets: np.ndarray, mask: np.ndarray, dtype: type[np.floating[Any]]
) -> np.ndarray:
    """d loss / d logits, evaluated in ``dtype`` (np.float64 or np.float32)."""
    out: np.ndarray = _run("grad", dtype, logits, targets, mask)
    return out


def loss_value(
    logits: np.ndarray, targets: np.ndarray, mask: np.ndarray, dtype: type[np.floating[Any]]
) -> float:
    """The loss, evaluated in ``dtype``."""
    return float(_run("loss", dtype, logits, targets, mask))


def loss_values(
    logits_batch: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    dtype: type[np.floating[Any]],
) -> np.ndarray:
    """The loss at each of ``logits_batch[i]`` (shape [points, rows, vocab])."""
    out: np.ndarray = _run("loss_batch", dtype, logits_batch, targets, mask)
    return out.astype(np.float64)
