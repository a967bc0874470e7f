// bfloat16 and half storage as real CUDA code uses them; the cpu backend must run these unmodified.
// Compiled with no_extern_c=True (cuda_bf16.h is C++: nvcc rejects it inside extern "C").
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

// float -> bf16 (round to nearest even) -> float, and the bits of the four rounding modes.
extern "C" __global__ void bf16_round(const float* x, __nv_bfloat16* y, float* back, unsigned short* modes, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const __nv_bfloat16 b = __float2bfloat16(x[i]);
    y[i] = b;
    back[i] = __bfloat162float(b);
    modes[4 * i + 0] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
    modes[4 * i + 1] = __bfloat16_as_ushort(__float2bfloat16_rz(x[i]));
    modes[4 * i + 2] = __bfloat16_as_ushort(__float2bfloat16_rd(x[i]));
    modes[4 * i + 3] = __bfloat16_as_ushort(__float2bfloat16_ru(x[i]));
}

// Arithmetic on scalars and pairs, read with the cache-hinted loads, written with __stcs.
extern "C" __global__ void bf16_arith(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const __nv_bfloat16 x = __ldg(&a[i]), y = __ldcs(&b[i]);
    __nv_bfloat16* o = out + 12 * i;
    o[0] = x + y;
    o[1] = __hsub(x, y);
    o[2] = x * y;
    o[3] = __hdiv(x, y);
    o[4] = __hfma(x, y, x);
    o[5] = -x;
    __stcs(&o[6], __habs(__hneg(x)));
    __nv_bfloat16 acc = x;
    acc += y;
    o[7] = acc;
    const __nv_bfloat162 p = __floats2bfloat162_rn(__bfloat162float(x), __bfloat162float(y));
    const __nv_bfloat162 q = __hfma2(p, __bfloat162bfloat162(y), __hmul2(p, p));
    o[8] = __low2bfloat16(q);
    o[9] = __high2bfloat16(__hadd2(p, q));
    o[10] = __float2bfloat16(__low2float(p) + __high2float(p));
    const float2 f = __bfloat1622float2(p);
    o[11] = __float2bfloat16(f.x * 2.f - f.y);
}

// Comparisons, as bits: 1 == 2 != 4 < 8 > 16 <= 32 >= 64 __hisnan(x) 128 __hequ
extern "C" __global__ void bf16_compare(const __nv_bfloat16* a, const __nv_bfloat16* b, int* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const __nv_bfloat16 x = a[i], y = b[i];
    out[i] = (x == y) | (x != y) << 1 | (x < y) << 2 | (x > y) << 3 | (x <= y) << 4 | (x >= y) << 5 |
             __hisnan(x) << 6 | __hequ(x, y) << 7;
}

// Many threads of many blocks add into a few adjacent bf16 counters.
extern "C" __global__ void bf16_atomic_count(const __nv_bfloat16* x, __nv_bfloat16* sum, int n, int m) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomicAdd(&sum[i % m], x[i]);
}

// A warp sum of bf16 values through __shfl_down_sync, accumulated in float; a bf16 scalar argument.
extern "C" __global__ void bf16_warp_axpy(__nv_bfloat16 alpha, const __nv_bfloat16* x, __nv_bfloat16* y, float* sums) {
    const int t = threadIdx.x;
    __nv_bfloat16 v = x[t];
    y[t] = alpha * v;
    float s = __bfloat162float(v);
    for (int d = 16; d > 0; d >>= 1) s += __bfloat162float(__shfl_down_sync(0xffffffffu, __float2bfloat16(s), d));
    if ((t & 31) == 0) sums[t / 32] = s;
}

// __half: round trip against numpy's float16, and a fused multiply-add.
extern "C" __global__ void half_round(const float* x, __half* y, float* back, __half* fma, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const __half h = __float2half(x[i]);
    y[i] = h;
    back[i] = __half2float(h);
    fma[i] = __hfma(h, h, __float2half(1.f));
}
