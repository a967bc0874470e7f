// KNOWN BUG (catalogue): mean over all rows instead of over the unmasked rows.
//
// What it is: the kernel normalises by 1 / rows (the batch size) and ignores inv_n_valid, while
// still multiplying by mask[row]: the classic "mean over the batch" mixup for a masked (padded) loss.
// Shows at: any shape where at least one row is masked and at least one is not. Unmasked rows come out
// too small by the constant factor n_valid / rows (e.g. 48/64 = 0.75 with a quarter of the rows
// masked); masked rows are zero, as they should be. The ratio kernel / reference is the same for every
// element, so the direction of the gradient is right and only its length is wrong.
// Does not show: no row masked (n_valid == rows, then 1/rows == inv_n_valid), or every row masked
// (all zeros, as expected).
// What a user sees: an effective learning rate that silently depends on the padding fraction of each
// batch; no NaN, no crash, a plain mismatch against the reference scaled by n_valid / rows.
// Fix: use the inv_n_valid argument (1 / number of unmasked rows, 0 when there is none).

#define MI_FULL_MASK 0xffffffffu

__device__ __forceinline__ float mi_block_reduce(float v, float* scratch, bool is_max) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const float other = __shfl_xor_sync(MI_FULL_MASK, v, o);
        v = is_max ? fmaxf(v, other) : v + other;
    }
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = scratch[0];
    for (int w = 1; w < nwarps; ++w) r = is_max ? fmaxf(r, scratch[w]) : r + scratch[w];
    __syncthreads();
    return r;
}

extern "C" __global__ void __launch_bounds__(1024)
ce_grad_mask_ignored(const float* __restrict__ logits, const int* __restrict__ targets,
                     const float* __restrict__ mask, float* __restrict__ grad, int rows, int vocab,
                     float inv_n_valid)
{
    __shared__ float scratch[32];
    (void)inv_n_valid;  // BUG: the mean should be over the unmasked rows, i.e. times inv_n_valid
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* x = logits + (size_t)row * vocab;
        float* g = grad + (size_t)row * vocab;
        const float scale = mask[row] * (1.0f / rows);
        if (scale == 0.f) {
            for (int v = threadIdx.x; v < vocab; v += blockDim.x) g[v] = 0.f;
            continue;
        }
        float m = -INFINITY;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) m = fmaxf(m, x[v]);
        m = mi_block_reduce(m, scratch, true);
        float s = 0.f;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) s += expf(x[v] - m);
        s = mi_block_reduce(s, scratch, false);
        const float inv_s = 1.f / s;
        const int target = targets[row];
        for (int v = threadIdx.x; v < vocab; v += blockDim.x)
            g[v] = (expf(x[v] - m) * inv_s - (v == target ? 1.f : 0.f)) * scale;
    }
}
