// Cooperative groups as real CUDA code uses them; the cpu backend must run these unmodified.
// Compiled with no_extern_c=True (cooperative_groups.h is C++: nvcc rejects it inside extern "C").
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cooperative_groups/scan.h>
#include <cuda_runtime.h>

namespace cg = cooperative_groups;

// One sum per block: tiles of 32 reduce with cg::reduce, then warp 0 reduces the tiles' sums. The
// last warp of a block whose size is not a multiple of 32 is partial; a tile reduction there would
// read lanes that do not exist, so that warp reduces over the threads that do (coalesced_threads()).
extern "C" __global__ void block_sum_cg(const float* __restrict__ x, float* __restrict__ out, int n) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    __shared__ float partial[32];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float v = i < n ? __ldg(&x[i]) : 0.f;
    const bool whole = (warp.meta_group_rank() + 1) * 32 <= block.size();
    const float s = whole ? cg::reduce(warp, v, cg::plus<float>())
                          : cg::reduce(cg::coalesced_threads(), v, cg::plus<float>());
    if (warp.thread_rank() == 0) partial[warp.meta_group_rank()] = s;
    block.sync();
    if (warp.meta_group_rank() == 0) {
        float t = warp.thread_rank() < warp.meta_group_size() ? partial[warp.thread_rank()] : 0.f;
        t = cg::reduce(warp, t, cg::plus<float>());
        if (warp.thread_rank() == 0) __stcs(&out[blockIdx.x], t);
    }
}

// The same with shfl_down loops, guarded so a partial warp adds only lanes that exist.
extern "C" __global__ void block_sum_shfl(const float* __restrict__ x, float* __restrict__ out, int n) {
    cg::thread_block block = cg::this_thread_block();
    auto warp = cg::tiled_partition<32>(block);
    __shared__ float partial[32];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.f;
    const unsigned lanes = min(32u, block.size() - warp.meta_group_rank() * 32);
    for (unsigned d = 16; d > 0; d >>= 1) {
        const float o = warp.shfl_down(v, d);
        if (warp.thread_rank() + d < lanes) v += o;
    }
    if (warp.thread_rank() == 0) partial[warp.meta_group_rank()] = v;
    cg::sync(block);
    if (warp.meta_group_rank() == 0) {
        float t = warp.thread_rank() < warp.meta_group_size() ? partial[warp.thread_rank()] : 0.f;
        for (unsigned d = 16; d > 0; d >>= 1) t += warp.shfl_down(t, d);
        if (warp.thread_rank() == 0) out[blockIdx.x] = t;
    }
}

// Every thread writes its tile's cg::reduce result, with no care for a partial last warp.
extern "C" __global__ void tile_sum_each(const float* x, float* out, const int* xi, int* outi) {
    auto warp = cg::tiled_partition<32>(cg::this_thread_block());
    const unsigned t = cg::this_thread_block().thread_rank();
    out[t] = cg::reduce(warp, x[t], cg::plus<float>());
    outi[t] = cg::reduce(warp, xi[t], cg::plus<int>());
}

// Tiles of 16 and 8 (and 4 cut from the 16): ranks, sizes and meta ranks, 8 ints per thread.
extern "C" __global__ void tile_info(int* out) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<16> t16 = cg::tiled_partition<16>(block);
    auto t8 = cg::tiled_partition<8>(block);
    auto t4 = cg::tiled_partition<4>(t16);
    int* o = out + 8 * block.thread_rank();
    o[0] = t16.thread_rank();
    o[1] = t16.meta_group_rank();
    o[2] = t16.meta_group_size();
    o[3] = t8.meta_group_rank();
    o[4] = t8.meta_group_size() * 100 + t8.size();
    o[5] = t4.meta_group_rank();
    o[6] = t4.meta_group_size() * 100 + t4.num_threads();
    o[7] = cg::thread_rank(t4) + 100 * (int)cg::group_size(block);
}

// greater/less over tiles of 16: floats take the shuffle butterfly, ints the __reduce_*_sync path.
extern "C" __global__ void tile_minmax(const float* x, float* mx, float* mn, const int* xi, int* mxi, int* mni) {
    auto tile = cg::tiled_partition<16>(cg::this_thread_block());
    const int t = threadIdx.x;
    mx[t] = cg::reduce(tile, x[t], cg::greater<float>());
    mn[t] = cg::reduce(tile, x[t], cg::less<float>());
    mxi[t] = cg::reduce(tile, xi[t], cg::greater<int>());
    mni[t] = cg::reduce(tile, xi[t], cg::less<int>());
}

// Scans over tiles of 8 (ints) and 32 (floats, with a lambda for the exclusive one).
extern "C" __global__ void tile_scan(const int* x, int* incl, int* excl, const float* xf, float* inclf, float* exclf) {
    cg::thread_block block = cg::this_thread_block();
    auto t8 = cg::tiled_partition<8>(block);
    auto t32 = cg::tiled_partition<32>(block);
    const int t = threadIdx.x;
    incl[t] = cg::inclusive_scan(t8, x[t]);
    excl[t] = cg::exclusive_scan(t8, x[t], cg::plus<int>());
    inclf[t] = cg::inclusive_scan(t32, xf[t], cg::plus<float>());
    exclf[t] = cg::exclusive_scan(t32, xf[t], [](float a, float b) { return a + b; });
}

// Tile votes and a shuffle of a 16-byte value.
extern "C" __global__ void tile_votes(const int* x, unsigned* out, float4* v) {
    auto tile = cg::tiled_partition<8>(cg::this_thread_block());
    const int t = threadIdx.x;
    const int p = x[t] > 0;
    out[4 * t + 0] = tile.ballot(p);
    out[4 * t + 1] = tile.any(p) + 2 * tile.all(p);
    out[4 * t + 2] = tile.match_any(x[t]);
    out[4 * t + 3] = tile.shfl_xor(t, 1) + 1000 * tile.shfl_up(t, 1);
    v[t] = tile.shfl(v[t], 7);
}

// tiled_partition(block, n) and coalesced groups.
extern "C" __global__ void dynamic_groups(const int* x, int* out) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_group g = cg::tiled_partition(block, 4);
    const int t = threadIdx.x;
    out[6 * t + 0] = (int)g.thread_rank();
    out[6 * t + 1] = (int)g.size();
    g.sync();
    cg::coalesced_group active = cg::coalesced_threads();
    out[6 * t + 2] = active.thread_rank() * 100 + active.size();
    out[6 * t + 3] = active.shfl(x[t], 3);
    cg::coalesced_group odd = cg::labeled_partition(active, x[t] & 1);
    out[6 * t + 4] = odd.size() * 100 + odd.thread_rank();
    out[6 * t + 5] = cg::reduce(odd, x[t], cg::plus<int>()) * 100 + cg::reduce(odd, (float)x[t], cg::plus<float>()) ;
}

// The whole grid: ranks and sizes work without a cooperative launch; grid.sync() does not.
extern "C" __global__ void grid_info(unsigned long long* out) {
    cg::grid_group grid = cg::this_grid();
    const unsigned long long r = grid.thread_rank();
    out[3 * r + 0] = r;
    out[3 * r + 1] = grid.size() * 10 + grid.num_threads();
    out[3 * r + 2] = grid.is_valid() + 10 * grid.block_rank();
}

extern "C" __global__ void grid_barrier(float* x) {
    cg::grid_group grid = cg::this_grid();
    x[grid.thread_rank()] += 1.f;
    grid.sync();
    x[grid.thread_rank()] *= 2.f;
}

// Bug: half the warp returns, then the tile shuffles with all 32 lanes.
extern "C" __global__ void tile_shfl_after_exit(float* x) {
    auto warp = cg::tiled_partition<32>(cg::this_thread_block());
    if (warp.thread_rank() >= 16) return;
    x[threadIdx.x] = warp.shfl(x[threadIdx.x], 0);
}

// Bug: block.sync() inside a branch only some threads take.
extern "C" __global__ void block_sync_in_branch(float* x) {
    cg::thread_block block = cg::this_thread_block();
    if (threadIdx.x < 16) {
        x[threadIdx.x] += 1.f;
        block.sync();
    } else {
        block.sync();
    }
}
