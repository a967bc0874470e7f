"""Scaled dot-product attention per (batch, head): the attention-bwd reference in JAX.

``S = scale * Q K^T`` (keys j > i masked out when causal), ``P = softmax(S)``, ``O = P V``, on
arrays [batch, heads, seq, head_dim]. The op's scalar loss is ``sum(dout * O)`` for a fixed upstream
gradient ``dout``, so its gradients with respect to q, k and v are what an attention backward kernel
computes from dout: dq, dk, dv (``jax.grad``). ``forward64`` gives the saved forward results a
kernel receives: O and the log-sum-exp of each query row's scaled scores.

Each query row's softmax stands alone, so the functions here take the query rows a block at a time
(``query_rows``) once a head's scores are more than ``QUERY_SCORES``: at seq 8192 a head has 64M
scores, and autodiff keeps several float64 copies of them. The gradient recomputes a block's scores
on its way back (``jax.checkpoint``) instead of keeping them; dk and dv add up over the blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._x64 import built_once, cast, precision

# The most float64 scores (query rows x keys, over every head and point it is given) a function
# here holds at once: 4M scores are 32 MiB a copy.
QUERY_SCORES = 1 << 22


def query_rows(shape: tuple[int, ...]) -> int:
    """Query rows per block for q of this ``shape`` ([..., seq, head_dim]: batch, heads and FD
    points multiplied are the heads): every row while the scores fit in QUERY_SCORES, at least
    one."""
    heads, seq = int(np.prod(shape[:-2])), shape[-2]
    return max(1, min(seq, QUERY_SCORES // max(1, heads * seq)))


def _masked_scores(q: Any, k: Any, scale: float, causal: bool, first: Any) -> Any:
    """The scaled scores of query rows ``first ..`` against every key, -inf where masked."""
    import jax.numpy as jnp

    s = scale * (q @ jnp.swapaxes(k, -1, -2))
    if causal:
        i = first + jnp.arange(q.shape[-2])[:, None]
        j = jnp.arange(k.shape[-2])[None, :]
        s = jnp.where(j <= i, s, -jnp.inf)
    return s


def _in_blocks(x: Any, rows: int) -> Any:
    """[..., seq, d] as [blocks, ..., rows, d], the last block padded with zero rows (a zero row of
    dout adds nothing to the loss, and nothing to any gradient)."""
    import jax.numpy as jnp

    seq = x.shape[-2]
    n = -(-seq // rows)
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, n * rows - seq), (0, 0)])
    return jnp.moveaxis(x.reshape(*x.shape[:-2], n, rows, x.shape[-1]), -3, 0)


def _firsts(seq: int, rows: int) -> Any:
    import jax.numpy as jnp

    return jnp.arange(-(-seq // rows)) * rows


def _forward_rows(q: Any, k: Any, v: Any, scale: float, causal: bool, first: Any) -> Any:
    """(O, lse) of query rows ``first ..``."""
    import jax

    s = _masked_scores(q, k, scale, causal, first)
    return jax.nn.softmax(s, axis=-1) @ v, jax.nn.logsumexp(s, axis=-1)


def forward(q: Any, k: Any, v: Any, scale: float, causal: bool, rows: int) -> Any:
    """(O, lse), ``rows`` query rows at a time."""
    import jax
    import jax.numpy as jnp

    seq = q.shape[-2]
    if rows >= seq:
        return _forward_rows(q, k, v, scale, causal, 0)

    def block(args: Any) -> Any:
        qb, first = args
        return _forward_rows(qb, k, v, scale, causal, first)

    o, lse = jax.lax.map(block, (_in_blocks(q, rows), _firsts(seq, rows)))
    o = jnp.moveaxis(o, 0, -3).reshape(*q.shape[:-2], -1, q.shape[-1])[..., :seq, :]
    lse = jnp.moveaxis(lse, 0, -2).reshape(*q.shape[:-2], -1)[..., :seq]
    return o, lse


def loss(q: Any, k: Any, v: Any, dout: Any, scale: float, causal: bool, rows: int) -> Any:
    """sum(dout * O), ``rows`` query rows at a time."""
    import jax
    import jax.numpy as jnp

    seq = q.shape[-2]
    if rows >= seq:
        return jnp.sum(dout * _forward_rows(q, k, v, scale, causal, 0)[0])

    @jax.checkpoint
    def block(args: Any) -> Any:
        qb, db, first = args
        return jnp.sum(db * _forward_rows(qb, k, v, scale, causal, first)[0])

    blocks = (_in_blocks(q, rows), _in_blocks(dout, rows), _firsts(seq, rows))
    return jnp.sum(jax.lax.map(block, blocks))


@built_once
def _compiled() -> dict[str, Any]:
    import jax

    return {
        "grad": jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=(4, 5, 6)),
        "loss_batch": jax.jit(
            jax.vmap(loss, in_axes=(0, 0, 0, None, None, None, None)), static_argnums=(4, 5, 6)
        ),
        "forward": jax.jit(forward, static_argnums=(3, 4, 5)),
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
    rows = query_rows(q.shape)
    with precision(dtype):
        args = cast(dtype, q, k, v, dout)
        dq, dk, dv = _compiled()["grad"](*args, float(scale), bool(causal), rows)
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
    rows = query_rows(q.shape)  # every point's heads hold scores at once
    with precision(dtype):
        args = cast(dtype, q, k, v, dout)
        out = np.asarray(_compiled()["loss_batch"](*args, float(scale), bool(causal), rows))
    return out.astype(np.float64)


def forward64(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, causal: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(O, lse) in float64: what the forward pass saved for the backward kernel."""
    rows = query_rows(q.shape)
    with precision(np.float64):
        args = cast(np.float64, q, k, v)
        o, lse = _compiled()["forward"](*args, float(scale), bool(causal), rows)
        return np.asarray(o), np.asarray(lse)
