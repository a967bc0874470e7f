/* gradcheck cpu backend: cg::reduce (<cooperative_groups/reduce.h>) and the function objects
   cg::plus / less / greater / bit_and / bit_or / bit_xor, emulated on warp shuffles.

   Results match what CUDA's header computes on an sm_80 GPU. A tile reduces with an xor butterfly
   over its width; every member gets the same bits when the operator is commutative (less/greater on
   +0 and -0, or on NaN, can differ by lane, as on a GPU). On the partial last tile of a block whose
   size is not a multiple of the tile size the butterfly reads lanes that do not exist: undefined on
   a GPU, all bits set here (NaN for floats). The exception, as on the GPU, where these go through
   redux.sync: integers of at most 4 bytes with one of the six function objects on a tile of 16 or
   32 threads reduce over the threads that exist. (That path does not call __reduce_*_sync: the
   runtime resolves one of those per warp, and two tiles of 16 in a warp reduce separately.)
   A coalesced group of 32 threads reduces as a tile of 32; a smaller one scans by rank and hands
   the last member's value to all. */
#pragma once
#include <cooperative_groups.h>

namespace cooperative_groups {

template <class T>
struct plus {
    T operator()(T a, T b) const { return a + b; }
};
template <class T>
struct less {
    T operator()(T a, T b) const { return (b < a) ? b : a; }
};
template <class T>
struct greater {
    T operator()(T a, T b) const { return (a < b) ? b : a; }
};
template <class T>
struct bit_and {
    T operator()(T a, T b) const { return a & b; }
};
template <class T>
struct bit_or {
    T operator()(T a, T b) const { return a | b; }
};
template <class T>
struct bit_xor {
    T operator()(T a, T b) const { return a ^ b; }
};

namespace details {
template <class T>
inline constexpr bool redux_type = std::is_integral_v<T> && !std::is_same_v<T, bool> && sizeof(T) <= 4;
// Which redux.sync operation a function object is on a GPU (0: none).
template <class Op>
inline constexpr int redux_kind = 0;
template <class T>
inline constexpr int redux_kind<plus<T>> = redux_type<T> ? 1 : 0;
template <class T>
inline constexpr int redux_kind<less<T>> = redux_type<T> ? 2 : 0;
template <class T>
inline constexpr int redux_kind<greater<T>> = redux_type<T> ? 3 : 0;
template <class T>
inline constexpr int redux_kind<bit_and<T>> = redux_type<T> ? 4 : 0;
template <class T>
inline constexpr int redux_kind<bit_or<T>> = redux_type<T> ? 5 : 0;
template <class T>
inline constexpr int redux_kind<bit_xor<T>> = redux_type<T> ? 6 : 0;

// The identity of each redux operator: what a lane that does not exist contributes.
template <int Kind, class V>
inline V redux_identity() {
    using U = std::make_unsigned_t<V>;
    constexpr V most = std::is_signed_v<V> ? V(U(~U(0)) >> 1) : V(~U(0));
    if constexpr (Kind == 2) return most;                                            // less
    else if constexpr (Kind == 3) return std::is_signed_v<V> ? V(-most - 1) : V(0);  // greater
    else if constexpr (Kind == 4) return V(~U(0));                                   // bit_and
    else return V(0);
}

// `missing`: the value that replaces a partner lane past the end of the block (redux semantics);
// without it the shuffled value is used, whatever it is.
template <unsigned S, class P, class V, class Op>
inline V butterfly(const thread_block_tile<S, P>& g, V out, Op& op, const V* missing = nullptr) {
    const unsigned warp_base = cta_rank() & ~31u, lane = laneid(), n = cta_size();
    for (unsigned m = S / 2; m > 0; m >>= 1) {
        const V other = g.shfl_xor(out, m);
        out = op(out, missing && warp_base + (lane ^ m) >= n ? *missing : other);
    }
    return out;
}

// Hillis-Steele inclusive scan by rank, as CUDA's: out = op(own, from lower rank).
template <class G, class V, class Op>
inline V scan_inclusive(const G& g, V out, Op& op) {
    const unsigned rank = g.thread_rank(), n = g.size();
    for (unsigned d = 1; d < n; d <<= 1) {
        const V tmp = g.shfl_up(out, d);
        if (d <= rank) out = op(out, tmp);
    }
    return out;
}
}  // namespace details

template <class G, class T, class Op>
inline auto reduce(const G& g, T&& val, Op&& op) -> decltype(op(val, val)) {
    static_assert(details::warp_level<G>,
                  "cg::reduce needs a thread_block_tile or a coalesced_group (as in CUDA); reduce a thread_block per "
                  "tile, then across the tiles' results");
    using V = std::remove_cvref_t<T>;
    using O = std::remove_cvref_t<Op>;
    if constexpr (details::redux_kind<O> != 0 && details::tile_size<G> >= 16 && std::is_integral_v<V>) {
        const V identity = details::redux_identity<details::redux_kind<O>, V>();
        return details::butterfly(g, (V)val, op, &identity);
    } else if constexpr (details::is_tile<G>) {
        return details::butterfly(g, (V)val, op);
    } else if (g.size() == 32) {  // a whole warp: the tile-of-32 path
        return details::butterfly(details::access::tile<32, void>(0, 1), (V)val, op);
    } else {
        const V total = details::scan_inclusive(g, (V)val, op);
        return g.shfl(total, (int)g.size() - 1);
    }
}
}  // namespace cooperative_groups
