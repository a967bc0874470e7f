// Lets g++ compile unmodified CUDA C as C++20 for the gradcheck cpu backend. Included before the
// user's source. Each CUDA thread of a block is a fiber; __syncthreads() and warp collectives are
// calls into the runtime library, which switches fibers in the launch's schedule.
#pragma once
// Standard headers first: the CUDA keyword macros below (__noinline__ among them) would break them.
#include <atomic>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

#include "gradcheck_cpu_abi.h"

#define __CUDACC__ 1
#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 800  // device code is being compiled; an sm_80 feature level, no Hopper-only paths
#endif
#define GRADCHECK_CPU_BACKEND 1

// `__global__` leaves a marker the build scans for to find kernels; g++ ignores the attribute.
#define __global__ __attribute__((cudacpu_global))
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __constant__
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
// One copy per OS thread, and an OS thread runs one block at a time: per-block storage.
// The marker lets the build find `extern __shared__` arrays (dynamic shared memory).
#define __shared__ __attribute__((cudacpu_shared)) static thread_local

static __thread cudacpu_ctx cudacpu_tls;

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};
#define threadIdx (cudacpu_tls.tid)
#define blockIdx (cudacpu_tls.bid)
#define blockDim (cudacpu_tls.bdim)
#define gridDim (cudacpu_tls.gdim)
constexpr int warpSize = 32;

// ---- vector types (aggregates, like CUDA's; element alignment only, so no aligned-load assumptions)
#define CUDACPU_VEC(T, N)                                                  \
    struct N##1 { T x; };                                                  \
    struct N##2 { T x, y; };                                               \
    struct N##3 { T x, y, z; };                                            \
    struct N##4 { T x, y, z, w; };                                         \
    inline N##1 make_##N##1(T a) { return {a}; }                           \
    inline N##2 make_##N##2(T a, T b) { return {a, b}; }                   \
    inline N##3 make_##N##3(T a, T b, T c) { return {a, b, c}; }           \
    inline N##4 make_##N##4(T a, T b, T c, T d) { return {a, b, c, d}; }
CUDACPU_VEC(float, float)
CUDACPU_VEC(double, double)
CUDACPU_VEC(int, int)
struct uint1 { unsigned int x; };  // uint3 is threadIdx's type, from the ABI header
struct uint2 { unsigned int x, y; };
struct uint4 { unsigned int x, y, z, w; };
inline uint1 make_uint1(unsigned int a) { return {a}; }
inline uint2 make_uint2(unsigned int a, unsigned int b) { return {a, b}; }
inline uint4 make_uint4(unsigned int a, unsigned int b, unsigned int c, unsigned int d) { return {a, b, c, d}; }
CUDACPU_VEC(long long, longlong)
CUDACPU_VEC(char, char)
CUDACPU_VEC(unsigned char, uchar)
#undef CUDACPU_VEC
inline uint3 make_uint3(unsigned int a, unsigned int b, unsigned int c) { return {a, b, c}; }

// ---- barriers and warp collectives
#define __syncthreads() cudacpu_syncthreads(__LINE__, __FILE__)
#define __syncthreads_count(p) cudacpu_syncthreads_reduce(CUDACPU_BAR_COUNT, (p) != 0, __LINE__, __FILE__)
#define __syncthreads_and(p) cudacpu_syncthreads_reduce(CUDACPU_BAR_AND, (p) != 0, __LINE__, __FILE__)
#define __syncthreads_or(p) cudacpu_syncthreads_reduce(CUDACPU_BAR_OR, (p) != 0, __LINE__, __FILE__)

namespace cudacpu {
template <class T>
inline uint64_t bits(T v) {
    static_assert(sizeof(T) <= 8, "warp collectives move at most 8 bytes per lane");
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof(T));
    return u;
}
template <class T>
inline T unbits(uint64_t u) {
    T v;
    std::memcpy(&v, &u, sizeof(T));
    return v;
}
inline int lane() {
    return int((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31u);
}
}  // namespace cudacpu

inline void __syncwarp(unsigned mask = 0xffffffffu) { cudacpu_warp(CUDACPU_SYNCWARP, mask, 0, 0); }
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)cudacpu_warp(CUDACPU_BALLOT, mask, pred != 0, 0);
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) {
    const unsigned b = __ballot_sync(mask, !pred);
    return b == 0;
}
inline unsigned __activemask() { return cudacpu_activemask(); }
template <class T>
inline unsigned __match_any_sync(unsigned mask, T value) {
    return (unsigned)cudacpu_warp(CUDACPU_MATCH_ANY, mask, cudacpu::bits(value), 0);
}
template <class T>
inline T __shfl_sync(unsigned mask, T var, int src, int width = warpSize) {
    const int l = cudacpu::lane();
    const int s = (l & ~(width - 1)) + (src & (width - 1));
    return cudacpu::unbits<T>(cudacpu_warp(CUDACPU_SHFL, mask, cudacpu::bits(var), s));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    const int l = cudacpu::lane();
    const int s = (unsigned)(l & (width - 1)) >= delta ? l - (int)delta : l;
    return cudacpu::unbits<T>(cudacpu_warp(CUDACPU_SHFL, mask, cudacpu::bits(var), s));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    const int l = cudacpu::lane();
    const int s = (unsigned)(l & (width - 1)) + delta < (unsigned)width ? l + (int)delta : l;
    return cudacpu::unbits<T>(cudacpu_warp(CUDACPU_SHFL, mask, cudacpu::bits(var), s));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
    const int l = cudacpu::lane(), s = l ^ lane_mask;
    // A lane of a later width-group is out of reach: the caller keeps its own value.
    const int src = (s & ~(width - 1)) <= (l & ~(width - 1)) ? s : l;
    return cudacpu::unbits<T>(cudacpu_warp(CUDACPU_SHFL, mask, cudacpu::bits(var), src));
}
#define CUDACPU_REDUCE(NAME, OP, T)                                                              \
    inline T NAME(unsigned mask, T v) { return (T)cudacpu_warp(OP, mask, cudacpu::bits(v), 0); }
CUDACPU_REDUCE(__reduce_add_sync, CUDACPU_REDUCE_ADD, unsigned)
CUDACPU_REDUCE(__reduce_min_sync, CUDACPU_REDUCE_MIN, unsigned)
CUDACPU_REDUCE(__reduce_max_sync, CUDACPU_REDUCE_MAX, unsigned)
CUDACPU_REDUCE(__reduce_and_sync, CUDACPU_REDUCE_AND, unsigned)
CUDACPU_REDUCE(__reduce_or_sync, CUDACPU_REDUCE_OR, unsigned)
CUDACPU_REDUCE(__reduce_xor_sync, CUDACPU_REDUCE_XOR, unsigned)
#undef CUDACPU_REDUCE
inline int __reduce_add_sync(unsigned mask, int v) {
    return (int)(uint32_t)cudacpu_warp(CUDACPU_REDUCE_ADD, mask, (uint64_t)(int64_t)v, 1);
}
inline int __reduce_min_sync(unsigned mask, int v) {
    return (int)(uint32_t)cudacpu_warp(CUDACPU_REDUCE_MIN, mask, (uint64_t)(int64_t)v, 1);
}
inline int __reduce_max_sync(unsigned mask, int v) {
    return (int)(uint32_t)cudacpu_warp(CUDACPU_REDUCE_MAX, mask, (uint64_t)(int64_t)v, 1);
}

// ---- memory fences, atomics (std::atomic_ref: blocks run on several OS threads at once)
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
// The threads of a block are fibers of one OS thread: a compiler barrier orders them. (A thread fence
// here would also read as a grid-wide release to the race checker, which only __threadfence() is.)
inline void __threadfence_block() { std::atomic_signal_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
template <class T>
using cudacpu_nd = std::type_identity_t<T>;  // keeps the value argument from steering deduction
template <class T> inline T atomicAdd(T* p, cudacpu_nd<T> v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <class T> inline T atomicSub(T* p, cudacpu_nd<T> v) { return std::atomic_ref<T>(*p).fetch_sub(v); }
template <class T> inline T atomicExch(T* p, cudacpu_nd<T> v) { return std::atomic_ref<T>(*p).exchange(v); }
template <class T> inline T atomicAnd(T* p, cudacpu_nd<T> v) { return std::atomic_ref<T>(*p).fetch_and(v); }
template <class T> inline T atomicOr(T* p, cudacpu_nd<T> v) { return std::atomic_ref<T>(*p).fetch_or(v); }
template <class T> inline T atomicXor(T* p, cudacpu_nd<T> v) { return std::atomic_ref<T>(*p).fetch_xor(v); }
template <class T>
inline T atomicCAS(T* p, cudacpu_nd<T> expected, cudacpu_nd<T> desired) {
    std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
    return expected;
}
template <class T>
inline T atomicMax(T* p, cudacpu_nd<T> v) {
    std::atomic_ref<T> r(*p);
    T old = r.load();
    while (old < v && !r.compare_exchange_weak(old, v)) {
    }
    return old;
}
template <class T>
inline T atomicMin(T* p, cudacpu_nd<T> v) {
    std::atomic_ref<T> r(*p);
    T old = r.load();
    while (old > v && !r.compare_exchange_weak(old, v)) {
    }
    return old;
}
inline unsigned atomicInc(unsigned* p, unsigned limit) {
    std::atomic_ref<unsigned> r(*p);
    unsigned old = r.load();
    while (!r.compare_exchange_weak(old, old >= limit ? 0u : old + 1u)) {
    }
    return old;
}
inline unsigned atomicDec(unsigned* p, unsigned limit) {
    std::atomic_ref<unsigned> r(*p);
    unsigned old = r.load();
    while (!r.compare_exchange_weak(old, (old == 0u || old > limit) ? limit : old - 1u)) {
    }
    return old;
}
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicMax_block atomicMax
#define atomicMin_block atomicMin
#define atomicExch_block atomicExch
#define atomicCAS_block atomicCAS

// ---- math and bit intrinsics. Fast-math forms use the accurate functions: compare with tolerances.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline unsigned umin(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned umax(unsigned a, unsigned b) { return a > b ? a : b; }
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.f / cbrtf(x); }
inline float __saturatef(float x) { return fminf(fmaxf(x, 0.f), 1.f); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline float __int_as_float(int i) { return cudacpu::unbits<float>((uint32_t)i); }
inline int __float_as_int(float f) { return (int)(uint32_t)cudacpu::bits(f); }
inline float __uint_as_float(unsigned u) { return cudacpu::unbits<float>(u); }
inline unsigned __float_as_uint(float f) { return (unsigned)cudacpu::bits(f); }
inline double __longlong_as_double(long long i) { return cudacpu::unbits<double>((uint64_t)i); }
inline long long __double_as_longlong(double d) { return (long long)cudacpu::bits(d); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
    return (x >> 16) | (x << 16);
}
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline long long clock64() { return cudacpu_clock(); }
#define clock() cudacpu_clock()  // a macro: <time.h>'s clock() is already declared
inline void __nanosleep(unsigned) {}

// ---- cache-hinted loads and stores: plain memory accesses here
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline T __ldcv(const T* p) { return *p; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stwb(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

// ---- device-side assert and trap: reported as faults of the launch, with block and thread
#define __trap() cudacpu_trap("__trap()")
#define __brkpt() cudacpu_trap("__brkpt()")
#include <assert.h>  // the backend's own assert.h: a failed assert is a fault of the launch

// ---- dynamic shared memory declared at namespace scope (function-scope ones become pointers)
namespace cudacpu {
template <class T>
struct dyn_shared {
    operator T*() const { return reinterpret_cast<T*>(cudacpu_tls.dsmem); }
    template <class U>
    explicit operator U*() const { return reinterpret_cast<U*>(cudacpu_tls.dsmem); }
    T& operator[](std::ptrdiff_t i) const { return reinterpret_cast<T*>(cudacpu_tls.dsmem)[i]; }
};

// ---- kernel registration: what the build appends after the user's source
// Types with a code of their own, set by the headers that declare them: cuda_fp16.h gives __half
// 'e' (numpy's float16), cuda_bf16.h gives __nv_bfloat16 'E' (ml_dtypes' bfloat16). Other structs
// are 's', which takes any dtype.
template <class T>
struct scalar_code {
    static constexpr char value = 0;
};
template <class T>
constexpr char type_code() {
    if constexpr (scalar_code<T>::value != 0) return scalar_code<T>::value;
    else if constexpr (std::is_same_v<T, bool>) return 'b';
    else if constexpr (std::is_floating_point_v<T>) return 'f';
    else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return 'i';
    else if constexpr (std::is_integral_v<T>) return 'u';
    else if constexpr (std::is_void_v<T>) return 'v';
    else if constexpr (std::is_pointer_v<T>) return 'p';
    else return 's';
}
template <class P>
constexpr cudacpu_param param_of() {
    using U = std::remove_cv_t<std::remove_reference_t<P>>;
    if constexpr (std::is_pointer_v<U>) {
        using E = std::remove_pointer_t<U>;
        using B = std::remove_cv_t<E>;
        constexpr uint32_t size = std::is_void_v<B> ? 0u : (uint32_t)sizeof(std::conditional_t<std::is_void_v<B>, char, B>);
        return cudacpu_param{1, type_code<B>(), (uint8_t)std::is_const_v<E>, 0, size};
    } else {
        return cudacpu_param{0, type_code<U>(), 0, 0, (uint32_t)sizeof(U)};
    }
}
template <auto F>
struct kernel;
template <class... P, void (*F)(P...)>
struct kernel<F> {
    static constexpr int n = (int)sizeof...(P);
    static constexpr cudacpu_param types[sizeof...(P) + 1] = {param_of<P>()..., cudacpu_param{}};
    template <std::size_t... I>
    static void invoke(void** a, std::index_sequence<I...>) {
        F(*static_cast<std::remove_cv_t<P>*>(a[I])...);
    }
    static void body(void** a) { invoke(a, std::index_sequence_for<P...>{}); }
};
}  // namespace cudacpu
