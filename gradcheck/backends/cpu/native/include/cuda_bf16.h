/* gradcheck cpu backend: __nv_bfloat16 and __nv_bfloat162 (cuda_bf16.h), emulated.

   Storage is the 16-bit bfloat16 payload (`__x`: the high half of a float), trivially copyable,
   so warp shuffles, __ldg / __ldcs and the prelude's other templates move it unchanged. The
   conversions, arithmetic, comparisons, math functions and atomicAdd are those of cuda_fp16.h's
   machinery with 7 mantissa and 8 exponent bits (see there): __float2bfloat16 rounds to nearest
   even, a NaN stays NaN (0x7fff), arithmetic is exact and rounded once. As in CUDA, including
   this header also declares __half (cuda_fp16.h). */
#pragma once
#include <cuda_fp16.h>
#define __CUDA_BF16_H__
#define __CUDA_BF16_TYPES_EXIST__

typedef struct __align__(2) {
    unsigned short x;
} __nv_bfloat16_raw;
typedef struct __align__(4) {
    unsigned short x, y;
} __nv_bfloat162_raw;

struct __align__(2) __nv_bfloat16 {
    CUDACPU_F16_MEMBERS(__nv_bfloat16, __nv_bfloat16_raw, 7, 8)
    explicit __nv_bfloat16(const __half f) : __x(cudacpu::f16::from_double<7, 8>((float)f, cudacpu::f16::rn)) {}
};
struct __align__(4) __nv_bfloat162 {
    CUDACPU_F16_PAIR_MEMBERS(__nv_bfloat16, __nv_bfloat162, __nv_bfloat162_raw)
};
template <>
struct cudacpu::f16::fmt<__nv_bfloat16> {
    static constexpr int M = 7, E = 8;
};
template <>
struct cudacpu::scalar_code<__nv_bfloat16> {
    static constexpr char value = 'E';  // ml_dtypes.bfloat16's dtype character
};
static_assert(sizeof(__nv_bfloat16) == 2 && sizeof(__nv_bfloat162) == 4 && std::is_trivially_copyable_v<__nv_bfloat162>,
              "16-bit storage that warp shuffles and memcpy move unchanged");
CUDACPU_F16_FUNCS(__nv_bfloat16, __nv_bfloat162, bfloat16, bfloat162)
inline __half::__half(const __nv_bfloat16 f) : __x(cudacpu::f16::from_double<10, 5>((float)f, cudacpu::f16::rn)) {}
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

#define CUDART_INF_BF16 __ushort_as_bfloat16((unsigned short)0x7F80U)
#define CUDART_NAN_BF16 __ushort_as_bfloat16((unsigned short)0x7FFFU)
#define CUDART_MIN_DENORM_BF16 __ushort_as_bfloat16((unsigned short)0x0001U)
#define CUDART_MAX_NORMAL_BF16 __ushort_as_bfloat16((unsigned short)0x7F7FU)
#define CUDART_NEG_ZERO_BF16 __ushort_as_bfloat16((unsigned short)0x8000U)
#define CUDART_ZERO_BF16 __ushort_as_bfloat16((unsigned short)0x0000U)
#define CUDART_ONE_BF16 __ushort_as_bfloat16((unsigned short)0x3F80U)
