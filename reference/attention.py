"""Scaled dot-product attention per (batch, head): the attention-bwd reference in JAX.

``S = scale * Q K^T`` (keys j > i masked out when causal), ``P = softmax(S)``, ``O = P V``, on
arrays [batch, heads, seq, head_dim]. The op's scalar loss is ``sum(dout * O)`` for a fixed upstream
gradient ``dout``, so its gradients with respect to q, k and v are what an attention backward kernel
computes from dout: dq, dk, dv (``jax.grad``). ``forward64`` gives the saved forward results a
kernel receives: O and the log-sum-exp of each query row's scaled scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._x64 import built_once, cast, precision


def scores(q: Any, k: Any, scale: float, causal: bool) -> Any:
    import jax.numpy as jnp

    s = scale * jnp.einsum("bhid,bhjd->bhij", q, k)
    if causal:
        n = q.shape[-2]
        allowed = jnp.tril(jnp.ones((n, n), bool))
        s = jnp.where(allowed, s, -jnp.inf)
    return s


def forward(q: Any, k: Any, v: Any, scale: float, causal: bool) -> Any:
    import jax

    p = jax.nn.softmax(scores(q, k, scale, causal), axis=-1)
    return jax.numpy.einsum("bhij,bhjd->bhid", p, v)


def loss(q: Any, k: Any, v: Any, dout: Any, scale: float, causal: bool) -> Any:
    import jax.numpy as jnp

    return jnp.sum(dout * forward(q, k, v, scale, causal))


@built_once
def _compiled() -> dict[str, Any]:
    import jax

    return {
        "grad": jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=(4, 5)),
        "loss_batch": jax.jit(
            jax.vmap(loss, in_axes=(0, 0, 0, None, None, None)), static_argnums=(4, 5)
        ),
        "forward": jax.jit(forward, static_argnums=(3, 4)),
        "lse": jax.jit(
            lambda q, k, scale, causal: jax.nn.logsumexp(scores(q, k, scale, causal), axis=-1),
            static_argnums=(2, 3),
        ),
    }


def grads(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    dout: np.ndarray,
    scale: float,
    causal: bool,
    dtype: type[np.floating[Any]],
) -> dict[str, np.ndarray]:
    """dq, dk, dv, evaluated in ``dtype`` (np.float64 or np.float32)."""
    with precision(dtype):
        args = cast(dtype, q, k, v, dout)
        dq, dk, dv = _compiled()["grad"](*args, float(scale), bool(causal))
        return {"dq": np.asarray(dq), "dk": np.asarray(dk), "dv": np.asarray(dv)}


def loss_values(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    dout: np.ndarray,
    scale: float,
    causal: bool,
    dtype: type[np.floating[Any]],
) -> np.ndarray:
    """The loss at each point (``q``, ``k``, ``v`` stacked on axis 0)."""
    with precision(dtype):
        args = cast(dtype, q, k, v, dout)
        out = np.asarray(_compiled()["loss_batch"](*args, float(scale), bool(causal)))
    return out.astype(np.float64)


def forward64(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, causal: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(O, lse) in float64: what the forward pass saved for the backward kernel."""
    with precision(np.float64):
        args = cast(np.float64, q, k, v)
        o = np.asarray(_compiled()["forward"](*args, float(scale), bool(causal)))
        lse = np.asarray(_compiled()["lse"](args[0], args[1], float(scale), bool(causal)))
    return o, lse
