/* gradcheck cpu backend: cg::inclusive_scan / cg::exclusive_scan (<cooperative_groups/scan.h>) over
   a thread_block_tile or a coalesced group, emulated on warp shuffles with CUDA's algorithm
   (Hillis-Steele over ranks: a partial last tile works, each lane reads only lower lanes). */
#pragma once
#include <cooperative_groups/reduce.h>  // the function objects and the scan helper

namespace cooperative_groups {

template <class G, class T, class Op>
inline auto inclusive_scan(const G& g, T&& val, Op&& op) -> decltype(op(val, val)) {
    static_assert(details::warp_level<G>, "cg::inclusive_scan needs a thread_block_tile or a coalesced_group (as in CUDA)");
    return details::scan_inclusive(g, (std::remove_cvref_t<T>)val, op);
}
template <class G, class T>
inline std::remove_cvref_t<T> inclusive_scan(const G& g, T&& val) {
    return inclusive_scan(g, std::forward<T>(val), plus<std::remove_cvref_t<T>>());
}

// Rank 0 gets a value-initialized T, as in CUDA; integer sums subtract the own value instead.
template <class G, class T, class Op>
inline auto exclusive_scan(const G& g, T&& val, Op&& op) -> decltype(op(val, val)) {
    static_assert(details::warp_level<G>, "cg::exclusive_scan needs a thread_block_tile or a coalesced_group (as in CUDA)");
    using V = std::remove_cvref_t<T>;
    const V incl = details::scan_inclusive(g, (V)val, op);
    if constexpr (std::is_integral_v<V> && std::is_same_v<std::remove_cvref_t<Op>, plus<V>>) {
        return incl - (V)val;
    } else {
        const V below = g.shfl_up(incl, 1);
        return g.thread_rank() == 0 ? V{} : below;
    }
}
template <class G, class T>
inline std::remove_cvref_t<T> exclusive_scan(const G& g, T&& val) {
    return exclusive_scan(g, std::forward<T>(val), plus<std::remove_cvref_t<T>>());
}
}  // namespace cooperative_groups
