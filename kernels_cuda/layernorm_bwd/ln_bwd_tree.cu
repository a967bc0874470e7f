// Layer-norm backward, shared-memory tree reductions (the classic layout): dx, dgamma, dbeta, one row
// per block, any hidden size, any block size.
//
//   xhat[r, j] = (x[r, j] - mean[r]) * rstd[r],   g[r, j] = dy[r, j] * gamma[j]
//   dx[r, j]   = rstd[r] * (g[r, j] - mean_j(g[r, :]) - xhat[r, j] * mean_j(g[r, :] * xhat[r, :]))
//   dgamma[j] += sum_r dy[r, j] * xhat[r, j]      dbeta[j] += sum_r dy[r, j]
//
// Launch: grid = (rows, 1, 1) (or fewer blocks: rows are grid-strided), block = (B, 1, 1) with any
// 1 <= B <= 1024 (not necessarily a power of two or a multiple of 32: 101 works); no dynamic shared
// memory. mean and rstd are the forward pass's per-row float32 statistics. Every element of dx is
// written; dgamma and dbeta must start at zero and are accumulated with atomicAdd across rows.
// Each thread reduces its block-stride slice into s_g[tid] and s_gx[tid]; the block then halves the
// active range with a __syncthreads() after every step. The first stride is half of blockDim rounded
// up to a power of two, and a thread only folds in tid + stride when that slot exists. No warp
// shuffles: every thread recomputes xhat = (x - mean) * rstd from x in both passes (nothing is kept
// per element between the passes). The two sums live in separate arrays, and a barrier after reading
// the results keeps the next row's partials from overwriting them early.

#define LT_MAX_THREADS 1024

// Smallest power of two >= n (n >= 1).
__device__ __forceinline__ int lt_pow2_ceil(int n) {
    int p = 1;
    while (p < n) p <<= 1;
    return p;
}

extern "C" __global__ void __launch_bounds__(LT_MAX_THREADS)
ln_bwd_tree(const float* __restrict__ dy, const float* __restrict__ x,
            const float* __restrict__ gamma, const float* __restrict__ mean,
            const float* __restrict__ rstd, float* __restrict__ dx, float* __restrict__ dgamma,
            float* __restrict__ dbeta, int rows, int hidden)
{
    __shared__ float s_g[LT_MAX_THREADS];   // partial sums of g
    __shared__ float s_gx[LT_MAX_THREADS];  // partial sums of g * xhat
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int first_stride = lt_pow2_ceil(nthreads) >> 1;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* dyr = dy + (size_t)r * hidden;
        const float* xr = x + (size_t)r * hidden;
        float* dxr = dx + (size_t)r * hidden;
        const float mu = mean[r], rs = rstd[r];
        float sg = 0.f, sgx = 0.f;
        for (int j = tid; j < hidden; j += nthreads) {
            const float g = dyr[j] * gamma[j];
            sg += g;
            sgx += g * ((xr[j] - mu) * rs);
        }
        s_g[tid] = sg;
        s_gx[tid] = sgx;
        __syncthreads();
        for (int stride = first_stride; stride > 0; stride >>= 1) {
            if (tid < stride && tid + stride < nthreads) {
                s_g[tid] += s_g[tid + stride];
                s_gx[tid] += s_gx[tid + stride];
            }
            __syncthreads();
        }
        const float c1 = s_g[0] / (float)hidden;   // mean_j(g)
        const float c2 = s_gx[0] / (float)hidden;  // mean_j(g * xhat)
        __syncthreads();  // everyone has read s_g[0] / s_gx[0] before the next row overwrites them
        for (int j = tid; j < hidden; j += nthreads) {
            const float d = dyr[j];
            const float xhat = (xr[j] - mu) * rs;
            dxr[j] = rs * (d * gamma[j] - c1 - xhat * c2);
            atomicAdd(dgamma + j, d * xhat);
            atomicAdd(dbeta + j, d);
        }
    }
}
