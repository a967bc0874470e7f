// KNOWN BUG (catalogue): dV uses P instead of P^T: dv = P dO, computed per query row like dq.
//
// What it is: dv[j] = sum_i P[i,j] dout[i] collects over the query rows i (the column j of P), but
// this kernel treats dv like dq: block i keeps the chunk's p[j] next to ds[j] in shared memory and
// adds sum_j P[i,j] * dout[j] into dv[i]. Everything else (dq, dk, the barriers) is ../attn_bwd.cu.
// The kernel computes exactly
//   dv[i] = sum_j P[i,j] * dout[j]     (dv = P dO instead of P^T dO; causal: j <= i only)
// with the correct dq and dk. dout[j] is the upstream gradient of output row j, indexed by a key.
// Shows at: every shape with seq >= 2 (causal or not), in every row of dv. Typical size: O(1)
// relative error; each dv row is a convex combination of dout rows (P rows sum to 1) instead of a
// sum with column weights, so rows of dv that should be large (keys many queries attend to) come
// out ordinary and vice versa. Causal: dv[0] = dout[0] (only P[0,0] = 1) where the right dv[0] sums
// P[i,0] dout[i] over all rows.
// Does not show: seq = 1 (P = [[1]] is its own transpose); dq and dk (always right); any P that is
// symmetric (never for real data).
// What a user sees: value projections that train wrongly while q/k gradients check out; a
// finite-difference check of dv fails everywhere by O(1), no NaN.
// Fix: for each key j, atomicAdd(&dv[j, d], p * dout[i, d]) (as ../attn_bwd.cu does).

#ifndef AB_CHUNK
#define AB_CHUNK 1024
#endif

extern "C" __global__ void __launch_bounds__(1024)
attn_bwd_dkdv_transpose(const float* __restrict__ q, const float* __restrict__ k,
                        const float* __restrict__ v, const float* __restrict__ o,
                        const float* __restrict__ dout, const float* __restrict__ lse,
                        float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv,
                        int batch, int heads, int seq, int head_dim, float scale, int causal)
{
    __shared__ float s_ds[AB_CHUNK];
    __shared__ float s_p[AB_CHUNK];
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int n_bh = batch * heads;
    for (int bh = blockIdx.y; bh < n_bh; bh += gridDim.y) {
        const size_t head = (size_t)bh * seq * head_dim;
        const float* kh = k + head;
        const float* vh = v + head;
        const float* doh = dout + head;
        float* dkh = dk + head;
        for (int i = blockIdx.x; i < seq; i += gridDim.x) {
            const size_t row = head + (size_t)i * head_dim;
            const float* qi = q + row;
            const float* oi = o + row;
            const float* doi = dout + row;
            float* dqi = dq + row;
            float* dvi = dv + row;
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
                    for (int d = 0; d < head_dim; ++d) atomicAdd(&dkj[d], sds * qi[d]);
                    s_ds[jj] = ds;
                    s_p[jj] = p;
                }
                __syncthreads();
                for (int d = tid; d < head_dim; d += nthreads) {
                    const float* kd = kh + (size_t)j0 * head_dim + d;
                    const float* dod = doh + (size_t)j0 * head_dim + d;
                    float acc = 0.f, acc_v = 0.f;
                    for (int jj = 0; jj < n; ++jj) {
                        acc = fmaf(s_ds[jj], kd[(size_t)jj * head_dim], acc);
                        // BUG: P[i,j] * dout[j] into dv[i] (P dO); dv needs P[i,j] * dout[i] into dv[j]
                        acc_v = fmaf(s_p[jj], dod[(size_t)jj * head_dim], acc_v);
                    }
                    dqi[d] += scale * acc;
                    dvi[d] += acc_v;
                }
                __syncthreads();
            }
        }
    }
}
