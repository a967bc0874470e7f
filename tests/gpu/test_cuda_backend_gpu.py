"""The cuda backend on a real GPU: results against numpy float64, poison, timing, faults.

Skipped (with the reason) where no CUDA device is usable; see conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

import gradcheck
from gradcheck import In, Out
from gradcheck.backends import BackendName, cpu_status

pytestmark = pytest.mark.gpu

BLOCK = 256
EPS32 = float(np.finfo(np.float32).eps)

# The kernels are extern "C" and compiled with no_extern_c=True, the form the cpu backend takes
# too, so the same text runs on both backends unchanged.
SRC = r"""
#define BLOCK 256

// d/d logits of mean softmax cross-entropy: (softmax(x[r]) - onehot(labels[r])) / rows.
// One block per row; blockDim.x must be BLOCK (a power of two) for the tree reductions.
extern "C" __global__ void ce_grad(const float* logits, const int* labels, float* d_logits,
                                   int rows, int vocab) {
    __shared__ float scratch[BLOCK];
    const float* x = logits + (size_t)blockIdx.x * vocab;
    float* g = d_logits + (size_t)blockIdx.x * vocab;
    int t = threadIdx.x;

    float m = x[0];
    for (int j = t; j < vocab; j += blockDim.x) m = fmaxf(m, x[j]);
    scratch[t] = m;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (t < s) scratch[t] = fmaxf(scratch[t], scratch[t + s]);
        __syncthreads();
    }
    m = scratch[0];
    __syncthreads();  // every thread has read the max before scratch is reused for the sum

    float sum = 0.0f;
    for (int j = t; j < vocab; j += blockDim.x) sum += expf(x[j] - m);
    scratch[t] = sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (t < s) scratch[t] += scratch[t + s];
        __syncthreads();
    }
    sum = scratch[0];

    int label = labels[blockIdx.x];
    for (int j = t; j < vocab; j += blockDim.x)
        g[j] = (expf(x[j] - m) / sum - (j == label ? 1.0f : 0.0f)) / rows;
}

extern "C" __global__ void twice_but_last(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n - 1) y[i] = 2.0f * x[i];  // deliberate bug: y[n - 1] is never written
}
"""

ROWS, VOCAB = 64, 1000


def ce_inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((ROWS, VOCAB))).astype(np.float32)
    labels = rng.integers(0, VOCAB, ROWS, dtype=np.int32)
    return logits, labels


def ce_grad_reference(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(labels)), labels] -= 1.0
    grad: np.ndarray = p / len(labels)
    return grad


def assert_float32_close(got: np.ndarray, want: np.ndarray) -> None:
    # float32 rounding: expf is within 2 ulp and each row sum takes about vocab / BLOCK +
    # log2(BLOCK) roundings, so 1e-5 relative is tens of ulp to spare; atol covers the
    # label entries, where p - 1 cancels to a value near 0 with an error of a few eps / rows.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=4 * EPS32 / ROWS)


def run_ce_grad(backend: BackendName) -> tuple[np.ndarray, gradcheck.Launch]:
    logits, labels = ce_inputs()
    grad = np.zeros_like(logits)
    mod = gradcheck.SourceModule(SRC, backend=backend, no_extern_c=True)
    f: Any = mod.get_function("ce_grad")
    launch = f.launch(
        In(logits),
        In(labels),
        Out(grad),
        np.int32(ROWS),
        np.int32(VOCAB),
        block=(BLOCK, 1, 1),
        grid=(ROWS, 1),
    )
    return grad, launch


def test_ce_grad_matches_numpy_float64() -> None:
    grad, launch = run_ce_grad("cuda")
    logits, labels = ce_inputs()
    assert launch.backend == "cuda"
    assert launch.unwritten == {}
    assert_float32_close(grad, ce_grad_reference(logits, labels))


def test_an_element_the_kernel_skips_is_reported_and_left_nan() -> None:
    n = 1000
    x = np.arange(n, dtype=np.float32)
    y = np.zeros(n, dtype=np.float32)
    f: Any = gradcheck.SourceModule(SRC, backend="cuda", no_extern_c=True).get_function(
        "twice_but_last"
    )
    launch = f.launch(In(x), Out(y), np.int32(n), block=(BLOCK, 1, 1), grid=(4, 1))
    assert launch.unwritten == {1: 1}
    assert np.isnan(y[-1])
    np.testing.assert_array_equal(y[:-1], 2 * x[:-1])


def test_time_kernel_returns_positive_seconds() -> None:
    f: Any = gradcheck.SourceModule(SRC, backend="cuda", no_extern_c=True).get_function(
        "twice_but_last"
    )
    x = np.ones(4096, dtype=np.float32)
    elapsed = f(
        In(x),
        Out(np.empty_like(x)),
        np.int32(x.size),
        block=(BLOCK, 1, 1),
        grid=(16, 1),
        time_kernel=True,
    )
    assert isinstance(elapsed, float)
    assert 0 < elapsed < 10


def test_cpu_and_cuda_backends_agree_on_the_same_source() -> None:
    status = cpu_status()
    if not status.available:
        pytest.skip(f"the cpu backend cannot run here: {status.reason}")
    on_gpu, gpu_launch = run_ce_grad("cuda")
    on_cpu, cpu_launch = run_ce_grad("cpu")
    assert gpu_launch.unwritten == cpu_launch.unwritten == {}
    # Not bit for bit: the GPU's expf and the host's expf round differently.
    assert_float32_close(on_cpu, on_gpu)


OUT_OF_BOUNDS_SCRIPT = r'''
import sys
import numpy as np
import gradcheck

SRC = r"""
extern "C" __global__ void write_before_start(float* y, int n) {
    int i = threadIdx.x;
    // A negative index reaching back to address 0: the null page is mapped neither on the
    // device nor on the host (even with HMM), so this faults on every GPU, every time.
    if (i < n) y[i - (long long)((size_t)y / sizeof(float))] = 1.0f;
}
"""
try:
    f = gradcheck.SourceModule(SRC, backend="cuda", no_extern_c=True).get_function(
        "write_before_start"
    )
except gradcheck.BackendUnavailable as exc:
    print("UNAVAILABLE", exc)
    sys.exit(0)
try:
    f(gradcheck.Out(np.zeros(32, np.float32)), np.int32(32), block=(32, 1, 1))
except gradcheck.OutOfBounds as exc:
    print("OutOfBounds")
    print(exc)
    sys.exit(0)
print("the kernel ran without an error")
sys.exit(1)
'''


# Keep this test last. An illegal address poisons the CUDA context for the rest of the process
# (CUDA documents it as sticky), so the launch runs in a child process: a fault in this test's
# own process would fail every GPU test collected after it, in this file or any later one.
def test_an_illegal_address_raises_out_of_bounds() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(OUT_OF_BOUNDS_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ),
    )
    if done.stdout.startswith("UNAVAILABLE"):
        # e.g. the GPU is in exclusive-process mode and this process already holds it.
        pytest.skip(f"a second process cannot use the GPU: {done.stdout.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OutOfBounds")
    assert "illegal memory access in kernel 'write_before_start'" in done.stdout
    assert "backend='cpu'" in done.stdout
    assert "CUDA context is now unusable" in done.stdout
