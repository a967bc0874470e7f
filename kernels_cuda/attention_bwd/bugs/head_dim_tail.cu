// KNOWN BUG (catalogue): float4-vectorised head_dim loops that forget the head_dim % 4 tail.
//
// What it is: every loop over head_dim runs over float4 groups g < head_dim / 4, i.e. columns
// 0 .. h4 - 1 with h4 = head_dim - head_dim % 4, and no scalar loop follows for the last
// head_dim % 4 columns: D, s and dp leave them out, and the dq, dk, dv updates never touch them.
// Everything else is ../attn_bwd.cu. Alignment is handled by construction: ht_ld4 issues one float4
// load where the address is 16-byte aligned and four scalar loads of the same group otherwise, so
// every row takes the same 4-wide loops and the output does not depend on buffer alignment (unlike
// ../../loss_ce/bugs/vec4_tail.cu, whose scalar fallback hides the bug in unaligned rows). Groups
// never reach past h4, so nothing is read out of bounds. Exactly, with x' = x with the columns
// d >= h4 set to zero (for q, k, v, o, dout) and lse, the causal mask and scale unchanged:
//   S'[i,j] = scale * dot(q'[i], k'[j]);   P'[i,j] = exp(S'[i,j] - lse[i])  (0 where masked)
//   D'[i] = dot(dout'[i], o'[i]);           dS'[i,j] = P'[i,j] * (dot(dout'[i], v'[j]) - D'[i])
//   dq = scale * dS' k',   dk = scale * dS'^T q',   dv = P'^T dout'
// so columns >= h4 of dq, dk, dv keep their initial zero, and the other columns are wrong too,
// because P' is not P (its rows no longer sum to 1).
// Shows at: head_dim % 4 != 0, e.g. 5, 61, 63, 127 (every row; for N(0,1) data about 0.1 to 1 of
// max |grad| in the first columns and the tail exactly zero); head_dim 1, 2, 3 (h4 = 0) give
// all-zero dq, dk, dv.
// Does not show: head_dim % 4 == 0 (16, 64, 128, ...): the correct result, up to rounding (the
// dot products are summed in groups of four).
// What a user sees: models with head_dim 64 or 128 are fine; an odd head_dim gives gradients
// whose last 1 to 3 columns are zero and whose other columns are off, with no NaN and no fault.
// Fix: after each float4 loop, a scalar loop over d = h4 .. head_dim - 1 (D, s and dp, the dk/dv
// updates, and dq).

#ifndef AB_CHUNK
#define AB_CHUNK 1024
#endif

// Four consecutive floats: one float4 load where p is 16-byte aligned, four scalar loads otherwise.
__device__ __forceinline__ float4 ht_ld4(const float* p) {
    if (((size_t)p & 15) == 0) return *reinterpret_cast<const float4*>(p);
    return make_float4(p[0], p[1], p[2], p[3]);
}

__device__ __forceinline__ float ht_dot4(float4 a, float4 b, float acc) {
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
    acc = fmaf(a.z, b.z, acc);
    return fmaf(a.w, b.w, acc);
}

extern "C" __global__ void __launch_bounds__(1024)
attn_bwd_head_dim_tail(const float* __restrict__ q, const float* __restrict__ k,
                       const float* __restrict__ v, const float* __restrict__ o,
                       const float* __restrict__ dout, const float* __restrict__ lse,
                       float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv,
                       int batch, int heads, int seq, int head_dim, float scale, int causal)
{
    __shared__ float s_ds[AB_CHUNK];
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int n_bh = batch * heads;
    const int n4 = head_dim / 4;  // BUG: float4 groups only; columns 4 * n4 .. head_dim - 1 are never touched
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
            for (int g = 0; g < n4; ++g) D = ht_dot4(ht_ld4(doi + 4 * g), ht_ld4(oi + 4 * g), D);
            for (int j0 = 0; j0 < n_keys; j0 += AB_CHUNK) {
                const int n = min(AB_CHUNK, n_keys - j0);
                for (int jj = tid; jj < n; jj += nthreads) {
                    const int j = j0 + jj;
                    const float* kj = kh + (size_t)j * head_dim;
                    const float* vj = vh + (size_t)j * head_dim;
                    float s = 0.f, dp = 0.f;
                    for (int g = 0; g < n4; ++g) {
                        const float4 dog = ht_ld4(doi + 4 * g);
                        s = ht_dot4(ht_ld4(qi + 4 * g), ht_ld4(kj + 4 * g), s);
                        dp = ht_dot4(dog, ht_ld4(vj + 4 * g), dp);
                    }
                    const float p = expf(fmaf(scale, s, -lse_i));
                    const float ds = p * (dp - D);
                    const float sds = scale * ds;
                    float* dkj = dkh + (size_t)j * head_dim;
                    float* dvj = dvh + (size_t)j * head_dim;
                    for (int g = 0; g < n4; ++g) {
                        const float4 dog = ht_ld4(doi + 4 * g), qg = ht_ld4(qi + 4 * g);
                        float* dvg = dvj + 4 * g;
                        float* dkg = dkj + 4 * g;
                        atomicAdd(dvg + 0, p * dog.x);
                        atomicAdd(dvg + 1, p * dog.y);
                        atomicAdd(dvg + 2, p * dog.z);
                        atomicAdd(dvg + 3, p * dog.w);
                        atomicAdd(dkg + 0, sds * qg.x);
                        atomicAdd(dkg + 1, sds * qg.y);
                        atomicAdd(dkg + 2, sds * qg.z);
                        atomicAdd(dkg + 3, sds * qg.w);
                    }
                    s_ds[jj] = ds;
                }
                __syncthreads();
                for (int g = tid; g < n4; g += nthreads) {
                    const float* kg = kh + (size_t)j0 * head_dim + 4 * g;
                    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
                    for (int jj = 0; jj < n; ++jj) {
                        const float w = s_ds[jj];
                        const float4 kv = ht_ld4(kg + (size_t)jj * head_dim);
                        acc.x = fmaf(w, kv.x, acc.x);
                        acc.y = fmaf(w, kv.y, acc.y);
                        acc.z = fmaf(w, kv.z, acc.z);
                        acc.w = fmaf(w, kv.w, acc.w);
                    }
                    float* dqg = dqi + 4 * g;
                    dqg[0] += scale * acc.x;
                    dqg[1] += scale * acc.y;
                    dqg[2] += scale * acc.z;
                    dqg[3] += scale * acc.w;
                }
                __syncthreads();
            }
        }
    }
}
