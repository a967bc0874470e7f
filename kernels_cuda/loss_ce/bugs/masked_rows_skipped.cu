// KNOWN BUG (catalogue): masked rows are skipped instead of written as zeros.
//
// What it is: the kernel returns early for a row whose mask is 0 ("its gradient is zero, nothing to
// do"), but grad is not zeroed by anyone: the caller allocated it and never cleared it. On a GPU the
// masked rows keep whatever the allocation held (often zeros from a fresh cudaMalloc, so tests pass
// and a reused buffer later feeds stale gradients into the optimizer); on the gradcheck backends they
// keep the NaN poison.
// Shows: every input with a masked row: only masked rows are wrong, and every element of them is
// never written; with every row masked (n_valid = 0), nothing at all is written.
// Does not show: inputs with no masked row.
// Fix: write zeros for masked rows (or memset grad before the launch and say so in the contract).

#define MS_FULL_MASK 0xffffffffu

__device__ __forceinline__ float ms_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(MS_FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ float ms_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(MS_FULL_MASK, v, o);
    return v;
}

// Every thread gets the block's maximum (is_max) or sum. `scratch` holds one partial per warp.
__device__ float ms_block_reduce(float v, float* scratch, bool is_max) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = is_max ? ms_warp_max(v) : ms_warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = scratch[0];
    for (int w = 1; w < nwarps; ++w) r = is_max ? fmaxf(r, scratch[w]) : r + scratch[w];
    __syncthreads();  // scratch is reused by the next reduction
    return r;
}

extern "C" __global__ void __launch_bounds__(1024)
ce_grad_masked_skipped(const float* __restrict__ logits, const int* __restrict__ targets,
        const float* __restrict__ mask, float* __restrict__ grad, int rows, int vocab,
        float inv_n_valid)
{
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* x = logits + (size_t)row * vocab;
        float* g = grad + (size_t)row * vocab;
        const float scale = mask[row] * inv_n_valid;
        if (scale == 0.f) continue;  // BUG: "nothing to do for a masked row", but grad is not zeroed
        float m = -INFINITY;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) m = fmaxf(m, x[v]);
        m = ms_block_reduce(m, scratch, true);
        float s = 0.f;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) s += expf(x[v] - m);
        s = ms_block_reduce(s, scratch, false);
        const float inv_s = 1.f / s;
        const int target = targets[row];
        for (int v = threadIdx.x; v < vocab; v += blockDim.x)
            g[v] = (expf(x[v] - m) * inv_s - (v == target ? 1.f : 0.f)) * scale;
    }
}
