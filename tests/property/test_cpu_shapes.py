"""Properties of the cpu backend over the shapes that break kernels: sizes around the block size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradcheck as gc
from gradcheck.strategies import sizes

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = (32, 64, 128, 256)


# (rows, vocab, block) with vocab at block - 1, block, block + 1, 2 * block + 1, primes, % 4
# tails, powers of two or any size up to 3000 (fewer rows for large vocabs: one block per row).
AROUND_BLOCKS = sizes("loss-ce", blocks=BLOCKS, max_elements=3000).map(
    lambda d: (d["rows"], d["vocab"], d["block"])
)


@pytest.fixture(scope="module")
def ce() -> gc.backends.Function:
    mod = gc.SourceModule(ROOT / "kernels_cuda/loss_ce/ce_grad.cu", no_extern_c=True, backend="cpu")
    return mod.get_function("ce_grad")


# deadline=None: the first example builds the kernel.
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(shape=AROUND_BLOCKS, seed=st.integers(0, 2**16), big=st.booleans())
def test_ce_kernel_writes_every_element_and_matches_float64(
    ce: gc.backends.Function, shape: tuple[int, int, int], seed: int, big: bool
) -> None:
    rows, vocab, block = shape
    rng = np.random.default_rng(seed)
    scale = 80.0 if big else 3.0  # large logits overflow a naive exp
    x = (rng.standard_normal((rows, vocab)) * scale).astype(np.float32)
    t = rng.integers(0, vocab, rows).astype(np.int32)
    mask = (rng.random(rows) > 0.3).astype(np.float32)
    inv = np.float32(1.0 / mask.sum()) if mask.sum() else np.float32(0.0)
    g = np.empty_like(x)
    launch = ce.launch(
        gc.In(x), gc.In(t), gc.In(mask), gc.Out(g), np.int32(rows), np.int32(vocab), inv,
        block=(block, 1, 1), grid=(rows, 1), schedule="random", seed=seed,
    )  # fmt: skip
    assert launch.unwritten == {}
    xd = x.astype(np.float64)
    p = np.exp(xd - xd.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(rows), t] -= 1
    ref = p * mask[:, None] * float(inv)
    # float32 softmax: a few ulps of the row scale (1/n_valid) bound the error of a correct kernel.
    assert np.abs(g - ref).max() <= 8 * np.finfo(np.float32).eps * max(float(inv), 1e-30)
