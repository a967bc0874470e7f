// CUDA features the cpu backend must run unmodified. Compiled with no_extern_c=True,
// include_dirs=[tests/kernels/include] and -DSCALE=3.
#include <cuda_runtime.h>
#include "scale_util.cuh"

namespace ops {
extern "C" __global__ void ns_scale(float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = scaled(y[i]);
}
}  // namespace ops

// C++ linkage: PyCUDA (and the cpu backend) look it up by its mangled name.
__global__ void cpp_scale(float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = 2.f * y[i];
}

template <int B>
__global__ void tmpl_fill(float* y) {
    y[blockIdx.x * B + threadIdx.x] = (float)B;
}
template __global__ void tmpl_fill<64>(float*);

__global__ void over(float* y, int n) { if (threadIdx.x < n) y[threadIdx.x] = 1.f; }
__global__ void over(double* y, int n) { if (threadIdx.x < n) y[threadIdx.x] = 2.0; }

extern "C" __global__ void __launch_bounds__(128)
dyn_reverse(const float* __restrict__ x, float* __restrict__ y, int n) {
    extern __shared__ float buf[];
    const int t = threadIdx.x;
    buf[t] = t < n ? x[t] : 0.f;
    __syncthreads();
    if (t < n) y[t] = buf[n - 1 - t];
}

extern __shared__ float file_scope_buf[];
extern "C" __global__ void dyn_file_scope(const float* x, float* y, int n) {
    const int t = threadIdx.x;
    file_scope_buf[t] = x[t];
    __syncthreads();
    y[t] = file_scope_buf[(t + 1) % n];
}

// Float atomics across blocks, __ballot_sync/__popc, __syncthreads_count.
extern "C" __global__ void reductions(const float* x, float* sum, int* positives, int* counted, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float v = i < n ? x[i] : 0.f;
    atomicAdd(sum, v);
    const unsigned b = __ballot_sync(0xffffffffu, v > 0.f);
    if ((threadIdx.x & 31) == 0) atomicAdd(positives, __popc(b));
    const int c = __syncthreads_count(v > 0.f);
    if (threadIdx.x == 0) atomicAdd(counted, c);
}

// Warp collectives: each lane records what it received.
extern "C" __global__ void shuffles(const int* x, int* out) {
    const int t = threadIdx.x, v = x[t];
    out[0 * 32 + t] = __shfl_sync(0xffffffffu, v, 5);
    out[1 * 32 + t] = __shfl_up_sync(0xffffffffu, v, 1);
    out[2 * 32 + t] = __shfl_down_sync(0xffffffffu, v, 2, 8);
    out[3 * 32 + t] = __shfl_xor_sync(0xffffffffu, v, 3);
    out[4 * 32 + t] = (int)__reduce_add_sync(0xffffffffu, (unsigned)v);
    out[5 * 32 + t] = (int)__match_any_sync(0xffffffffu, v % 3);
    __syncwarp();
}

// 3-D grid and block: every thread writes its global linear index.
extern "C" __global__ void grid3d(int* out) {
    const int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int nt = blockDim.x * blockDim.y * blockDim.z;
    out[b * nt + t] = b * nt + t;
}

// Scalars of several types travel by value.
extern "C" __global__ void scalars(double* out, signed char a, short b, long long c, unsigned int d, double e) {
    out[0] = a; out[1] = b; out[2] = (double)c; out[3] = d; out[4] = e;
}
