// Softmax cross-entropy gradient, shared-memory tree reductions (the classic layout).
//
//   grad[r, v] = mask[r] * inv_n_valid * (softmax(logits[r, :])[v] - (v == targets[r]))
//
// Launch: grid = (rows, 1, 1), block = (B, 1, 1) with B a multiple of 32 (at most 1024, not
// necessarily a power of two: 96 works); no dynamic shared memory. Every element of grad is written,
// masked rows included (with zeros).
// Each thread reduces its block-stride slice, stores its partial in s_max[tid] (then s_sum[tid]), and
// the block halves the active range with a __syncthreads() after every step. The first stride is half
// of blockDim rounded up to a power of two, and a thread only folds in tid + stride when that slot
// exists, so a block of 96 threads reduces correctly. s_max and s_sum are separate arrays, so the sum
// reduction never overwrites a maximum another thread has yet to read.

#define ST_MAX_THREADS 1024

// Smallest power of two >= n (n >= 1).
__device__ __forceinline__ int st_pow2_ceil(int n) {
    int p = 1;
    while (p < n) p <<= 1;
    return p;
}

extern "C" __global__ void __launch_bounds__(ST_MAX_THREADS)
ce_grad_tree(const float* __restrict__ logits, const int* __restrict__ targets,
             const float* __restrict__ mask, float* __restrict__ grad, int rows, int vocab,
             float inv_n_valid)
{
    __shared__ float s_max[ST_MAX_THREADS];
    __shared__ float s_sum[ST_MAX_THREADS];
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int first_stride = st_pow2_ceil(nthreads) >> 1;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* x = logits + (size_t)row * vocab;
        float* g = grad + (size_t)row * vocab;
        const float scale = mask[row] * inv_n_valid;
        if (scale == 0.f) {  // masked row (or no valid rows at all): the gradient is zero
            for (int v = tid; v < vocab; v += nthreads) g[v] = 0.f;
            continue;
        }
        // Row maximum.
        float m = -INFINITY;
        for (int v = tid; v < vocab; v += nthreads) m = fmaxf(m, x[v]);
        s_max[tid] = m;
        __syncthreads();
        for (int stride = first_stride; stride > 0; stride >>= 1) {
            if (tid < stride && tid + stride < nthreads)
                s_max[tid] = fmaxf(s_max[tid], s_max[tid + stride]);
            __syncthreads();
        }
        m = s_max[0];
        // Sum of exp(x - max).
        float s = 0.f;
        for (int v = tid; v < vocab; v += nthreads) s += expf(x[v] - m);
        s_sum[tid] = s;
        __syncthreads();
        for (int stride = first_stride; stride > 0; stride >>= 1) {
            if (tid < stride && tid + stride < nthreads) s_sum[tid] += s_sum[tid + stride];
            __syncthreads();
        }
        const float inv_s = 1.f / s_sum[0];
        // s_max[0] and s_sum[0] are read after the last barrier of their tree; the next row writes
        // s_max[tid] before its first barrier and s_sum[tid] only after the max tree's barriers, which
        // every thread reaches after these reads: no further barrier is needed.
        const int target = targets[row];
        for (int v = tid; v < vocab; v += nthreads)
            g[v] = (expf(x[v] - m) * inv_s - (v == target ? 1.f : 0.f)) * scale;
    }
}
