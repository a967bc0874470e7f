// Kernels with the bugs the cpu backend must catch by default. Compiled with no_extern_c=True.
#include <assert.h>

// Block sum, missing the barrier between filling shared memory and reducing it.
extern "C" __global__ void missing_barrier(const float* x, float* out) {
    __shared__ float s[256];
    const int t = threadIdx.x;
    s[t] = x[blockIdx.x * blockDim.x + t];
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (t < k) s[t] += s[t + k];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// The same, correct.
extern "C" __global__ void block_sum(const float* x, float* out) {
    __shared__ float s[256];
    const int t = threadIdx.x;
    s[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (t < k) s[t] += s[t + k];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

extern "C" __global__ void write_past_end(float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 1.f;  // off by one
}

// One thread per vocab entry up to blockDim.x: reads past the row when vocab < blockDim.x.
extern "C" __global__ void read_past_small_vocab(const float* x, float* m, int vocab) {
    __shared__ float s[1024];
    s[threadIdx.x] = x[blockIdx.x * vocab + threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0) {
        float r = s[0];
        for (int v = 1; v < vocab; ++v) r = fmaxf(r, s[v]);
        m[blockIdx.x] = r;
    }
}

// Every block reads one past the end; block 0 only after `spin` steps of busy work, so the other
// blocks fault first in time.
extern "C" __global__ void every_block_reads_past_end(const float* x, float* y, int n, int spin) {
    if (threadIdx.x != 0) return;
    volatile int k = 0;
    if (blockIdx.x == 0)
        for (int i = 0; i < spin; ++i) k = k + 1;
    y[blockIdx.x] = x[n] + k;
}

extern "C" __global__ void write_before_start(float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i - 1] = 1.f;
}

extern "C" __global__ void skip_last(const float* x, float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n - 1) y[i] = 2.f * x[i];
}

// Only the first half of the shared array is written, all of it is read.
extern "C" __global__ void uninit_shared(const float* x, float* y) {
    __shared__ float s[256];
    const int t = threadIdx.x;
    if (t < 128) s[t] = x[t];
    __syncthreads();
    y[t] = s[t];
}

extern "C" __global__ void early_exit_barrier(float* y, int n) {
    __shared__ float s[256];
    const int t = threadIdx.x;
    if (t >= n) return;
    s[t] = (float)t;
    __syncthreads();
    y[t] = s[n - 1 - t];
}

extern "C" __global__ void shfl_after_exit(float* y) {
    const int lane = threadIdx.x & 31;
    if (lane >= 16) return;
    y[threadIdx.x] = __shfl_down_sync(0xffffffffu, (float)lane, 1);
}

extern "C" __global__ void divergent_barrier(float* y) {
    if (threadIdx.x < 32) {
        y[threadIdx.x] = 1.f;
        __syncthreads();
    } else {
        y[threadIdx.x] = 2.f;
        __syncthreads();
    }
}

extern "C" __global__ void spin_forever(volatile float* flag) {
    if (threadIdx.x == 3)
        while (flag[0] == 0.f) {
        }
    __syncthreads();
}

extern "C" __global__ void int_div(const int* x, int* y, int d) { y[threadIdx.x] = x[threadIdx.x] / d; }

extern "C" __global__ void device_assert(float* y, int n) {
    assert(n > 1000);
    y[threadIdx.x] = (float)n;
}

__device__ int deep(int d) {
    volatile char pad[512];
    pad[0] = (char)d;
    return d > 0 ? deep(d - 1) + pad[0] : 0;
}
extern "C" __global__ void stack_overflow(int* y, int d) { y[threadIdx.x] = deep(d); }

extern "C" __global__ void wild_pointer(float* y) {
    float* p = (float*)0x10000000000ull;
    if (blockIdx.x == 2 && threadIdx.x == 5) p[0] = 1.f;
    y[threadIdx.x] = 1.f;
}
