/* gradcheck cpu backend: __half and __half2 (cuda_fp16.h), emulated; also the machinery that
   cuda_bf16.h uses for __nv_bfloat16.

   Storage is the 16-bit IEEE binary16 payload (`__x`), trivially copyable, so warp shuffles,
   __ldg / __ldcs and the other templates of the prelude move it unchanged. Conversions round
   correctly in all four modes (_rn: to nearest even; _rz, _rd, _ru); a NaN becomes the canonical
   NaN 0x7fff, as on a GPU. Arithmetic is computed exactly (in double; fma with a round-to-odd sum)
   and rounded once, which is what sm_80 hardware does for add, sub, mul and fma. Math functions
   (hsqrt, hexp, ...) round the float function's result. Float-to-integer conversions saturate and
   map NaN to 0, as cvt does. */
#pragma once
#define __CUDA_FP16_H__
#define __CUDA_FP16_TYPES_EXIST__

namespace cudacpu::f16 {
enum mode { rn, rz, rd, ru };

// Rounds (-1)^neg * m * 2^e to a binary format with M stored mantissa bits and E exponent bits.
template <int M, int E>
inline uint16_t encode(bool neg, uint64_t m, int e, mode md) {
    const uint16_t sign = neg ? 0x8000 : 0;
    if (m == 0) return sign;
    constexpr int bias = (1 << (E - 1)) - 1, emin = 1 - bias;
    constexpr uint32_t inf = ((1u << E) - 1) << M;
    const int top = 63 - __builtin_clzll(m);               // m * 2^e lies in [2^(top+e), 2^(top+e+1))
    const int exp = top + e > emin ? top + e : emin;       // its binade, or the subnormal range
    int shift = exp - M - e;                               // result quantum 2^(exp-M) = 2^(e+shift)
    uint64_t q;
    bool up = false;
    if (shift <= 0) {
        q = m << -shift;  // exact
    } else {
        if (shift > 65) shift = 65;  // every bit of m is below half a quantum either way
        const unsigned __int128 mm = m, one = 1;
        const unsigned __int128 rest = mm & ((one << shift) - 1), half = one << (shift - 1);
        q = (uint64_t)(mm >> shift);
        if (rest != 0) up = md == rn ? (rest > half || (rest == half && (q & 1))) : md == ru ? !neg : md == rd ? neg : false;
    }
    const uint32_t bits = ((uint32_t)(exp + bias - 1) << M) + (uint32_t)q + (up ? 1u : 0u);
    if (bits >= inf) {  // overflow: infinity, or the largest finite value when rounding toward zero
        const bool to_inf = md == rn || (md == ru && !neg) || (md == rd && neg);
        return sign | (uint16_t)(to_inf ? inf : inf - 1);
    }
    return sign | (uint16_t)bits;
}

template <int M, int E>
inline uint16_t from_double(double d, mode md) {
    const uint64_t u = cudacpu::bits(d);
    const bool neg = u >> 63;
    const int ex = (int)(u >> 52 & 0x7ff);
    const uint64_t frac = u & ((1ull << 52) - 1);
    if (ex == 0x7ff) return frac ? 0x7fff : (uint16_t)((neg ? 0x8000 : 0) | (((1u << E) - 1) << M));
    return ex ? encode<M, E>(neg, frac | (1ull << 52), ex - 1075, md) : encode<M, E>(neg, frac, -1074, md);
}
template <int M, int E>
inline uint16_t from_int(long long v, mode md) {
    return encode<M, E>(v < 0, v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v, 0, md);
}
template <int M, int E>
inline uint16_t from_uint(unsigned long long v, mode md) { return encode<M, E>(false, v, 0, md); }

// The exact value as a float (every binary16 and bfloat16 value is one).
template <int M, int E>
inline float to_float(uint16_t h) {
    if constexpr (E == 8 && M == 7) {
        return cudacpu::unbits<float>((uint32_t)h << 16);
    } else {
        constexpr int bias = (1 << (E - 1)) - 1, emax = (1 << E) - 1;
        const uint32_t sign = (uint32_t)(h >> 15) << 31, frac = h & ((1u << M) - 1);
        const int ex = h >> M & emax;
        if (ex == emax) return cudacpu::unbits<float>(sign | 0x7f800000u | (frac << (23 - M)));  // inf, NaN
        const float mag = ex ? std::ldexp((float)(frac | (1u << M)), ex - bias - M) : std::ldexp((float)frac, 1 - bias - M);
        return sign ? -mag : mag;
    }
}

// a * b + c, where a * b is exact in double, rounded to odd: then rounding to a 16-bit format is
// correct (rounding a double to nearest first could land on a tie that the exact sum is not).
inline double fma_odd(double a, double b, double c) {
    const double p = a * b, s = p + c;
    if (!std::isfinite(s)) return s;
    const double bb = s - p, err = (p - (s - bb)) + (c - bb);  // exact: p + c == s + err
    if (err == 0 || (cudacpu::bits(s) & 1)) return s;
    return std::nextafter(s, err > 0 ? INFINITY : -INFINITY);
}

// Float to integer as cvt does it: rounded in the given mode, NaN to 0, saturating.
template <class I>
inline I to_int(float f, mode md) {
    if (std::isnan(f)) return 0;
    const double r = md == rn ? std::nearbyint((double)f) : md == rz ? std::trunc((double)f) : md == rd ? std::floor((double)f) : std::ceil((double)f);
    constexpr double lo = std::is_signed_v<I> ? -(double)(1ull << (8 * sizeof(I) - 1)) : 0.0;
    constexpr double hi = std::is_signed_v<I> ? (double)(1ull << (8 * sizeof(I) - 1)) : 2.0 * (double)(1ull << (8 * sizeof(I) - 1));
    if (r <= lo) return std::is_signed_v<I> ? (I)(1ull << (8 * sizeof(I) - 1)) : (I)0;
    if (r >= hi) return (I)(std::is_signed_v<I> ? (1ull << (8 * sizeof(I) - 1)) - 1 : ~0ull);
    return (I)r;
}

template <class H>
struct fmt;  // M and E of each 16-bit type, specialized below

template <class H>
inline H make(uint16_t bits) {
    H h;
    h.__x = bits;
    return h;
}
template <class H>
inline float val(H h) { return to_float<fmt<H>::M, fmt<H>::E>(h.__x); }
template <class H>
inline H from(double d, mode md = rn) { return make<H>(from_double<fmt<H>::M, fmt<H>::E>(d, md)); }
template <class H>
inline bool isnan(H h) { return (h.__x & 0x7fff) > (((1u << fmt<H>::E) - 1) << fmt<H>::M); }
template <class H>
inline H maximum(H a, H b, bool nan_wins) {  // __hmax: a NaN loses (both NaN: NaN); +0 > -0
    if (isnan(a) || isnan(b)) return (nan_wins || (isnan(a) && isnan(b))) ? make<H>(0x7fff) : isnan(a) ? b : a;
    const float x = val(a), y = val(b);
    return x == y ? ((a.__x & 0x8000) ? b : a) : x > y ? a : b;
}
template <class H>
inline H minimum(H a, H b, bool nan_wins) {
    if (isnan(a) || isnan(b)) return (nan_wins || (isnan(a) && isnan(b))) ? make<H>(0x7fff) : isnan(a) ? b : a;
    const float x = val(a), y = val(b);
    return x == y ? ((a.__x & 0x8000) ? a : b) : x < y ? a : b;
}
inline double sat(double v) { return v != v ? 0.0 : v < 0 ? 0.0 : v > 1 ? 1.0 : v; }  // _sat: clamp to [0, 1], NaN to 0

// atomicAdd on a 16-bit value: a compare-and-swap loop on those 16 bits (x86-64 has a 16-bit CAS,
// so the neighbouring element is neither read nor rewritten: no false race, no read past the end).
template <class H, class Add>
inline H atomic_add16(H* p, Add add) {
    static_assert(std::atomic_ref<uint16_t>::is_always_lock_free, "needs a lock-free 16-bit compare-and-swap");
    std::atomic_ref<uint16_t> bits(*reinterpret_cast<uint16_t*>(p));
    uint16_t old = bits.load();
    while (!bits.compare_exchange_weak(old, add(make<H>(old)).__x)) {
    }
    return make<H>(old);
}
template <class H2, class Add>
inline H2 atomic_add32(H2* p, Add add) {
    std::atomic_ref<uint32_t> word(*reinterpret_cast<uint32_t*>(p));
    uint32_t old = word.load();
    for (;;) {
        const H2 cur = cudacpu::unbits<H2>(old);
        if (word.compare_exchange_weak(old, (uint32_t)cudacpu::bits(add(cur)))) return cur;
    }
}
}  // namespace cudacpu::f16

// ---- the type: members shared by __half and __nv_bfloat16 (the constructors and conversions
// CUDA declares; integer conversions round to nearest from integers and toward zero to integers)
#define CUDACPU_F16_MEMBERS(H, RAW, M, E)                                                              \
    unsigned short __x;                                                                              \
    H() = default;                                                                                   \
    constexpr H(const RAW& r) : __x(r.x) {}                                                          \
    H& operator=(const RAW& r) { __x = r.x; return *this; }                                          \
    operator RAW() const { return RAW{__x}; }                                                        \
    H(const float f) : __x(cudacpu::f16::from_double<M, E>(f, cudacpu::f16::rn)) {}                  \
    H(const double f) : __x(cudacpu::f16::from_double<M, E>(f, cudacpu::f16::rn)) {}                 \
    H(const short v) : __x(cudacpu::f16::from_int<M, E>(v, cudacpu::f16::rn)) {}                     \
    H(const int v) : __x(cudacpu::f16::from_int<M, E>(v, cudacpu::f16::rn)) {}                       \
    H(const long v) : __x(cudacpu::f16::from_int<M, E>(v, cudacpu::f16::rn)) {}                      \
    H(const long long v) : __x(cudacpu::f16::from_int<M, E>(v, cudacpu::f16::rn)) {}                 \
    H(const unsigned short v) : __x(cudacpu::f16::from_uint<M, E>(v, cudacpu::f16::rn)) {}           \
    H(const unsigned int v) : __x(cudacpu::f16::from_uint<M, E>(v, cudacpu::f16::rn)) {}             \
    H(const unsigned long v) : __x(cudacpu::f16::from_uint<M, E>(v, cudacpu::f16::rn)) {}            \
    H(const unsigned long long v) : __x(cudacpu::f16::from_uint<M, E>(v, cudacpu::f16::rn)) {}       \
    operator float() const { return cudacpu::f16::to_float<M, E>(__x); }                             \
    template <class T>                                                                               \
        requires std::is_arithmetic_v<T>                                                             \
    H& operator=(const T v) { return *this = H(v); }                                                 \
    operator signed char() const { return cudacpu::f16::to_int<signed char>(cudacpu::f16::to_float<M, E>(__x), cudacpu::f16::rz); } \
    operator unsigned char() const { return cudacpu::f16::to_int<unsigned char>(cudacpu::f16::to_float<M, E>(__x), cudacpu::f16::rz); } \
    operator char() const { return (char)cudacpu::f16::to_int<signed char>(cudacpu::f16::to_float<M, E>(__x), cudacpu::f16::rz); } \
    operator short() const { return cudacpu::f16::to_int<short>(cudacpu::f16::to_float<M, E>(__x), cudacpu::f16::rz); }          \
    operator unsigned short() const { return cudacpu::f16::to_int<unsigned short>(cudacpu::f16::to_float<M, E>(__x), cudacpu::f16::rz); } \
    operator int() const { return cudacpu::f16::to_int<int>(cudacpu::f16::to_float<M, E>(__x), cudacpu::f16::rz); }              \
    operator unsigned int() const { return cudacpu::f16::to_int<unsigned int>(cudacpu::f16::to_float<M, E>(__x), cudacpu::f16::rz); } \
    operator long() const { return cudacpu::f16::to_int<long>(cudacpu::f16::to_float<M, E>(__x), cudacpu::f16::rz); }            \
    operator unsigned long() const { return cudacpu::f16::to_int<unsigned long>(cudacpu::f16::to_float<M, E>(__x), cudacpu::f16::rz); } \
    operator long long() const { return cudacpu::f16::to_int<long long>(cudacpu::f16::to_float<M, E>(__x), cudacpu::f16::rz); }  \
    operator unsigned long long() const { return cudacpu::f16::to_int<unsigned long long>(cudacpu::f16::to_float<M, E>(__x), cudacpu::f16::rz); } \
    constexpr operator bool() const { return (__x & 0x7FFFU) != 0U; }

#define CUDACPU_F16_PAIR_MEMBERS(H, H2, RAW2)                                                        \
    H x, y;                                                                                          \
    H2() = default;                                                                                  \
    constexpr H2(const H& a, const H& b) : x(a), y(b) {}                                             \
    H2(const RAW2& r) : x(cudacpu::f16::make<H>(r.x)), y(cudacpu::f16::make<H>(r.y)) {}                                                  \
    H2& operator=(const RAW2& r) { return *this = H2(r); }                                           \
    operator RAW2() const { return RAW2{x.__x, y.__x}; }

// Conversions between an integer type and a 16-bit float type, in the four rounding modes.
#define CUDACPU_F16_INT(H, N, I, IN)                                                                 \
    inline I __##N##2##IN##_rn(const H h) { return cudacpu::f16::to_int<I>((float)h, cudacpu::f16::rn); } \
    inline I __##N##2##IN##_rz(const H h) { return cudacpu::f16::to_int<I>((float)h, cudacpu::f16::rz); } \
    inline I __##N##2##IN##_rd(const H h) { return cudacpu::f16::to_int<I>((float)h, cudacpu::f16::rd); } \
    inline I __##N##2##IN##_ru(const H h) { return cudacpu::f16::to_int<I>((float)h, cudacpu::f16::ru); } \
    inline H __##IN##2##N##_rn(const I i) { return H(i); }                                           \
    inline H __##IN##2##N##_rz(const I i) { return cudacpu::f16::make<H>(std::is_signed_v<I> ? cudacpu::f16::from_int<cudacpu::f16::fmt<H>::M, cudacpu::f16::fmt<H>::E>((long long)i, cudacpu::f16::rz) : cudacpu::f16::from_uint<cudacpu::f16::fmt<H>::M, cudacpu::f16::fmt<H>::E>((unsigned long long)i, cudacpu::f16::rz)); } \
    inline H __##IN##2##N##_rd(const I i) { return cudacpu::f16::make<H>(std::is_signed_v<I> ? cudacpu::f16::from_int<cudacpu::f16::fmt<H>::M, cudacpu::f16::fmt<H>::E>((long long)i, cudacpu::f16::rd) : cudacpu::f16::from_uint<cudacpu::f16::fmt<H>::M, cudacpu::f16::fmt<H>::E>((unsigned long long)i, cudacpu::f16::rd)); } \
    inline H __##IN##2##N##_ru(const I i) { return cudacpu::f16::make<H>(std::is_signed_v<I> ? cudacpu::f16::from_int<cudacpu::f16::fmt<H>::M, cudacpu::f16::fmt<H>::E>((long long)i, cudacpu::f16::ru) : cudacpu::f16::from_uint<cudacpu::f16::fmt<H>::M, cudacpu::f16::fmt<H>::E>((unsigned long long)i, cudacpu::f16::ru)); }

// The functions and operators of a 16-bit float type H, its pair type H2; N and N2 are the name
// parts CUDA uses (half / half2, bfloat16 / bfloat162).
#define CUDACPU_F16_FUNCS(H, H2, N, N2)                                                              \
    namespace cudacpu::f16 {                                                                         \
    inline H add(H a, H b) { return from<H>((double)val(a) + val(b)); }                             \
    inline H sub(H a, H b) { return from<H>((double)val(a) - val(b)); }                             \
    inline H mul(H a, H b) { return from<H>((double)val(a) * val(b)); }                             \
    inline H div(H a, H b) { return from<H>((double)val(a) / val(b)); }                             \
    inline H fma(H a, H b, H c) { return from<H>(fma_odd(val(a), val(b), val(c))); }                \
    inline H2 pair(H a, H b) { return H2(a, b); }                                                    \
    }                                                                                                \
    inline H __double2##N(const double a) { return cudacpu::f16::from<H>(a); }                       \
    inline H __float2##N(const float a) { return cudacpu::f16::from<H>(a); }                         \
    inline H __float2##N##_rn(const float a) { return cudacpu::f16::from<H>(a); }                    \
    inline H __float2##N##_rz(const float a) { return cudacpu::f16::from<H>(a, cudacpu::f16::rz); }  \
    inline H __float2##N##_rd(const float a) { return cudacpu::f16::from<H>(a, cudacpu::f16::rd); }  \
    inline H __float2##N##_ru(const float a) { return cudacpu::f16::from<H>(a, cudacpu::f16::ru); }  \
    inline float __##N##2float(const H a) { return cudacpu::f16::val(a); }                           \
    inline H2 __float2##N2##_rn(const float a) { return H2(__float2##N(a), __float2##N(a)); }        \
    inline H2 __floats2##N2##_rn(const float a, const float b) { return H2(__float2##N(a), __float2##N(b)); } \
    inline H2 __float22##N2##_rn(const float2 a) { return H2(__float2##N(a.x), __float2##N(a.y)); }  \
    inline float2 __##N2##2float2(const H2 a) { return make_float2((float)a.x, (float)a.y); }        \
    inline float __low2float(const H2 a) { return (float)a.x; }                                      \
    inline float __high2float(const H2 a) { return (float)a.y; }                                     \
    inline H __low2##N(const H2 a) { return a.x; }                                                   \
    inline H __high2##N(const H2 a) { return a.y; }                                                  \
    inline H2 __##N##2##N2(const H a) { return H2(a, a); }                                           \
    inline H2 __halves2##N2(const H a, const H b) { return H2(a, b); }                               \
    inline H2 make_##N2(const H a, const H b) { return H2(a, b); }                                   \
    inline H2 __low2##N2(const H2 a) { return H2(a.x, a.x); }                                        \
    inline H2 __high2##N2(const H2 a) { return H2(a.y, a.y); }                                       \
    inline H2 __lows2##N2(const H2 a, const H2 b) { return H2(a.x, b.x); }                           \
    inline H2 __highs2##N2(const H2 a, const H2 b) { return H2(a.y, b.y); }                          \
    inline H2 __lowhigh2highlow(const H2 a) { return H2(a.y, a.x); }                                 \
    inline short __##N##_as_short(const H h) { return (short)h.__x; }                                \
    inline unsigned short __##N##_as_ushort(const H h) { return h.__x; }                             \
    inline H __short_as_##N(const short i) { return cudacpu::f16::make<H>((uint16_t)i); }            \
    inline H __ushort_as_##N(const unsigned short i) { return cudacpu::f16::make<H>(i); }            \
    CUDACPU_F16_INT(H, N, int, int)                                                                  \
    CUDACPU_F16_INT(H, N, short, short)                                                              \
    CUDACPU_F16_INT(H, N, unsigned int, uint)                                                        \
    CUDACPU_F16_INT(H, N, unsigned short, ushort)                                                    \
    CUDACPU_F16_INT(H, N, long long, ll)                                                             \
    CUDACPU_F16_INT(H, N, unsigned long long, ull)                                                   \
    inline signed char __##N##2char_rz(const H h) { return cudacpu::f16::to_int<signed char>((float)h, cudacpu::f16::rz); } \
    inline unsigned char __##N##2uchar_rz(const H h) { return cudacpu::f16::to_int<unsigned char>((float)h, cudacpu::f16::rz); } \
    /* arithmetic: exact, rounded once to nearest even */                                            \
    inline H __hadd(const H a, const H b) { return cudacpu::f16::add(a, b); }                        \
    inline H __hsub(const H a, const H b) { return cudacpu::f16::sub(a, b); }                        \
    inline H __hmul(const H a, const H b) { return cudacpu::f16::mul(a, b); }                        \
    inline H __hdiv(const H a, const H b) { return cudacpu::f16::div(a, b); }                        \
    inline H __hadd_rn(const H a, const H b) { return cudacpu::f16::add(a, b); }                     \
    inline H __hsub_rn(const H a, const H b) { return cudacpu::f16::sub(a, b); }                     \
    inline H __hmul_rn(const H a, const H b) { return cudacpu::f16::mul(a, b); }                     \
    inline H __hfma(const H a, const H b, const H c) { return cudacpu::f16::fma(a, b, c); }          \
    inline H __hadd_sat(const H a, const H b) { return cudacpu::f16::from<H>(cudacpu::f16::sat((double)__hadd(a, b))); } \
    inline H __hsub_sat(const H a, const H b) { return cudacpu::f16::from<H>(cudacpu::f16::sat((double)__hsub(a, b))); } \
    inline H __hmul_sat(const H a, const H b) { return cudacpu::f16::from<H>(cudacpu::f16::sat((double)__hmul(a, b))); } \
    inline H __hfma_sat(const H a, const H b, const H c) { return cudacpu::f16::from<H>(cudacpu::f16::sat((double)__hfma(a, b, c))); } \
    inline H __hfma_relu(const H a, const H b, const H c) {                                          \
        const H r = __hfma(a, b, c);                                                                 \
        return cudacpu::f16::isnan(r) ? cudacpu::f16::make<H>(0x7fff) : (r.__x & 0x8000) ? cudacpu::f16::make<H>(0) : r; \
    }                                                                                                \
    inline H __hneg(const H a) { return cudacpu::f16::make<H>(a.__x ^ 0x8000); }                     \
    inline H __habs(const H a) { return cudacpu::f16::make<H>(a.__x & 0x7fff); }                     \
    inline H __hmax(const H a, const H b) { return cudacpu::f16::maximum(a, b, false); }             \
    inline H __hmin(const H a, const H b) { return cudacpu::f16::minimum(a, b, false); }             \
    inline H __hmax_nan(const H a, const H b) { return cudacpu::f16::maximum(a, b, true); }          \
    inline H __hmin_nan(const H a, const H b) { return cudacpu::f16::minimum(a, b, true); }          \
    inline H2 __hadd2(const H2 a, const H2 b) { return H2(__hadd(a.x, b.x), __hadd(a.y, b.y)); }     \
    inline H2 __hsub2(const H2 a, const H2 b) { return H2(__hsub(a.x, b.x), __hsub(a.y, b.y)); }     \
    inline H2 __hmul2(const H2 a, const H2 b) { return H2(__hmul(a.x, b.x), __hmul(a.y, b.y)); }     \
    inline H2 __h2div(const H2 a, const H2 b) { return H2(__hdiv(a.x, b.x), __hdiv(a.y, b.y)); }     \
    inline H2 __hadd2_rn(const H2 a, const H2 b) { return __hadd2(a, b); }                           \
    inline H2 __hsub2_rn(const H2 a, const H2 b) { return __hsub2(a, b); }                           \
    inline H2 __hmul2_rn(const H2 a, const H2 b) { return __hmul2(a, b); }                           \
    inline H2 __hadd2_sat(const H2 a, const H2 b) { return H2(__hadd_sat(a.x, b.x), __hadd_sat(a.y, b.y)); } \
    inline H2 __hsub2_sat(const H2 a, const H2 b) { return H2(__hsub_sat(a.x, b.x), __hsub_sat(a.y, b.y)); } \
    inline H2 __hmul2_sat(const H2 a, const H2 b) { return H2(__hmul_sat(a.x, b.x), __hmul_sat(a.y, b.y)); } \
    inline H2 __hfma2(const H2 a, const H2 b, const H2 c) { return H2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)); } \
    inline H2 __hfma2_sat(const H2 a, const H2 b, const H2 c) { return H2(__hfma_sat(a.x, b.x, c.x), __hfma_sat(a.y, b.y, c.y)); } \
    inline H2 __hfma2_relu(const H2 a, const H2 b, const H2 c) { return H2(__hfma_relu(a.x, b.x, c.x), __hfma_relu(a.y, b.y, c.y)); } \
    inline H2 __hneg2(const H2 a) { return H2(__hneg(a.x), __hneg(a.y)); }                           \
    inline H2 __habs2(const H2 a) { return H2(__habs(a.x), __habs(a.y)); }                           \
    inline H2 __hmax2(const H2 a, const H2 b) { return H2(__hmax(a.x, b.x), __hmax(a.y, b.y)); }     \
    inline H2 __hmin2(const H2 a, const H2 b) { return H2(__hmin(a.x, b.x), __hmin(a.y, b.y)); }     \
    inline H2 __hmax2_nan(const H2 a, const H2 b) { return H2(__hmax_nan(a.x, b.x), __hmax_nan(a.y, b.y)); } \
    inline H2 __hmin2_nan(const H2 a, const H2 b) { return H2(__hmin_nan(a.x, b.x), __hmin_nan(a.y, b.y)); } \
    /* comparisons (in float, exact): ordered ones are false on NaN, the ...u ones true */           \
    CUDACPU_F16_CMP(H, H2, eq, x == y)                                                               \
    CUDACPU_F16_CMP(H, H2, ne, x != y && x == x && y == y)                                           \
    CUDACPU_F16_CMP(H, H2, le, x <= y)                                                               \
    CUDACPU_F16_CMP(H, H2, ge, x >= y)                                                               \
    CUDACPU_F16_CMP(H, H2, lt, x < y)                                                                \
    CUDACPU_F16_CMP(H, H2, gt, x > y)                                                                \
    CUDACPU_F16_CMP(H, H2, equ, !(x < y) && !(x > y))                                              \
    CUDACPU_F16_CMP(H, H2, neu, x != y)                                                              \
    CUDACPU_F16_CMP(H, H2, leu, !(x > y))                                                            \
    CUDACPU_F16_CMP(H, H2, geu, !(x < y))                                                            \
    CUDACPU_F16_CMP(H, H2, ltu, !(x >= y))                                                           \
    CUDACPU_F16_CMP(H, H2, gtu, !(x <= y))                                                           \
    inline bool __hisnan(const H a) { return cudacpu::f16::isnan(a); }                               \
    inline int __hisinf(const H a) { return (a.__x & 0x7fff) == (H(INFINITY).__x) ? ((a.__x & 0x8000) ? -1 : 1) : 0; } \
    inline H2 __hisnan2(const H2 a) { return H2(H(__hisnan(a.x) ? 1.f : 0.f), H(__hisnan(a.y) ? 1.f : 0.f)); } \
    /* math: the float function, rounded */                                                          \
    CUDACPU_F16_MATH(H, H2, hsqrt, h2sqrt, std::sqrt(x))                                             \
    CUDACPU_F16_MATH(H, H2, hrsqrt, h2rsqrt, 1.f / std::sqrt(x))                                     \
    CUDACPU_F16_MATH(H, H2, hrcp, h2rcp, 1.f / x)                                                    \
    CUDACPU_F16_MATH(H, H2, hexp, h2exp, std::exp(x))                                                \
    CUDACPU_F16_MATH(H, H2, hexp2, h2exp2, std::exp2(x))                                             \
    CUDACPU_F16_MATH(H, H2, hexp10, h2exp10, std::pow(10.f, x))                                      \
    CUDACPU_F16_MATH(H, H2, hlog, h2log, std::log(x))                                                \
    CUDACPU_F16_MATH(H, H2, hlog2, h2log2, std::log2(x))                                             \
    CUDACPU_F16_MATH(H, H2, hlog10, h2log10, std::log10(x))                                          \
    CUDACPU_F16_MATH(H, H2, hsin, h2sin, std::sin(x))                                                \
    CUDACPU_F16_MATH(H, H2, hcos, h2cos, std::cos(x))                                                \
    CUDACPU_F16_MATH(H, H2, htanh, h2tanh, std::tanh(x))                                             \
    CUDACPU_F16_MATH(H, H2, htanh_approx, h2tanh_approx, std::tanh(x))                               \
    CUDACPU_F16_MATH(H, H2, hceil, h2ceil, std::ceil(x))                                             \
    CUDACPU_F16_MATH(H, H2, hfloor, h2floor, std::floor(x))                                          \
    CUDACPU_F16_MATH(H, H2, htrunc, h2trunc, std::trunc(x))                                          \
    CUDACPU_F16_MATH(H, H2, hrint, h2rint, std::nearbyint(x))                                        \
    /* operators, as CUDA defines them (between two values of the type) */                           \
    inline H operator+(const H& a, const H& b) { return __hadd(a, b); }                              \
    inline H operator-(const H& a, const H& b) { return __hsub(a, b); }                              \
    inline H operator*(const H& a, const H& b) { return __hmul(a, b); }                              \
    inline H operator/(const H& a, const H& b) { return __hdiv(a, b); }                              \
    inline H& operator+=(H& a, const H& b) { return a = __hadd(a, b); }                              \
    inline H& operator-=(H& a, const H& b) { return a = __hsub(a, b); }                              \
    inline H& operator*=(H& a, const H& b) { return a = __hmul(a, b); }                              \
    inline H& operator/=(H& a, const H& b) { return a = __hdiv(a, b); }                              \
    inline H& operator++(H& a) { return a = __hadd(a, H(1.f)); }                                     \
    inline H& operator--(H& a) { return a = __hsub(a, H(1.f)); }                                     \
    inline H operator++(H& a, const int) { const H r = a; ++a; return r; }                           \
    inline H operator--(H& a, const int) { const H r = a; --a; return r; }                           \
    inline H operator+(const H& a) { return a; }                                                     \
    inline H operator-(const H& a) { return __hneg(a); }                                             \
    inline bool operator==(const H& a, const H& b) { return __heq(a, b); }                           \
    inline bool operator!=(const H& a, const H& b) { return __hneu(a, b); }                          \
    inline bool operator<(const H& a, const H& b) { return __hlt(a, b); }                            \
    inline bool operator>(const H& a, const H& b) { return __hgt(a, b); }                            \
    inline bool operator<=(const H& a, const H& b) { return __hle(a, b); }                           \
    inline bool operator>=(const H& a, const H& b) { return __hge(a, b); }                           \
    inline H2 operator+(const H2& a, const H2& b) { return __hadd2(a, b); }                          \
    inline H2 operator-(const H2& a, const H2& b) { return __hsub2(a, b); }                          \
    inline H2 operator*(const H2& a, const H2& b) { return __hmul2(a, b); }                          \
    inline H2 operator/(const H2& a, const H2& b) { return __h2div(a, b); }                          \
    inline H2& operator+=(H2& a, const H2& b) { return a = __hadd2(a, b); }                          \
    inline H2& operator-=(H2& a, const H2& b) { return a = __hsub2(a, b); }                          \
    inline H2& operator*=(H2& a, const H2& b) { return a = __hmul2(a, b); }                          \
    inline H2& operator/=(H2& a, const H2& b) { return a = __h2div(a, b); }                          \
    inline H2 operator+(const H2& a) { return a; }                                                   \
    inline H2 operator-(const H2& a) { return __hneg2(a); }                                          \
    inline bool operator==(const H2& a, const H2& b) { return __hbeq2(a, b); }                       \
    inline bool operator!=(const H2& a, const H2& b) { return __hbneu2(a, b); }                      \
    inline bool operator<(const H2& a, const H2& b) { return __hblt2(a, b); }                        \
    inline bool operator>(const H2& a, const H2& b) { return __hbgt2(a, b); }                        \
    inline bool operator<=(const H2& a, const H2& b) { return __hble2(a, b); }                       \
    inline bool operator>=(const H2& a, const H2& b) { return __hbge2(a, b); }                       \
    /* atomics: rounded as __hadd */                                                                 \
    inline H atomicAdd(H* const p, const H v) { return cudacpu::f16::atomic_add16(p, [&](H cur) { return __hadd(cur, v); }); } \
    inline H2 atomicAdd(H2* const p, const H2 v) { return cudacpu::f16::atomic_add32(p, [&](H2 cur) { return __hadd2(cur, v); }); }

// A comparison in its scalar (bool), pair (1.0 / 0.0 per lane), pair-mask (0xffff per lane) and
// pair-both (bool: true in both lanes) forms.
#define CUDACPU_F16_CMP(H, H2, NAME, EXPR)                                                           \
    inline bool __h##NAME(const H a, const H b) { const float x = (float)a, y = (float)b; return EXPR; } \
    inline H2 __h##NAME##2(const H2 a, const H2 b) { return H2(H(__h##NAME(a.x, b.x) ? 1.f : 0.f), H(__h##NAME(a.y, b.y) ? 1.f : 0.f)); } \
    inline unsigned __h##NAME##2_mask(const H2 a, const H2 b) { return (__h##NAME(a.x, b.x) ? 0xffffu : 0u) | (__h##NAME(a.y, b.y) ? 0xffff0000u : 0u); } \
    inline bool __hb##NAME##2(const H2 a, const H2 b) { return __h##NAME(a.x, b.x) && __h##NAME(a.y, b.y); }

#define CUDACPU_F16_MATH(H, H2, NAME, NAME2, EXPR)                                                   \
    inline H NAME(const H a) { const float x = (float)a; return H((float)(EXPR)); }                 \
    inline H2 NAME2(const H2 a) { return H2(NAME(a.x), NAME(a.y)); }

// ---- __half: IEEE binary16 (10 mantissa bits, 5 exponent bits) -----------------------------------
typedef struct __align__(2) {
    unsigned short x;
} __half_raw;
typedef struct __align__(4) {
    unsigned short x, y;
} __half2_raw;

struct __nv_bfloat16;
struct __align__(2) __half {
    CUDACPU_F16_MEMBERS(__half, __half_raw, 10, 5)
    explicit __half(const __nv_bfloat16 f);  // defined in cuda_bf16.h
};
struct __align__(4) __half2 {
    CUDACPU_F16_PAIR_MEMBERS(__half, __half2, __half2_raw)
};
template <>
struct cudacpu::f16::fmt<__half> {
    static constexpr int M = 10, E = 5;
};
template <>
struct cudacpu::scalar_code<__half> {
    static constexpr char value = 'e';  // numpy's float16
};
static_assert(sizeof(__half) == 2 && sizeof(__half2) == 4 && std::is_trivially_copyable_v<__half2>,
              "16-bit storage that warp shuffles and memcpy move unchanged");
CUDACPU_F16_FUNCS(__half, __half2, half, half2)
typedef __half half;
typedef __half2 half2;

#define CUDART_INF_FP16 __ushort_as_half((unsigned short)0x7C00U)
#define CUDART_NAN_FP16 __ushort_as_half((unsigned short)0x7FFFU)
#define CUDART_MIN_DENORM_FP16 __ushort_as_half((unsigned short)0x0001U)
#define CUDART_MAX_NORMAL_FP16 __ushort_as_half((unsigned short)0x7BFFU)
#define CUDART_NEG_ZERO_FP16 __ushort_as_half((unsigned short)0x8000U)
#define CUDART_ZERO_FP16 __ushort_as_half((unsigned short)0x0000U)
#define CUDART_ONE_FP16 __ushort_as_half((unsigned short)0x3C00U)
