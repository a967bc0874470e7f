// KNOWN BUG (catalogue): the projection term of dx uses (x - mean) instead of
// xhat = (x - mean) * rstd.
//
// What it is: the kernel computes
//   dx[r, j] = rstd[r] * (g[r, j] - mean_j(g[r, :])
//                         - (x[r, j] - mean[r]) * mean_j(g[r, :] * (x[r, :] - mean[r])))
// instead of
//   dx[r, j] = rstd[r] * (g[r, j] - mean_j(g[r, :]) - xhat[r, j] * mean_j(g[r, :] * xhat[r, :]))
// with g = dy * gamma, xhat = (x - mean) * rstd: both factors of the projection term miss their rstd,
// so that term is scaled by 1 / rstd^2 = var + eps. dgamma and dbeta (which use xhat) are right.
// Shows at: every row whose variance is not close to 1 - eps, any shape and block size; the error in
// dx is rstd * |var + eps - 1| * |xhat * mean_j(g * xhat)|, so it grows with |var - 1|.
// Measured on the gradcheck cpu backend (gamma ~ N(1, 0.5^2), dy ~ N(0,1), block 256, rows=64),
// max |dx - reference| / max |reference|:
//   x ~ N(0, 1)   (var near 1, the bug nearly hides): hidden 33: 1.0e-1, 257: 7.9e-3,
//                 768: 3.3e-3, 4096: 7.3e-4 (rows=3, hidden=4096: 1.4e-4);
//   x ~ 3 N(0, 1) (var ~ 9):    hidden 33: 2.0, 257: 0.66, 768: 0.34, 4096: 0.15;
//   x ~ 0.3 N(0, 1) (var ~ 0.09): hidden 33: 0.16, 768: 4.0e-2, 4096: 1.7e-2.
// Against the mutated formula above: <= 4.0e-7 for all rows {1, 3, 64} x hidden {1 .. 4096} x block
// {1, 32, 101, 128, 256, 1024} at each of the three scales; correct kernels are near 1e-7.
// Does not show: var + eps == 1 (unit-variance input; for x ~ N(0, 1) the error is small and shrinks
// with hidden, so a loose tolerance misses it), hidden = 1 (x - mean = 0, dx = 0 either way).
// What a user sees: dx right along the mean direction, wrong along xhat; no NaN; the mismatch grows
// with the activations' scale away from 1 (large activations blow the projection up).
// Fix: project on xhat: sum g * xhat and subtract xhat * mean_j(g * xhat), as ../ln_bwd.cu does.
//
// Otherwise this is ../ln_bwd.cu: block-stride loop, warp-shuffle row sums with one shared slot per
// warp, any block size 1..1024.

#define LPN_MAX_WARPS 32

// Block-wide sums of a and b; every thread gets both. s_a / s_b hold one partial per warp.
__device__ __forceinline__ void lpn_block_sum2(float& a, float& b, float* s_a, float* s_b) {
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
ln_bwd_proj_no_rstd(const float* __restrict__ dy, const float* __restrict__ x,
                    const float* __restrict__ gamma, const float* __restrict__ mean,
                    const float* __restrict__ rstd, float* __restrict__ dx,
                    float* __restrict__ dgamma, float* __restrict__ dbeta, int rows, int hidden)
{
    __shared__ float s_a[LPN_MAX_WARPS];
    __shared__ float s_b[LPN_MAX_WARPS];
    const float inv_h = 1.f / (float)hidden;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* dyr = dy + (size_t)r * hidden;
        const float* xr = x + (size_t)r * hidden;
        float* dxr = dx + (size_t)r * hidden;
        const float mu = mean[r], rs = rstd[r];
        float sum_g = 0.f, sum_gx = 0.f;
        for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
            const float xc = xr[j] - mu;  // BUG: the projection should use xhat = xc * rstd
            const float g = dyr[j] * gamma[j];
            sum_g += g;
            sum_gx += g * xc;
        }
        lpn_block_sum2(sum_g, sum_gx, s_a, s_b);
        const float c1 = sum_g * inv_h;   // mean_j(g)
        const float c2 = sum_gx * inv_h;  // BUG: mean_j(g * (x - mean)), not mean_j(g * xhat)
        for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
            const float d = dyr[j];
            const float xc = xr[j] - mu;
            const float xhat = xc * rs;
            dxr[j] = rs * (d * gamma[j] - c1 - xc * c2);  // BUG: xc * c2 instead of xhat * c2
            atomicAdd(dgamma + j, d * xhat);
            atomicAdd(dbeta + j, d);
        }
    }
}
