// KNOWN BUG (catalogue): dgamma and dbeta accumulated with a plain read-modify-write instead of
// atomicAdd: a data race between blocks.
//
// What it is: every block (one row at a time) adds its row's dy[r, j] * xhat[r, j] and dy[r, j] into
// dgamma[j] and dbeta[j] with `dgamma[j] += ...` (load, add, store). Blocks of different rows run at
// the same time and update the same j: when two blocks load dgamma[j] before either stores, one
// block's contribution is lost. dx is computed exactly as in ../ln_bwd.cu and is right.
// Shows at: rows >= 2 with more than one block, whenever two blocks update the same column
// concurrently. The lost updates make dgamma[j] / dbeta[j] a sum over a random subset of the rows;
// which subset changes from run to run.
// On the gradcheck cpu backend with one worker (compare_schedules, workers=1) blocks run one after
// another, so the values come out right (and identical under every schedule); its race detector on
// global memory is what reports it there (`gradcheck run layernorm-bwd --kernel dgamma-race`: data-race,
// dgamma[0] written by block 0 and then, with a different value, by block 1, on every case with
// rows >= 2; the rows=1 case passes). With several workers (launch's default: one per core)
// blocks run on several OS threads at once and updates are lost there too, now and then. Measured
// on 2 cores, two rounds of 20 launches each: rows=64 hidden=768 block=256: 2 and 1 runs lost
// updates, dgamma/dbeta off by up to 29% (max abs error / max abs value); rows=64 hidden=4096
// block=1024: 5 and 5 runs, up to 24%; rows=64 hidden=32 block=32 and rows=3 hidden=257 block=101:
// none seen.
// Does not show: rows = 1 (one block), or grid = (1, 1, 1) (one block walks all rows).
// What a user sees: dgamma / dbeta missing some rows' contributions, a different set each run
// (bitwise nondeterministic, sometimes off by tens of percent), with dx correct; the LayerNorm scale
// and shift train erratically.
// Fix: atomicAdd(dgamma + j, d * xhat); atomicAdd(dbeta + j, d); (as ../ln_bwd.cu), or write
// per-block partials to a [blocks, hidden] buffer and reduce them in a second kernel.
//
// Otherwise this is ../ln_bwd.cu: block-stride loop, warp-shuffle row sums with one shared slot per
// warp, any block size 1..1024.

#define LDR_MAX_WARPS 32

// Block-wide sums of a and b; every thread gets both. s_a / s_b hold one partial per warp.
__device__ __forceinline__ void ldr_block_sum2(float& a, float& b, float* s_a, float* s_b) {
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
ln_bwd_dgamma_race(const float* __restrict__ dy, const float* __restrict__ x,
                   const float* __restrict__ gamma, const float* __restrict__ mean,
                   const float* __restrict__ rstd, float* __restrict__ dx, float* dgamma,
                   float* dbeta, int rows, int hidden)
{
    __shared__ float s_a[LDR_MAX_WARPS];
    __shared__ float s_b[LDR_MAX_WARPS];
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
        ldr_block_sum2(sum_g, sum_gx, s_a, s_b);
        const float c1 = sum_g * inv_h;   // mean_j(g)
        const float c2 = sum_gx * inv_h;  // mean_j(g * xhat)
        for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
            const float d = dyr[j];
            const float xhat = (xr[j] - mu) * rs;
            dxr[j] = rs * (d * gamma[j] - c1 - xhat * c2);
            // BUG: plain read-modify-write; blocks handling other rows update the same dgamma[j] and
            // dbeta[j] at the same time (atomicAdd(dgamma + j, d * xhat) and atomicAdd(dbeta + j, d)).
            dgamma[j] += d * xhat;
            dbeta[j] += d;
        }
    }
}
