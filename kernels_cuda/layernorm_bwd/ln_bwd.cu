// Layer-norm backward: dx, dgamma, dbeta for one row per block, any hidden size, any block size.
//
//   xhat[r, j] = (x[r, j] - mean[r]) * rstd[r],   g[r, j] = dy[r, j] * gamma[j]
//   dx[r, j]   = rstd[r] * (g[r, j] - mean_j(g[r, :]) - xhat[r, j] * mean_j(g[r, :] * xhat[r, :]))
//   dgamma[j] += sum_r dy[r, j] * xhat[r, j]      dbeta[j] += sum_r dy[r, j]
//
// Launch: grid = (rows, 1, 1) (or fewer blocks: rows are grid-strided), block = (B, 1, 1) with any
// 1 <= B <= 1024, partial warps included (e.g. 101); no dynamic shared memory. mean and rstd are the
// forward pass's per-row float32 statistics. Every element of dx is written; dgamma and dbeta must
// start at zero and are accumulated with atomicAdd across rows (blocks).
// Each thread walks its block-stride slice of the row once for the two row sums (sum g, sum g * xhat),
// which are reduced together: a __shfl_down_sync tree inside each warp (a lane only adds a partner
// that exists, and the mask names only the lanes the warp has, so a partial last warp is fine), one
// shared slot per warp, and every thread adds the slots up in warp order (the same order in every
// thread, so all threads get bit-identical sums). A second pass writes dx and the dgamma/dbeta terms.

#define LB_MAX_WARPS 32

// Block-wide sums of a and b; every thread gets both. s_a / s_b hold one partial per warp.
__device__ __forceinline__ void lb_block_sum2(float& a, float& b, float* s_a, float* s_b) {
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
ln_bwd(const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ gamma,
       const float* __restrict__ mean, const float* __restrict__ rstd, float* __restrict__ dx,
       float* __restrict__ dgamma, float* __restrict__ dbeta, int rows, int hidden)
{
    __shared__ float s_a[LB_MAX_WARPS];
    __shared__ float s_b[LB_MAX_WARPS];
    const float inv_h = 1.f / (float)hidden;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* dyr = dy + (size_t)r * hidden;
        const float* xr = x + (size_t)r * hidden;
        float* dxr = dx + (size_t)r * hidden;
        const float mu = mean[r], rs = rstd[r];
        float sum_g = 0.f, sum_gx = 0.f;
        for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
            const float xhat = (xr[j] - mu) * rs;
            const float g = dyr[j] * gamma[j];
            sum_g += g;
            sum_gx += g * xhat;
        }
        lb_block_sum2(sum_g, sum_gx, s_a, s_b);
        const float c1 = sum_g * inv_h;   // mean_j(g)
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
