// KNOWN BUG (catalogue): float4-vectorised row loop that forgets the vocab % 4 tail.
//
// What it is: when a row's logits and grad pointers are both 16-byte aligned, the kernel treats the
// row as vocab / 4 float4 chunks in all three passes (max, sum of exp, write) and never touches the
// last vocab % 4 elements. Rows that are not 16-byte aligned take a scalar path that is correct.
// Which elements are wrong (vocab % 4 != 0 only; base pointers aligned as cudaMalloc returns them):
// a row r is aligned when r * vocab % 4 == 0, i.e. every 4th row (r % 4 == 0) for odd vocab and
// every 2nd row (r even) for vocab % 4 == 2. In each aligned, unmasked row:
//   - columns 4 * (vocab / 4) .. vocab - 1 (the vocab % 4 tail) are never written: NaN poison on the
//     gradcheck backends (Launch.unwritten), stale memory on a plain GPU run;
//   - every other column of the row is too large by the factor sum(exp(x)) / sum(exp(x[:4*(vocab/4)])),
//     because the softmax is normalised over the vectorised part only; if targets[r] is in the tail
//     the row gets no -1 at all;
//   - vocab < 4 (1, 2, 3): an aligned row has no chunk, so nothing of it is written.
// Masked aligned rows still get no tail write (zeros are written only through the same float4 path).
// On the gradcheck cpu backend the base alignment depends on the guard side: with guard="start"
// every buffer starts page-aligned, with guard="end" (default) it starts 16-byte aligned only when
// rows * vocab % 4 == 0. With rows * vocab % 4 != 0 the aligned rows, hence the output, change with
// the guard side, and compare_schedules (which alternates it) reports different outputs: e.g.
// rows=3, vocab=2001 is right with guard="end" (no row aligned) and wrong in row 0 with "start".
// The same happens on a GPU when logits or grad is a view at an offset that is not a multiple of 4.
// Shows at: vocab % 4 != 0, e.g. vocab 1, 2, 31, 50, 255, 257, 1023, 1025, 4099, 50257 (rows=4:
// row 0, and row 2 too when vocab % 4 == 2).
// Does not show: vocab % 4 == 0 (e.g. 256, 1024, 2000) with aligned base pointers: every row takes
// the float4 path and has no tail.
// Fix: after the float4 loop, handle columns 4 * (vocab / 4) + tid < vocab with a scalar loop in every
// pass (or use the scalar path whenever vocab % 4 != 0).

#define V4_FULL_MASK 0xffffffffu

__device__ __forceinline__ float v4_block_reduce(float v, float* scratch, bool is_max) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const float other = __shfl_xor_sync(V4_FULL_MASK, v, o);
        v = is_max ? fmaxf(v, other) : v + other;
    }
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = scratch[0];
    for (int w = 1; w < nwarps; ++w) r = is_max ? fmaxf(r, scratch[w]) : r + scratch[w];
    __syncthreads();
    return r;
}

__device__ __forceinline__ float v4_onehot(int v, int target) { return v == target ? 1.f : 0.f; }

extern "C" __global__ void __launch_bounds__(1024)
ce_grad_vec4_tail(const float* __restrict__ logits, const int* __restrict__ targets,
                  const float* __restrict__ mask, float* __restrict__ grad, int rows, int vocab,
                  float inv_n_valid)
{
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* x = logits + (size_t)row * vocab;
        float* g = grad + (size_t)row * vocab;
        const float scale = mask[row] * inv_n_valid;
        const int target = targets[row];
        const bool aligned = (((size_t)x | (size_t)g) & 15) == 0;
        if (aligned) {
            // Vectorised path. BUG: n4 = vocab / 4 drops the last vocab % 4 columns in every pass.
            const int n4 = vocab / 4;
            const float4* x4 = reinterpret_cast<const float4*>(x);
            float4* g4 = reinterpret_cast<float4*>(g);
            if (scale == 0.f) {
                for (int i = threadIdx.x; i < n4; i += blockDim.x) g4[i] = make_float4(0.f, 0.f, 0.f, 0.f);
                continue;
            }
            float m = -INFINITY;
            for (int i = threadIdx.x; i < n4; i += blockDim.x) {
                const float4 a = x4[i];
                m = fmaxf(m, fmaxf(fmaxf(a.x, a.y), fmaxf(a.z, a.w)));
            }
            m = v4_block_reduce(m, scratch, true);
            float s = 0.f;
            for (int i = threadIdx.x; i < n4; i += blockDim.x) {
                const float4 a = x4[i];
                s += expf(a.x - m) + expf(a.y - m) + expf(a.z - m) + expf(a.w - m);
            }
            s = v4_block_reduce(s, scratch, false);
            const float inv_s = 1.f / s;
            for (int i = threadIdx.x; i < n4; i += blockDim.x) {
                const float4 a = x4[i];
                const int v = 4 * i;
                float4 r;
                r.x = (expf(a.x - m) * inv_s - v4_onehot(v, target)) * scale;
                r.y = (expf(a.y - m) * inv_s - v4_onehot(v + 1, target)) * scale;
                r.z = (expf(a.z - m) * inv_s - v4_onehot(v + 2, target)) * scale;
                r.w = (expf(a.w - m) * inv_s - v4_onehot(v + 3, target)) * scale;
                g4[i] = r;
            }
        } else {
            // Scalar fallback for unaligned rows: correct.
            if (scale == 0.f) {
                for (int v = threadIdx.x; v < vocab; v += blockDim.x) g[v] = 0.f;
                continue;
            }
            float m = -INFINITY;
            for (int v = threadIdx.x; v < vocab; v += blockDim.x) m = fmaxf(m, x[v]);
            m = v4_block_reduce(m, scratch, true);
            float s = 0.f;
            for (int v = threadIdx.x; v < vocab; v += blockDim.x) s += expf(x[v] - m);
            s = v4_block_reduce(s, scratch, false);
            const float inv_s = 1.f / s;
            for (int v = threadIdx.x; v < vocab; v += blockDim.x)
                g[v] = (expf(x[v] - m) * inv_s - v4_onehot(v, target)) * scale;
        }
    }
}
