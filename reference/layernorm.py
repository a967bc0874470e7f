"""Layer norm over the last axis: the layernorm-bwd reference in JAX.

``forward(x, gamma, beta, eps) = (x - mean) * rstd * gamma + beta`` with the population variance and
``rstd = 1 / sqrt(var + eps)``. The op's scalar loss is ``sum(dy * forward(...))`` for a fixed
upstream gradient ``dy``, so its gradients with respect to ``x``, ``gamma`` and ``beta`` are exactly
what a layer-norm backward kernel computes from ``dy``: dx, dgamma, dbeta (``jax.grad``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._x64 import built_once, cast, precision


def forward(x: Any, gamma: Any, beta: Any, eps: float) -> Any:
    import jax.numpy as jnp

    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * gamma + beta


def loss(x: Any, gamma: Any, beta: Any, dy: Any, eps: float) -> Any:
    import jax.numpy as jnp

    return jnp.sum(dy * forward(x, gamma, beta, eps))


@built_once
def _compiled() -> dict[str, Any]:
    import jax

    return {
        "grad": jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnames=("eps",)),
        # the loss at many points: FD on the reference without a Python loop
        "loss_batch": jax.jit(jax.vmap(loss, in_axes=(0, 0, 0, None, None)), static_argnums=(4,)),
    }


def grads(
    dy: np.ndarray,
    x: np.ndarray,
    gamma: np.ndarray,
    eps: float,
    dtype: type[np.floating[Any]],
) -> dict[str, np.ndarray]:
    """dx [rows, hidden], dgamma [hidden], dbeta [hidden], evaluated in ``dtype``."""
    beta = np.zeros_like(gamma)
    with precision(dtype):
        xs, g, b, d = cast(dtype, x, gamma, beta, dy)
        dx, dgamma, dbeta = _compiled()["grad"](xs, g, b, d, eps=eps)
        return {"dx": np.asarray(dx), "dgamma": np.asarray(dgamma), "dbeta": np.asarray(dbeta)}


def loss_values(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    dy: np.ndarray,
    eps: float,
    dtype: type[np.floating[Any]],
) -> np.ndarray:
    """The loss at each point (``x``, ``gamma``, ``beta`` stacked on axis 0)."""
    with precision(dtype):
        xs, g, b, d = cast(dtype, x, gamma, beta, dy)
        out = np.asarray(_compiled()["loss_batch"](xs, g, b, d, eps))
    return out.astype(np.float64)


def stats(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The forward pass's saved statistics in float64: mean and rstd per row."""
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1)
    var = ((x64 - mean[..., None]) ** 2).mean(axis=-1)
    return mean, 1.0 / np.sqrt(var + eps)
