// Softmax cross-entropy gradient, online-softmax variant: one pass over the row per thread for
// the (max, sum of exp) pair, then one write pass.
//
//   grad[r, v] = mask[r] * inv_n_valid * (softmax(logits[r, :])[v] - (v == targets[r]))
//
// Launch: grid = (rows, 1, 1), block = (B, 1, 1) with B a multiple of 32 (at most 1024); no dynamic
// shared memory. Every element of grad is written, masked rows included (with zeros).
// Each thread walks its block-stride slice of the row once, keeping a running maximum m and the sum
// s of exp(x - m); when a larger x arrives the sum is rescaled by exp(m_old - m_new). The per-thread
// pairs are merged with warp shuffles, then across warps through one shared slot per warp. A thread
// that saw no element (vocab < B) holds the neutral pair (-inf, 0), which the merge treats as empty.

#define OL_FULL_MASK 0xffffffffu

struct ol_pair {
    float m;  // running maximum (-INFINITY: no element seen yet)
    float s;  // sum of exp(x - m) over the elements seen
};

// s * exp(m_from - m_to), with an empty pair (m_from == -inf) contributing exactly 0 (never NaN).
__device__ __forceinline__ float ol_rescale(float s, float m_from, float m_to) {
    return m_from == -INFINITY ? 0.f : s * expf(m_from - m_to);
}

__device__ __forceinline__ ol_pair ol_merge(ol_pair a, ol_pair b) {
    const float m = fmaxf(a.m, b.m);
    return ol_pair{m, ol_rescale(a.s, a.m, m) + ol_rescale(b.s, b.m, m)};
}

__device__ __forceinline__ ol_pair ol_warp_merge(ol_pair p) {
    for (int o = 16; o > 0; o >>= 1) {
        ol_pair q;
        q.m = __shfl_xor_sync(OL_FULL_MASK, p.m, o);
        q.s = __shfl_xor_sync(OL_FULL_MASK, p.s, o);
        p = ol_merge(p, q);
    }
    return p;
}

// Every thread gets the block's merged pair. s_m / s_s hold one partial pair per warp.
__device__ ol_pair ol_block_merge(ol_pair p, float* s_m, float* s_s) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    p = ol_warp_merge(p);
    if (lane == 0) {
        s_m[warp] = p.m;
        s_s[warp] = p.s;
    }
    __syncthreads();
    ol_pair r{s_m[0], s_s[0]};
    for (int w = 1; w < nwarps; ++w) r = ol_merge(r, ol_pair{s_m[w], s_s[w]});
    __syncthreads();  // s_m / s_s are reused by the next row
    return r;
}

extern "C" __global__ void __launch_bounds__(1024)
ce_grad_online(const float* __restrict__ logits, const int* __restrict__ targets,
               const float* __restrict__ mask, float* __restrict__ grad, int rows, int vocab,
               float inv_n_valid)
{
    __shared__ float s_m[32];
    __shared__ float s_s[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* x = logits + (size_t)row * vocab;
        float* g = grad + (size_t)row * vocab;
        const float scale = mask[row] * inv_n_valid;
        if (scale == 0.f) {  // masked row (or no valid rows at all): the gradient is zero
            for (int v = threadIdx.x; v < vocab; v += blockDim.x) g[v] = 0.f;
            continue;
        }
        // One pass: running (max, sum) pair.
        ol_pair p{-INFINITY, 0.f};
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
            const float xv = x[v];
            if (xv > p.m) {
                p.s = p.s * expf(p.m - xv) + 1.f;  // first element: 0 * exp(-inf) + 1 = 1
                p.m = xv;
            } else {
                p.s += expf(xv - p.m);
            }
        }
        p = ol_block_merge(p, s_m, s_s);
        const float inv_s = 1.f / p.s;
        const int target = targets[row];
        for (int v = threadIdx.x; v < vocab; v += blockDim.x)
            g[v] = (expf(x[v] - p.m) * inv_s - (v == target ? 1.f : 0.f)) * scale;
    }
}
