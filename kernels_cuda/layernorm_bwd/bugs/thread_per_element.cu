// KNOWN BUG (catalogue): "one thread per hidden element" layout without a block-stride loop;
// columns >= blockDim.x are never touched.
//
// What it is: j = threadIdx.x, guarded by `if (j < hidden)`, and no loop over j += blockDim.x. The
// layout assumes the block is launched with blockDim.x >= hidden. With hidden > B = blockDim.x:
//   - dx[r, j] for j >= B is never written (NaN poison on the gradcheck backends, Launch.unwritten;
//     stale memory on a plain GPU run), and dgamma[j], dbeta[j] for j >= B stay at their initial zero;
//   - the row sums only cover j < B, still divided by hidden, so for j < B the kernel writes
//       dx[r, j] = rstd[r] * (g[r, j] - S1 / hidden - xhat[r, j] * S2 / hidden),
//       S1 = sum_{j' < B} g[r, j'],  S2 = sum_{j' < B} g[r, j'] * xhat[r, j']
//     (g = dy * gamma, xhat = (x - mean) * rstd), which differs from the right dx;
//   - dgamma[j] and dbeta[j] for j < B are right.
// Shows at: hidden > blockDim.x, e.g. hidden 33 / 100 with block 32, hidden 257 with block 256, hidden
// 768 / 4096 with block 256, hidden 1025 with block 1024, any hidden >= 2 with block 1.
// Measured on the gradcheck cpu backend (typical data, rows {1, 3, 64} x hidden {1 .. 4096} x block
// {1, 32, 101, 128, 256, 1024}): whenever hidden > B, Launch.unwritten[5] == rows * (hidden - B) and
// dgamma / dbeta are exactly 0 for j >= B; dx[:, :B] matches the formula above to <= 1.6e-7
// (max |error| / max |value|) but not the right dx: rows=64: hidden 257 / block 256: 1.2e-2, hidden
// 1025 / block 1024: 3.3e-3, hidden 768 / block 256: 3.8e-2, hidden 4096 / block 256: 1.8e-2.
// Does not show: hidden <= blockDim.x (then it is exactly the right computation, within 4.5e-7 of
// the float64 reference; threads j >= hidden add zeros to the sums).
// What a user sees: NaN / garbage (or, with a zeroed dx buffer, zeros) in the last hidden - B columns
// of every row's dx, dgamma and dbeta zero there, and the first B columns of dx slightly off;
// training diverges or the tail features never learn.
// Fix: a block-stride loop, for (j = threadIdx.x; j < hidden; j += blockDim.x), in both passes (see
// ../ln_bwd.cu).

#define LTE_MAX_WARPS 32

// Block-wide sums of a and b; every thread gets both. s_a / s_b hold one partial per warp.
__device__ __forceinline__ void lte_block_sum2(float& a, float& b, float* s_a, float* s_b) {
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
ln_bwd_thread_per_element(const float* __restrict__ dy, const float* __restrict__ x,
                          const float* __restrict__ gamma, const float* __restrict__ mean,
                          const float* __restrict__ rstd, float* __restrict__ dx,
                          float* __restrict__ dgamma, float* __restrict__ dbeta, int rows, int hidden)
{
    __shared__ float s_a[LTE_MAX_WARPS];
    __shared__ float s_b[LTE_MAX_WARPS];
    const float inv_h = 1.f / (float)hidden;
    // BUG: one thread per element and no block-stride loop; columns j >= blockDim.x have no thread.
    const int j = threadIdx.x;
    const bool active = j < hidden;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* dyr = dy + (size_t)r * hidden;
        const float* xr = x + (size_t)r * hidden;
        float* dxr = dx + (size_t)r * hidden;
        const float mu = mean[r], rs = rstd[r];
        float d = 0.f, xhat = 0.f, g = 0.f;
        if (active) {
            d = dyr[j];
            xhat = (xr[j] - mu) * rs;
            g = d * gamma[j];
        }
        // The row sums only see columns j < blockDim.x (every thread takes part, so no barrier is
        // skipped).
        float sum_g = g, sum_gx = g * xhat;
        lte_block_sum2(sum_g, sum_gx, s_a, s_b);
        const float c1 = sum_g * inv_h;   // divided by hidden, summed over j < min(hidden, blockDim.x)
        const float c2 = sum_gx * inv_h;
        if (active) {
            dxr[j] = rs * (g - c1 - xhat * c2);
            atomicAdd(dgamma + j, d * xhat);
            atomicAdd(dbeta + j, d);
        }
    }
}
