// Scaled dot-product attention backward, warp-tile variant: one block per (query row i, head bh);
// each warp takes a tile of 32 keys, groups of 8 lanes split each key's dot products over head_dim,
// and one reduce-scatter __shfl_xor_sync tree finishes all 32 keys' dot products at once.
//
//   S[i,j]  = scale * dot(q[i], k[j])          (causal: keys j > i are masked out)
//   P[i,j]  = exp(S[i,j] - lse[i])             (0 where masked)
//   D[i]    = dot(dout[i], o[i])
//   dS[i,j] = P[i,j] * (dot(dout[i], v[j]) - D[i])
//   dq[i]   = scale * sum_j dS[i,j] * k[j]
//   dk[j]   = scale * sum_i dS[i,j] * q[i]
//   dv[j]   =         sum_i P[i,j]  * dout[i]
//
// Layout: q, k, v, o, dout, dq, dk, dv are row-major [batch, heads, seq, head_dim]; lse is
// [batch, heads, seq]. Launch: grid = (seq, batch * heads, 1), block = (B, 1, 1) with any B from 1
// to 1024; no dynamic shared memory; head_dim from 1 to AW_MAX_HEAD_DIM (256), any seq >= 1.
// Grid-stride loops over rows and heads. dk and dv must start at zero (one atomicAdd per (query
// row, key, column)); dq[i] is written (not added) by its block.
//
// Lanes: a warp uses W lanes, W the largest power of two <= its lane count (32 for full warps; a
// partial last warp of 5 lanes uses 4; B = 1 uses one lane and no shuffles). Only those W lanes are
// named in masks, so no shuffle names a lane that does not exist or sits idle.
// Summation order (differs from attn_bwd.cu): keys go in tiles of 32; warp w takes tiles w,
// w + nwarps, ... and walks each in steps of W keys. In a step, lanes form groups of G = min(W, 8);
// the group of lanes g*G .. g*G + G-1 owns keys g*G .. g*G + G-1 of the step, and lane r of a group
// accumulates, for each of those G keys, the partial sums of s = q[i].k[j] and dp = dout[i].v[j]
// over its columns d = r, r + G, ... A reduce-scatter butterfly inside the group then sums them over
// the group's lanes: at offset `off` (G/2 .. 1) each lane keeps one half of its keys and adds the
// partner's copy of that half (s and dp packed into one 64-bit __shfl_xor_sync), so after G - 1
// shuffles lane l holds the complete s and dp of key l of the step (7 per 32 keys in a full warp,
// where a shuffle per key and value would take 5 x 32 x 2). Lane l turns them into p and ds and
// puts them in the warp's slots in shared memory; after __syncwarp the lanes switch to columns
// d = lane, lane + W, ...: for each key of the step they add p * dout[i, d] to dv[j, d] and
// scale * ds * q[i, d] to dk[j, d] (atomicAdd) and ds * k[j, d] to the warp's own dq row in
// shared memory (32 x 256 floats). After one barrier thread t sums the warps' dq rows
// (w ascending) for its columns and writes dq[i, d]; a second barrier protects them before the
// next query row. Two barriers per query row whatever seq is, plus two __syncwarp per
// step; each warp computes D[i] itself (a plain butterfly over its W lanes).
// Rounding does not depend on the thread schedule: every dk/dv element gets one atomicAdd per row
// per block and all other sums run in a fixed order, so compare_schedules (blocks one at a time)
// gives the same bits under every schedule. Concurrent blocks (a GPU, the cpu backend with
// workers > 1) add to dk/dv in a varying order: dk and dv can differ in the last bits between runs.
// Resources (nvcc 13): 40 KB static shared memory, no register spills at 1024 threads.

#define AW_FULL_MASK 0xffffffffu
#define AW_MAX_WARPS 32
#define AW_MAX_HEAD_DIM 256
#define AW_TILE 32  // keys per tile (shared by all warps, whatever their width)
#define AW_GROUP 8  // lanes per key group: 2 x 8 partial sums per lane stay in registers

__device__ __forceinline__ unsigned long long aw_pack(float a, float b) {
    return ((unsigned long long)__float_as_uint(b) << 32) | (unsigned long long)__float_as_uint(a);
}

// Butterfly sum over the `width` (a power of two) lowest lanes named in `mask`; all get the sum.
__device__ __forceinline__ float aw_sum(float a, unsigned mask, int width) {
    for (int off = width >> 1; off > 0; off >>= 1) a += __shfl_xor_sync(mask, a, off);
    return a;
}

extern "C" __global__ void __launch_bounds__(1024)
attn_bwd_warp(const float* __restrict__ q, const float* __restrict__ k,
              const float* __restrict__ v, const float* __restrict__ o,
              const float* __restrict__ dout, const float* __restrict__ lse,
              float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int batch,
              int heads, int seq, int head_dim, float scale, int causal)
{
    __shared__ float s_dq[AW_MAX_WARPS][AW_MAX_HEAD_DIM];  // per-warp partial sum_j ds[j] * k[j, :]
    __shared__ float s_p[AW_MAX_WARPS][32];                // the warp's current step: p per key
    __shared__ float s_ds[AW_MAX_WARPS][32];               // and ds per key
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int warp = tid >> 5, lane = tid & 31, nwarps = (nthreads + 31) >> 5;
    const int warp_lanes = min(32, nthreads - 32 * warp);
    int width = 1;
    while (2 * width <= warp_lanes) width <<= 1;
    const unsigned mask = width == 32 ? AW_FULL_MASK : (1u << width) - 1u;
    const bool working = lane < width;
    const int group = min(width, AW_GROUP);
    const int r = lane & (group - 1);  // lane within its group
    const int g0 = lane - r;           // the group's first key within a step
    float* my_dq = s_dq[warp];
    float* my_p = s_p[warp];
    float* my_ds = s_ds[warp];
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
            const float* doi = dout + row;
            const int n_keys = causal ? min(i + 1, seq) : seq;
            if (working) {
                const float* oi = o + row;
                const float lse_i = lse[(size_t)bh * seq + i];
                float D = 0.f;
                for (int d = lane; d < head_dim; d += width) {
                    D = fmaf(doi[d], oi[d], D);
                    my_dq[d] = 0.f;
                }
                D = aw_sum(D, mask, width);
                for (int t0 = warp * AW_TILE; t0 < n_keys; t0 += nwarps * AW_TILE) {
                    const int t_end = min(t0 + AW_TILE, n_keys);
                    for (int j0 = t0; j0 < t_end; j0 += width) {  // one step unless W < 32
                        const int n = min(width, t_end - j0);      // keys in this step
                        float ps[AW_GROUP], pdp[AW_GROUP];  // partial s, dp of the group's keys
#pragma unroll
                        for (int kk = 0; kk < AW_GROUP; ++kk) {
                            float s = 0.f, dp = 0.f;
                            if (kk < group && g0 + kk < n) {
                                const float* kj = kh + (size_t)(j0 + g0 + kk) * head_dim;
                                const float* vj = vh + (size_t)(j0 + g0 + kk) * head_dim;
                                for (int d = r; d < head_dim; d += group) {
                                    s = fmaf(qi[d], kj[d], s);
                                    dp = fmaf(doi[d], vj[d], dp);
                                }
                            }
                            ps[kk] = s;
                            pdp[kk] = dp;
                        }
                        // Reduce-scatter inside the group: after the step at `off`, slot m < off
                        // holds group key m + off * ((r & off) != 0) + (the bits already done),
                        // summed over the lanes that differ only in the bits done so far. At the
                        // end slot 0 holds key r of the group, i.e. key `lane` of the step.
#pragma unroll
                        for (int off = AW_GROUP / 2; off > 0; off >>= 1) {
                            if (off < group) {
                                const bool upper = (r & off) != 0;
#pragma unroll
                                for (int m = 0; m < off; ++m) {
                                    const float send_s = upper ? ps[m] : ps[m + off];
                                    const float send_dp = upper ? pdp[m] : pdp[m + off];
                                    const float keep_s = upper ? ps[m + off] : ps[m];
                                    const float keep_dp = upper ? pdp[m + off] : pdp[m];
                                    const unsigned long long got =
                                        __shfl_xor_sync(mask, aw_pack(send_s, send_dp), off);
                                    ps[m] = keep_s + __uint_as_float((unsigned)(got & 0xffffffffull));
                                    pdp[m] = keep_dp + __uint_as_float((unsigned)(got >> 32));
                                }
                            }
                        }
                        if (lane < n) {
                            const float p = expf(fmaf(scale, ps[0], -lse_i));
                            my_p[lane] = p;
                            my_ds[lane] = p * (pdp[0] - D);
                        }
                        __syncwarp(mask);  // the step's p, ds are in my_p, my_ds
                        for (int kk = 0; kk < n; ++kk) {
                            const int j = j0 + kk;
                            const float p = my_p[kk], ds = my_ds[kk], sds = scale * ds;
                            const float* kj = kh + (size_t)j * head_dim;
                            float* dkj = dkh + (size_t)j * head_dim;
                            float* dvj = dvh + (size_t)j * head_dim;
                            for (int d = lane; d < head_dim; d += width) {
                                atomicAdd(&dvj[d], p * doi[d]);
                                atomicAdd(&dkj[d], sds * qi[d]);
                                my_dq[d] = fmaf(ds, kj[d], my_dq[d]);
                            }
                        }
                        __syncwarp(mask);  // my_p, my_ds are read before the next step writes them
                    }
                }
            }
            __syncthreads();  // every warp's dq row is complete
            for (int d = tid; d < head_dim; d += nthreads) {
                float acc = 0.f;
                for (int w = 0; w < nwarps; ++w) acc += s_dq[w][d];
                dq[row + d] = scale * acc;
            }
            __syncthreads();  // s_dq is read before the next row zeroes it
        }
    }
}
