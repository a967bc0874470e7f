// KNOWN BUG (catalogue): out-of-bounds read when vocab < blockDim.x.
//
// What it is: "vocab is always larger than the block in production", so every thread seeds its max
// and its sum with its own first element x[threadIdx.x] unconditionally and the block-stride loops
// start at threadIdx.x + blockDim.x. When vocab < blockDim.x, threads tid >= vocab read
// logits[row * vocab + tid]: the next rows' logits, and past the end of the buffer on the last row.
// Shows at: vocab < blockDim.x (vocab 1/2/31 with any block; 50 with block >= 128; 255 with 256 or
// 1024; 256/257/1023 with 1024). The write loop is guarded, so no write goes out of bounds.
//   - gradcheck cpu backend (guard="end", the default): a row r reads up to logits[r * vocab +
//     blockDim.x - 1], past the end of logits once r * vocab + blockDim.x > rows * vocab (always on
//     the last row), and the launch raises OutOfBounds on argument 0 (logits). E.g. rows=4, vocab=50,
//     block=256: thread 200 of block 0 reads element [200], just past the end. Every row runs the
//     reductions (masked rows too; the mask only scales the result), so it faults whatever the mask.
//   - where the read stays inside the allocation (earlier rows; guard="start" on the cpu backend; a
//     GPU, where the last row's read usually lands in the allocation's padding and does not fault):
//     the max and the sum take in the next rows' logits (or garbage), so the probabilities are too
//     small by a row-dependent amount (about 75% off at rows=4, vocab=50, block=256) and the row no
//     longer sums to zero. No NaN, no fault on a GPU: silently wrong.
// Does not show: vocab >= blockDim.x (correct to float32 rounding, e.g. vocab 50 with block 32,
// vocab 256 with block 256, every vocab >= 1024).
// Fix: seed with m = -INFINITY, s = 0 and start the loops at threadIdx.x (as ../ce_grad.cu does).

#define OOB_FULL_MASK 0xffffffffu

__device__ __forceinline__ float oob_block_reduce(float v, float* scratch, bool is_max) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const float other = __shfl_xor_sync(OOB_FULL_MASK, v, o);
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
ce_grad_oob(const float* __restrict__ logits, const int* __restrict__ targets,
            const float* __restrict__ mask, float* __restrict__ grad, int rows, int vocab,
            float inv_n_valid)
{
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* x = logits + (size_t)row * vocab;
        float* g = grad + (size_t)row * vocab;
        const float scale = mask[row] * inv_n_valid;
        // BUG: assumes vocab >= blockDim.x, so that every thread owns x[threadIdx.x].
        float m = x[threadIdx.x];
        for (int v = threadIdx.x + blockDim.x; v < vocab; v += blockDim.x) m = fmaxf(m, x[v]);
        m = oob_block_reduce(m, scratch, true);
        float s = expf(x[threadIdx.x] - m);
        for (int v = threadIdx.x + blockDim.x; v < vocab; v += blockDim.x) s += expf(x[v] - m);
        s = oob_block_reduce(s, scratch, false);
        const float inv_s = 1.f / s;
        const int target = targets[row];
        for (int v = threadIdx.x; v < vocab; v += blockDim.x)
            g[v] = (expf(x[v] - m) * inv_s - (v == target ? 1.f : 0.f)) * scale;
    }
}
