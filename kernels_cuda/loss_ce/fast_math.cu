// Softmax cross-entropy gradient with fast-math intrinsics and warp-shuffle reductions.
//
//   grad[r, v] = mask[r] * inv_n_valid * (softmax(logits[r, :])[v] - (v == targets[r]))
//
// Launch: grid = (rows, 1, 1), block = (B, 1, 1) with B a multiple of 32 (at most 1024); no dynamic
// shared memory. Every element of grad is written, masked rows included (with zeros).
// Reductions: __shfl_down_sync tree inside each warp (lane 0 ends with the warp's value), one
// shared slot per warp, warp 0 reduces the slots, and thread 0 broadcasts the result through shared
// memory. Exponentials use __expf (ex2.approx; on a GPU its error is about 2 + 1.2 * |x| ulp, so a
// few 1e-6 relative for the arguments x - max >= -30 of ordinary logits);
// the normaliser scale / sum is folded into one __fdividef and each element costs one __expf and one
// fused multiply-add. A zero scale (masked row, or inv_n_valid == 0 when no row is valid) writes
// exact zeros without touching the row, so no NaN can appear there.

#define FM_FULL_MASK 0xffffffffu

__device__ __forceinline__ float fm_warp_max_down(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(FM_FULL_MASK, v, o));
    return v;  // valid in lane 0
}

__device__ __forceinline__ float fm_warp_sum_down(float v) {
    for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_down_sync(FM_FULL_MASK, v, o));
    return v;  // valid in lane 0
}

// Every thread gets the block's maximum (is_max) or sum. `slots` holds one partial per warp,
// `bcast` the final value.
__device__ float fm_block_reduce(float v, float* slots, float* bcast, bool is_max) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const float identity = is_max ? -INFINITY : 0.f;
    v = is_max ? fm_warp_max_down(v) : fm_warp_sum_down(v);
    if (lane == 0) slots[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? slots[lane] : identity;
        v = is_max ? fm_warp_max_down(v) : fm_warp_sum_down(v);
        if (lane == 0) *bcast = v;
    }
    __syncthreads();
    const float r = *bcast;
    __syncthreads();  // slots and bcast are reused by the next reduction
    return r;
}

extern "C" __global__ void __launch_bounds__(1024)
ce_grad_fast(const float* __restrict__ logits, const int* __restrict__ targets,
             const float* __restrict__ mask, float* __restrict__ grad, int rows, int vocab,
             float inv_n_valid)
{
    __shared__ float slots[32];
    __shared__ float bcast;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* x = logits + (size_t)row * vocab;
        float* g = grad + (size_t)row * vocab;
        const float scale = __fmul_rn(mask[row], inv_n_valid);
        if (scale == 0.f) {  // masked row or no valid row: exact zeros, no NaN from 0 * inf
            for (int v = threadIdx.x; v < vocab; v += blockDim.x) g[v] = 0.f;
            continue;
        }
        float m = -INFINITY;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) m = fmaxf(m, x[v]);
        m = fm_block_reduce(m, slots, &bcast, true);
        float s = 0.f;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) s = __fadd_rn(s, __expf(__fsub_rn(x[v], m)));
        s = fm_block_reduce(s, slots, &bcast, false);
        // 1 <= s <= vocab, far from __fdividef's 2^126 limit.
        const float k = __fdividef(scale, s);
        const int target = targets[row];
        for (int v = threadIdx.x; v < vocab; v += blockDim.x)
            g[v] = __fmaf_rn(__expf(__fsub_rn(x[v], m)), k, v == target ? -scale : 0.f);
    }
}
