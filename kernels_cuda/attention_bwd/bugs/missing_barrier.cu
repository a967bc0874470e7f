// KNOWN BUG (catalogue): missing __syncthreads() between writing the shared ds chunk and reading it
// for dq.
//
// What it is: the kernel is ../attn_bwd.cu without the first of its two barriers per key chunk.
// Phase A: thread t computes ds for keys jj = t, t + B, ... of the chunk and stores them in s_ds[jj]
// (dk and dv get their atomicAdds here). Phase B: thread t sums s_ds[jj] * k[j0 + jj, d] over every
// jj of the chunk for its columns d = t, t + B, ... and adds scale * sum to dq[i, d]. Without the
// barrier between them, phase B reads entries that other threads may not have written yet: in a
// block's first chunk whatever shared memory held (NaN poison on the gradcheck cpu backend,
// leftovers of another block on a GPU), in later chunks or rows the previous chunk's or row's ds.
// The barrier after phase B is still there. Only dq is wrong; dk and dv are always right.
// Shows at: any block size B >= 2 except seq = 1 with head_dim = 1, in at least one thread order,
// and there compare_schedules reports different dq (ScheduleDependentOutput): on the cpu backend,
// schedule "asc" (thread 0 first) gives NaN in dq for every row with >= 2 unmasked keys (thread 0
// reads keys owned by threads that have not run); "desc" gives NaN in every row when head_dim >= 2
// (thread t >= 1 reads key 0, whose owner thread 0 runs last); "random" lies between. Many keys per
// thread (seq > B) or several chunks (seq > AB_CHUNK) do not hide it: e.g. batch 1, heads 2,
// seq 100, head_dim 64, B 32 has NaN in all 200 dq rows under every schedule, at different
// columns. When a block handles several rows (a grid smaller than seq) or chunks, the later ones
// read the previous row's or chunk's ds instead of poison: finite values, off by O(1) (0.8 to 1.6
// of max |dq| at seq 100, grid (3, 2), B 32).
// Does not show: B = 1 (the single thread writes the whole chunk before reading it); seq = 1 with
// head_dim = 1 (thread 0 is the only writer and the only reader). "desc" alone is right whenever
// head_dim = 1, and "asc" alone is right for rows with one unmasked key (seq = 1, causal row 0).
// On a GPU it is intermittent: a warp that reaches phase B before another warp has finished phase
// A reads stale ds; one-warp blocks usually get away with it.
// What a user sees: query gradients that are NaN or wrong by O(1), changing from run to run, while
// dk and dv check out.
// Fix: put __syncthreads() between the phase-A loop and the dq loop (as ../attn_bwd.cu does).

#ifndef AB_CHUNK
#define AB_CHUNK 1024
#endif

extern "C" __global__ void __launch_bounds__(1024)
attn_bwd_missing_barrier(const float* __restrict__ q, const float* __restrict__ k,
                         const float* __restrict__ v, const float* __restrict__ o,
                         const float* __restrict__ dout, const float* __restrict__ lse,
                         float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv,
                         int batch, int heads, int seq, int head_dim, float scale, int causal)
{
    __shared__ float s_ds[AB_CHUNK];
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int n_bh = batch * heads;
    for (int bh = blockIdx.y; bh < n_bh; bh += gridDim.y) {
        const size_t head = (size_t)bh * seq * head_dim;
        const float* kh = k + head;
        const float* vh = v + head;
        float* dkh = dk + head;
        float* dvh = dv + head;
        for (int i = blockIdx.x; i < seq; i += gridDim.x) {
            const size_t row = head + (size_t)i * head_dim;
            const float* qi = q + row;
            const float* oi = o + row;
            const float* doi = dout + row;
            float* dqi = dq + row;
            const float lse_i = lse[(size_t)bh * seq + i];
            const int n_keys = causal ? min(i + 1, seq) : seq;
            float D = 0.f;
            for (int d = 0; d < head_dim; ++d) D = fmaf(doi[d], oi[d], D);
            for (int j0 = 0; j0 < n_keys; j0 += AB_CHUNK) {
                const int n = min(AB_CHUNK, n_keys - j0);
                for (int jj = tid; jj < n; jj += nthreads) {
                    const int j = j0 + jj;
                    const float* kj = kh + (size_t)j * head_dim;
                    const float* vj = vh + (size_t)j * head_dim;
                    float s = 0.f, dp = 0.f;
                    for (int d = 0; d < head_dim; ++d) {
                        s = fmaf(qi[d], kj[d], s);
                        dp = fmaf(doi[d], vj[d], dp);
                    }
                    const float p = expf(fmaf(scale, s, -lse_i));
                    const float ds = p * (dp - D);
                    const float sds = scale * ds;
                    float* dkj = dkh + (size_t)j * head_dim;
                    float* dvj = dvh + (size_t)j * head_dim;
                    for (int d = 0; d < head_dim; ++d) {
                        atomicAdd(&dvj[d], p * doi[d]);
                        atomicAdd(&dkj[d], sds * qi[d]);
                    }
                    s_ds[jj] = ds;
                }
                // BUG: a __syncthreads() belongs here: below, thread t reads every s_ds[jj] of the
                // chunk, most of them written by other threads that may not have run yet.
                for (int d = tid; d < head_dim; d += nthreads) {
                    const float* kd = kh + (size_t)j0 * head_dim + d;
                    float acc = 0.f;
                    for (int jj = 0; jj < n; ++jj) acc = fmaf(s_ds[jj], kd[(size_t)jj * head_dim], acc);
                    dqi[d] += scale * acc;
                }
                __syncthreads();  // everyone has read s_ds before the next chunk (or row) writes it
            }
        }
    }
}
