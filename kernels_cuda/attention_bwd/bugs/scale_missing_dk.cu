// KNOWN BUG (catalogue): dk omits the softmax scale.
//
// What it is: the chain rule through S = scale * q k^T gives dk[j] = scale * sum_i dS[i,j] q[i], but
// the dk update uses ds instead of scale * ds. Everything else is ../attn_bwd.cu. The kernel computes
//   dk[j] = sum_i dS[i,j] * q[i]        (instead of scale * sum_i dS[i,j] * q[i])
// so dk is the correct dk times 1 / scale (= sqrt(head_dim) for scale = 1 / sqrt(head_dim)): the same
// direction, a constant factor too large in every element. dq and dv are right.
// Shows at: every shape, causal or not, wherever dk is nonzero; the factor is 1 / scale, e.g. 8 at
// head_dim 64, 11.3 at 128. The relative error is the same in every element: |1 / scale - 1|.
// Does not show: scale = 1 (e.g. head_dim = 1 with scale = 1 / sqrt(head_dim)); elements where dk is
// exactly 0 (seq = 1: the single key's dS is P (dp - D) = 1 * (dp - dp) ~ 0 up to rounding).
// What a user sees: training that works but with key projections learning sqrt(head_dim) times
// too fast (instability that a lower learning rate seems to fix); a finite-difference check of dk
// alone fails by a constant ratio while dq and dv pass.
// Fix: atomicAdd(&dk[j, d], scale * ds * q[i, d]).

#ifndef AB_CHUNK
#define AB_CHUNK 1024
#endif

extern "C" __global__ void __launch_bounds__(1024)
attn_bwd_no_scale_dk(const float* __restrict__ q, const float* __restrict__ k,
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
                    float* dkj = dkh + (size_t)j * head_dim;
                    float* dvj = dvh + (size_t)j * head_dim;
                    for (int d = 0; d < head_dim; ++d) {
                        atomicAdd(&dvj[d], p * doi[d]);
                        atomicAdd(&dkj[d], ds * qi[d]);  // BUG: should be scale * ds * qi[d]
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
