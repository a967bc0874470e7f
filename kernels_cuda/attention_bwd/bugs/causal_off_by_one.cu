// KNOWN BUG (catalogue): causal key loop ends one key early (j < i instead of j <= i): the diagonal
// key is left out of dq, dk and dv.
//
// What it is: the causal key count is written as n_keys = i (keys 0 .. i-1) instead of
// min(i + 1, seq) (keys 0 .. i). Everything else is ../attn_bwd.cu. The kernel computes exactly
//   P'[i,j] = P[i,j] for j < i, 0 for j >= i          (causal = 1)
//   dS'[i,j] = P'[i,j] * (dot(dout[i], v[j]) - D[i]),  D[i] = dot(dout[i], o[i]) (unchanged)
//   dq[i] = scale * sum_j dS'[i,j] k[j],  dk[j] = scale * sum_i dS'[i,j] q[i],  dv[j] = sum_i P'[i,j] dout[i]
// i.e. the correct formulas with the diagonal term P[i,i] (and dS[i,i]) dropped. lse and o are still
// the true forward's, so the remaining P' row sums to 1 - P[i,i], not 1.
// Shows at: causal = 1, every seq, every block size. Row 0 has no key left: dq[0] stays zero and
// key 0 gets nothing from row 0. dv[j] loses P[j,j] * dout[j] and dk[j] loses scale * dS[j,j] * q[j],
// dq[i] loses scale * dS[i,i] * k[i]. The error is largest where the diagonal dominates: early rows
// (row 1 keeps only key 0) and the last keys (key seq-1 gets only the diagonal term from row seq-1,
// so dv[seq-1] and dk[seq-1] come out exactly zero). With seq = 1 every output is zero.
// Does not show: causal = 0 (the full key range is used; output identical to ../attn_bwd.cu).
// What a user sees: a causal model whose dk/dv/dq are off by O(1) relative for the last keys and
// first rows (a finite, plausible gradient, no NaN); the non-causal path passes every test.
// Fix: n_keys = causal ? min(i + 1, seq) : seq.

#ifndef AB_CHUNK
#define AB_CHUNK 1024
#endif

extern "C" __global__ void __launch_bounds__(1024)
attn_bwd_causal_off_by_one(const float* __restrict__ q, const float* __restrict__ k,
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
            const int n_keys = causal ? i : seq;  // BUG: keys 0 .. i-1; should be min(i + 1, seq)
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
                __syncthreads();
                for (int d = tid; d < head_dim; d += nthreads) {
                    const float* kd = kh + (size_t)j0 * head_dim + d;
                    float acc = 0.f;
                    for (int jj = 0; jj < n; ++jj) acc = fmaf(s_ds[jj], kd[(size_t)jj * head_dim], acc);
                    dqi[d] += scale * acc;
                }
                __syncthreads();
            }
        }
    }
}
