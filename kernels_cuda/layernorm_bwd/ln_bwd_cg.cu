// Layer-norm backward with cooperative groups: dx, dgamma, dbeta, one row per block, any hidden size,
// any block size.
//
//   xhat[r, j] = (x[r, j] - mean[r]) * rstd[r],   g[r, j] = dy[r, j] * gamma[j]
//   dx[r, j]   = rstd[r] * (g[r, j] - mean_j(g[r, :]) - xhat[r, j] * mean_j(g[r, :] * xhat[r, :]))
//   dgamma[j] += sum_r dy[r, j] * xhat[r, j]      dbeta[j] += sum_r dy[r, j]
//
// Launch: grid = (rows, 1, 1) (or fewer blocks: rows are grid-strided), block = (B, 1, 1) with any
// 1 <= B <= 1024, partial warps included (e.g. 101); no dynamic shared memory. mean and rstd are the
// forward pass's per-row float32 statistics. Every element of dx is written; dgamma and dbeta must
// start at zero and are accumulated with atomicAdd across rows (blocks).
// Written in the style of current public kernels: cg::thread_block / cg::thread_block_tile<32>,
// cg::reduce(warp, v, cg::plus<float>()) for the warp sums, block.sync() for barriers, streaming
// loads (__ldcs) for dy and x and a streaming store (__stcs) for dx.
// Partial warps: tiled_partition<32> gives the last warp of a block of, say, 101 threads a tile that
// still claims 32 lanes (full shuffle mask), so cg::reduce there would shuffle with 27 lanes that do
// not exist. Only full warps use cg::reduce; the lanes of a partial last warp park their values in
// shared memory (s_tail_*), and every thread adds the full warps' slots and then the tail values in
// the same fixed order, so all threads get bit-identical row sums.
// The kernel declares its own extern "C" linkage, so it is compiled as written (gradcheck does not
// wrap a source that says extern "C" itself; PyCUDA users pass no_extern_c=True for such files).

#include <cuda_runtime.h>
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>

namespace cg = cooperative_groups;

#define LCG_MAX_WARPS 32

extern "C" __global__ void __launch_bounds__(1024)
ln_bwd_cg(const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ gamma,
          const float* __restrict__ mean, const float* __restrict__ rstd, float* __restrict__ dx,
          float* __restrict__ dgamma, float* __restrict__ dbeta, int rows, int hidden)
{
    __shared__ float s_g[LCG_MAX_WARPS];    // per full warp: sum of g
    __shared__ float s_gx[LCG_MAX_WARPS];   // per full warp: sum of g * xhat
    __shared__ float s_tail_g[32];          // per lane of a partial last warp
    __shared__ float s_tail_gx[32];

    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    const int tid = (int)block.thread_rank();
    const int nthreads = (int)block.size();
    const int n_full = nthreads / 32;       // warps with all 32 lanes
    const int n_tail = nthreads % 32;       // lanes of the partial last warp (0: none)
    const bool full_warp = (int)warp.meta_group_rank() < n_full;
    const float inv_h = 1.f / (float)hidden;

    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* dyr = dy + (size_t)r * hidden;
        const float* xr = x + (size_t)r * hidden;
        float* dxr = dx + (size_t)r * hidden;
        const float mu = mean[r], rs = rstd[r];

        float sum_g = 0.f, sum_gx = 0.f;
        for (int j = tid; j < hidden; j += nthreads) {
            const float xhat = (__ldcs(xr + j) - mu) * rs;
            const float g = __ldcs(dyr + j) * gamma[j];
            sum_g += g;
            sum_gx += g * xhat;
        }
        if (full_warp) {
            sum_g = cg::reduce(warp, sum_g, cg::plus<float>());
            sum_gx = cg::reduce(warp, sum_gx, cg::plus<float>());
            if (warp.thread_rank() == 0) {
                s_g[warp.meta_group_rank()] = sum_g;
                s_gx[warp.meta_group_rank()] = sum_gx;
            }
        } else {
            s_tail_g[warp.thread_rank()] = sum_g;
            s_tail_gx[warp.thread_rank()] = sum_gx;
        }
        block.sync();
        sum_g = 0.f;
        sum_gx = 0.f;
        for (int w = 0; w < n_full; ++w) {
            sum_g += s_g[w];
            sum_gx += s_gx[w];
        }
        for (int l = 0; l < n_tail; ++l) {
            sum_g += s_tail_g[l];
            sum_gx += s_tail_gx[l];
        }
        block.sync();  // the slots are reused by the next row

        const float c1 = sum_g * inv_h;   // mean_j(g)
        const float c2 = sum_gx * inv_h;  // mean_j(g * xhat)
        for (int j = tid; j < hidden; j += nthreads) {
            const float d = __ldcs(dyr + j);
            const float xhat = (__ldcs(xr + j) - mu) * rs;
            __stcs(dxr + j, rs * (d * gamma[j] - c1 - xhat * c2));
            atomicAdd(dgamma + j, d * xhat);
            atomicAdd(dbeta + j, d);
        }
    }
}
