// Softmax cross-entropy gradient with respect to the logits: one block per row, any vocab size.
//
//   grad[r, v] = mask[r] * inv_n_valid * (softmax(logits[r, :])[v] - (v == targets[r]))
//
// Launch: grid = (rows, 1, 1), block = (B, 1, 1) with B a multiple of 32 (at most 1024); no dynamic
// shared memory. Every element of grad is written, masked rows included (with zeros).
// Two block reductions (max, then sum of exp) use warp shuffles and one shared slot per warp, and a
// block-stride loop covers vocab > blockDim.x.

#define CE_FULL_MASK 0xffffffffu

__device__ __forceinline__ float ce_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(CE_FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ float ce_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(CE_FULL_MASK, v, o);
    return v;
}

// Every thread gets the block's maximum (is_max) or sum. `scratch` holds one partial per warp.
__device__ float ce_block_reduce(float v, float* scratch, bool is_max) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = is_max ? ce_warp_max(v) : ce_warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = scratch[0];
    for (int w = 1; w < nwarps; ++w) r = is_max ? fmaxf(r, scratch[w]) : r + scratch[w];
    __syncthreads();  // scratch is reused by the next reduction
    return r;
}

extern "C" __global__ void __launch_bounds__(1024)
ce_grad(const float* __restrict__ logits, const int* __restrict__ targets,
        const float* __restrict__ mask, float* __restrict__ grad, int rows, int vocab,
        float inv_n_valid)
{
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* x = logits + (size_t)row * vocab;
        float* g = grad + (size_t)row * vocab;
        const float scale = mask[row] * inv_n_valid;
        if (scale == 0.f) {  // masked row (or no valid rows at all): the gradient is zero
            for (int v = threadIdx.x; v < vocab; v += blockDim.x) g[v] = 0.f;
            continue;
        }
        float m = -INFINITY;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) m = fmaxf(m, x[v]);
        m = ce_block_reduce(m, scratch, true);
        float s = 0.f;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) s += expf(x[v] - m);
        s = ce_block_reduce(s, scratch, false);
        const float inv_s = 1.f / s;
        const int target = targets[row];
        for (int v = threadIdx.x; v < vocab; v += blockDim.x)
            g[v] = (expf(x[v] - m) * inv_s - (v == target ? 1.f : 0.f)) * scale;
    }
}
