// KNOWN BUG (catalogue): missing __syncthreads() between the max and the sum reduction, which share
// one scratch array: a race on s_red[0].
//
// What it is: both block reductions use the same shared array s_red (to save shared memory). After
// the max tree every thread reads the row maximum from s_red[0], then stores its partial sum into
// s_red[tid]. The barrier that must separate "everyone has read s_red[0]" from "thread 0 overwrites
// s_red[0]" is missing. A thread that reads s_red[0] after thread 0 (warp 0) has already stored its
// partial sum uses that partial sum as the "maximum": its exp(x - m) terms are shifted by a different
// amount from the other threads', so the row sum and every probability computed by that thread are
// wrong (finite, plausible-looking values; the -1 at the target column is still there).
// Shows at: every unmasked row with vocab >= 2, any block size, whenever warp 0 reaches the sum
// before another warp has read the maximum. On the gradcheck cpu backend compare_schedules gives
// different outputs (ScheduleDependentOutput from raise_if_inconsistent): schedule "asc" (thread 0
// runs first) is wrong for every unmasked row, "desc" (thread 0 runs last) happens to be right,
// "random" is wrong. E.g. rows=64, vocab=2000, block=256: 100000 of 128000 elements differ between
// asc and desc; asc is off from the reference by up to 99%, random by up to 600-1800%, all finite.
// The emulator runs a block's threads one after another between barriers, so even block = 32 shows
// it there; on a GPU a single warp usually reads s_red[0] before it overwrites it, and larger blocks
// fail intermittently, depending on warp timing, differently from run to run.
// Does not show: masked rows (they skip both reductions and write zeros), vocab = 1 (only thread 0
// owns an element, and it reads s_red[0] before writing it), the "desc" schedule.
// What a user sees: gradients off from the reference by a row- and run-dependent amount (no NaN),
// nondeterministic training that no single rerun reproduces.
// Fix: put __syncthreads() after `m = s_red[0];` (or use separate arrays for max and sum, as
// ../shared_tree.cu does).

#define MB_MAX_THREADS 1024

__device__ __forceinline__ int mb_pow2_ceil(int n) {
    int p = 1;
    while (p < n) p <<= 1;
    return p;
}

extern "C" __global__ void __launch_bounds__(MB_MAX_THREADS)
ce_grad_missing_barrier(const float* __restrict__ logits, const int* __restrict__ targets,
                        const float* __restrict__ mask, float* __restrict__ grad, int rows,
                        int vocab, float inv_n_valid)
{
    __shared__ float s_red[MB_MAX_THREADS];  // scratch for the max reduction, then for the sum
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int first_stride = mb_pow2_ceil(nthreads) >> 1;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* x = logits + (size_t)row * vocab;
        float* g = grad + (size_t)row * vocab;
        const float scale = mask[row] * inv_n_valid;
        if (scale == 0.f) {
            for (int v = tid; v < vocab; v += nthreads) g[v] = 0.f;
            continue;
        }
        float m = -INFINITY;
        for (int v = tid; v < vocab; v += nthreads) m = fmaxf(m, x[v]);
        s_red[tid] = m;
        __syncthreads();
        for (int stride = first_stride; stride > 0; stride >>= 1) {
            if (tid < stride && tid + stride < nthreads)
                s_red[tid] = fmaxf(s_red[tid], s_red[tid + stride]);
            __syncthreads();
        }
        m = s_red[0];
        // BUG: a __syncthreads() belongs here; s_red[0] is overwritten just below.
        float s = 0.f;
        for (int v = tid; v < vocab; v += nthreads) s += expf(x[v] - m);
        s_red[tid] = s;
        __syncthreads();
        for (int stride = first_stride; stride > 0; stride >>= 1) {
            if (tid < stride && tid + stride < nthreads) s_red[tid] += s_red[tid + stride];
            __syncthreads();
        }
        const float inv_s = 1.f / s_red[0];
        __syncthreads();  // s_red is reused by the next row
        const int target = targets[row];
        for (int v = tid; v < vocab; v += nthreads)
            g[v] = (expf(x[v] - m) * inv_s - (v == target ? 1.f : 0.f)) * scale;
    }
}
