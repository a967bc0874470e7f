// KNOWN BUG (catalogue): sign flipped: writes (onehot - softmax) instead of (softmax - onehot).
//
// What it is: the gradient of the log-likelihood (what you ascend) instead of the gradient of the
// cross-entropy loss (what you descend): d log p_t / dx_v = onehot_v - p_v. The magnitude is exact,
// only the sign is wrong.
// Shows at: every unmasked row, every shape and block size: kernel == -reference element for
// element (the target column is positive, every other column negative), so the relative error is
// exactly 2 and the per-row sum is still 0 (a sum-to-zero check does not catch it).
// Does not show: masked rows and the all-masked case (zeros are zeros either way).
// What a user sees: the loss goes up instead of down (gradient ascent on the loss); a finite
// difference check or a comparison with the reference shows every element negated.
// Fix: g = (p - onehot) * scale.

#define SF_FULL_MASK 0xffffffffu

__device__ __forceinline__ float sf_block_reduce(float v, float* scratch, bool is_max) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const float other = __shfl_xor_sync(SF_FULL_MASK, v, o);
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
ce_grad_sign_flipped(const float* __restrict__ logits, const int* __restrict__ targets,
                     const float* __restrict__ mask, float* __restrict__ grad, int rows, int vocab,
                     float inv_n_valid)
{
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* x = logits + (size_t)row * vocab;
        float* g = grad + (size_t)row * vocab;
        const float scale = mask[row] * inv_n_valid;
        if (scale == 0.f) {
            for (int v = threadIdx.x; v < vocab; v += blockDim.x) g[v] = 0.f;
            continue;
        }
        float m = -INFINITY;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) m = fmaxf(m, x[v]);
        m = sf_block_reduce(m, scratch, true);
        float s = 0.f;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) s += expf(x[v] - m);
        s = sf_block_reduce(s, scratch, false);
        const float inv_s = 1.f / s;
        const int target = targets[row];
        // BUG: log-likelihood gradient (onehot - p); the loss gradient is (p - onehot).
        for (int v = threadIdx.x; v < vocab; v += blockDim.x)
            g[v] = ((v == target ? 1.f : 0.f) - expf(x[v] - m) * inv_s) * scale;
    }
}
