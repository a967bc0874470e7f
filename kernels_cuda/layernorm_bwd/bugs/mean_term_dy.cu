// KNOWN BUG (catalogue): the mean term of dx uses dy instead of g = dy * gamma.
//
// What it is: the kernel computes
//   dx[r, j] = rstd[r] * (g[r, j] - mean_j(dy[r, :]) - xhat[r, j] * mean_j(g[r, :] * xhat[r, :]))
// instead of
//   dx[r, j] = rstd[r] * (g[r, j] - mean_j(g[r, :]) - xhat[r, j] * mean_j(g[r, :] * xhat[r, :]))
// with g = dy * gamma, xhat = (x - mean) * rstd: the row mean subtracted from g is taken over the
// upstream gradient before the affine scale (a slip when porting a LayerNorm without affine
// parameters). The projection term, dgamma and dbeta are right.
// Shows at: every row whenever mean_j(dy * gamma) != mean_j(dy), i.e. gamma != 1, any shape and block
// size, hidden = 1 included (the right dx is 0 there; this kernel writes rstd * dy * (gamma - 1)).
// Every element of a row is shifted by the same amount, rstd * (mean_j(g) - mean_j(dy)), so dx no
// longer sums to zero over a row. Measured on the gradcheck cpu backend (x ~ N(0,1), gamma ~
// N(1, 0.5^2), dy ~ N(0,1), block 256), max |dx - reference| / max |reference|: rows=64, hidden=31:
// 3.2e-2; 257: 1.3e-2; 768: 6.6e-3; 4096: 2.3e-3 (the shift shrinks like 1/sqrt(hidden) for random
// dy, while correct kernels stay near 1e-7). Against the mutated formula above: <= 7.3e-7 for all
// rows {1, 3, 64} x hidden {1 .. 4096} x block {1, 32, 101, 128, 256, 1024}.
// Does not show: gamma == 1 everywhere (a freshly initialised LayerNorm), or rows where
// mean_j(dy * gamma) happens to equal mean_j(dy).
// What a user sees: dx off by a per-row constant (no NaN, plausible size); the error grows as gamma
// drifts from 1 during training, so a check at initialisation passes.
// Fix: accumulate g = dy * gamma (not dy) for the first row sum, as ../ln_bwd.cu does.
//
// Otherwise this is ../ln_bwd.cu: block-stride loop, warp-shuffle row sums with one shared slot per
// warp, any block size 1..1024.

#define LMD_MAX_WARPS 32

// Block-wide sums of a and b; every thread gets both. s_a / s_b hold one partial per warp.
__device__ __forceinline__ void lmd_block_sum2(float& a, float& b, float* s_a, float* s_b) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    const int width = min(32, (int)blockDim.x - (warp << 5));  // lanes this warp has (< 32: partial)
    const unsigned mask = width == 32 ? 0xffffffffu : (1u << width) - 1u;
    for (int o = 16; o > 0; o >>= 1) {
        const float oa = __shfl_down_sync(mask, a, o);
        const float ob = __shfl_down_sync(mask, b, o);
        if (lane + o < width) {  // the partner lane exists; otherwise its value is undefined
            a += oa;
            b += ob;
        }
    }
    if (lane == 0) {
        s_a[warp] = a;
        s_b[warp] = b;
    }
    __syncthreads();
    a = s_a[0];
    b = s_b[0];
    for (int w = 1; w < nwarps; ++w) {
        a += s_a[w];
        b += s_b[w];
    }
    __syncthreads();  // s_a / s_b are reused by the next row
}

extern "C" __global__ void __launch_bounds__(1024)
ln_bwd_mean_term_dy(const float* __restrict__ dy, const float* __restrict__ x,
                    const float* __restrict__ gamma, const float* __restrict__ mean,
                    const float* __restrict__ rstd, float* __restrict__ dx,
                    float* __restrict__ dgamma, float* __restrict__ dbeta, int rows, int hidden)
{
    __shared__ float s_a[LMD_MAX_WARPS];
    __shared__ float s_b[LMD_MAX_WARPS];
    const float inv_h = 1.f / (float)hidden;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* dyr = dy + (size_t)r * hidden;
        const float* xr = x + (size_t)r * hidden;
        float* dxr = dx + (size_t)r * hidden;
        const float mu = mean[r], rs = rstd[r];
        float sum_dy = 0.f, sum_gx = 0.f;
        for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
            const float xhat = (xr[j] - mu) * rs;
            const float g = dyr[j] * gamma[j];
            sum_dy += dyr[j];  // BUG: should be sum_g += g (the mean term is mean_j(dy * gamma))
            sum_gx += g * xhat;
        }
        lmd_block_sum2(sum_dy, sum_gx, s_a, s_b);
        const float c1 = sum_dy * inv_h;  // BUG: mean_j(dy) instead of mean_j(g)
        const float c2 = sum_gx * inv_h;  // mean_j(g * xhat)
        for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
            const float d = dyr[j];
            const float xhat = (xr[j] - mu) * rs;
            dxr[j] = rs * (d * gamma[j] - c1 - xhat * c2);
            atomicAdd(dgamma + j, d * xhat);
            atomicAdd(dbeta + j, d);
        }
    }
}
