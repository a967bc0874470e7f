/* gradcheck cpu backend: cooperative groups (cooperative_groups.h), emulated.

   Every group operation is built on the prelude's own primitives (__syncthreads, __syncwarp,
   __shfl_*_sync, __ballot_sync, __match_any_sync, __activemask), so the backend's checks apply to
   groups too: a block.sync() that not every thread reaches is barrier divergence, a tile shuffle
   that names a lane which has returned is a WarpCollectiveError, and the schedules reorder threads
   between group collectives exactly as between the intrinsics.

   Covered: thread_block, thread_block_tile<1|2|4|8|16|32> from tiled_partition<N>(block or larger
   tile), tiled_partition(parent, n), coalesced_threads() / coalesced_group, labeled_partition,
   binary_partition, this_thread(), invoke_one, grid_group (all but grid.sync(), which needs a
   cooperative launch), and cg::reduce / inclusive_scan / exclusive_scan (<cooperative_groups/reduce.h>,
   <cooperative_groups/scan.h>). Not covered: tiles of 64 threads or more, clusters, memcpy_async:
   a compile error says so.

   As on a GPU: a tile's size() is its template size even for the last, partial tile of a block
   whose size is not a multiple of it, and a shuffle that reads a lane which does not exist returns
   an undefined value (here: all bits set, NaN for floats). Threads of a warp do not diverge on the
   cpu backend, so coalesced_threads() is every thread of the warp that has not returned. */
#pragma once

namespace cooperative_groups {

class thread_group;
class thread_block;
class coalesced_group;
template <unsigned Size, class ParentT>
class thread_block_tile;

namespace details {
struct access;  // builds groups and reads their lane masks (friend of every group)

template <class>
inline constexpr bool unsupported = false;  // for static_asserts that fire only when used

// The block's threads in linear order (x fastest); warps and tiles are cut from this order.
inline unsigned cta_rank() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }
inline unsigned cta_size() { return blockDim.x * blockDim.y * blockDim.z; }
inline unsigned laneid() { return cta_rank() & 31u; }
inline unsigned lanemask_lt() { return (1u << laneid()) - 1u; }
inline unsigned low_bits(unsigned n) { return n >= 32 ? ~0u : (1u << n) - 1u; }
inline unsigned popc(unsigned m) { return (unsigned)__builtin_popcount(m); }

// The lane of the member of rank n in the lane mask `mask` (members ordered by lane), 32 if none.
inline unsigned nth_lane(unsigned mask, unsigned n) {
    for (unsigned lane = 0; lane < 32; ++lane)
        if ((mask >> lane & 1u) && n-- == 0) return lane;
    return 32;
}
// A warp-wide lane bitmask renumbered by rank in the group `mask`.
inline unsigned pack_lanes(unsigned mask, unsigned lanes) {
    unsigned out = 0, rank = 0;
    for (unsigned lane = 0; lane < 32; ++lane)
        if (mask >> lane & 1u) out |= (lanes >> lane & 1u) << rank++;
    return out;
}

// Moves a trivially copyable value through warp shuffles, 8 bytes per collective (CUDA's groups
// shuffle values larger than a register too). `shfl` is one __shfl_*_sync on a uint64_t.
template <class T, class F>
inline T move(const T& v, F&& shfl) {
    static_assert(std::is_trivially_copyable_v<T>, "group shuffles move trivially copyable values");
    if constexpr (sizeof(T) <= 8) {
        return cudacpu::unbits<T>(shfl(cudacpu::bits(v)));
    } else {
        uint64_t w[(sizeof(T) + 7) / 8] = {};
        std::memcpy(w, &v, sizeof(T));
        for (uint64_t& x : w) x = shfl(x);
        T out;
        std::memcpy(&out, w, sizeof(T));
        return out;
    }
}

enum group_type : unsigned { coalesced_group_id = 1, thread_block_id = 2, grid_group_id = 3 };

[[noreturn]] inline void no_grid_sync() {
    // cudacpu_trap appends " called"; a GPU traps here too (grid_group::is_valid() is false).
    cudacpu_trap(
        "this_grid().sync() needs a cooperative launch (cudaLaunchCooperativeKernel), which the gradcheck "
        "cpu backend does not support: split the kernel into two launches at this grid barrier, or run it "
        "with backend='cuda'. grid_group::sync()");
}
[[noreturn]] inline void bad_tile_size() {
    cudacpu_trap("tiled_partition(parent, n) needs n to be a power of two from 1 to 32 (a GPU traps too). "
                 "tiled_partition(parent, n)");
}
}  // namespace details

// ---- thread_group: the type-erased group every group converts to ---------------------------------
class thread_group {
protected:
    friend struct details::access;
    unsigned type_;
    unsigned mask_ = 0;  // warp-level groups: the member lanes of this thread's warp
    unsigned size_ = 0;  // warp-level groups: the number of members
    unsigned meta_rank_ = 0, meta_size_ = 1;
    bool tiled_ = false;  // cut from a block or tile (contiguous lanes), not from coalesced_threads()

    explicit thread_group(unsigned type) : type_(type) {}
    thread_group(unsigned mask, unsigned size, unsigned meta_rank, unsigned meta_size, bool tiled)
        : type_(details::coalesced_group_id), mask_(mask), size_(size), meta_rank_(meta_rank),
          meta_size_(meta_size), tiled_(tiled) {}

public:
    unsigned get_type() const { return type_; }
    unsigned long long size() const {
        if (type_ == details::thread_block_id) return details::cta_size();
        if (type_ == details::grid_group_id)
            return (unsigned long long)gridDim.x * gridDim.y * gridDim.z * details::cta_size();
        return size_;
    }
    unsigned long long num_threads() const { return size(); }
    unsigned long long thread_rank() const {
        if (type_ == details::thread_block_id) return details::cta_rank();
        if (type_ == details::grid_group_id) {
            const unsigned long long b = blockIdx.x + (unsigned long long)gridDim.x * (blockIdx.y + (unsigned long long)gridDim.y * blockIdx.z);
            return b * details::cta_size() + details::cta_rank();
        }
        return details::popc(mask_ & details::lanemask_lt());
    }
    // The call site travels to the barrier, so barrier-divergence reports name the caller's line.
    void sync(int line = __builtin_LINE(), const char* file = __builtin_FILE()) const {
        if (type_ == details::thread_block_id) cudacpu_syncthreads(line, file);
        else if (type_ == details::grid_group_id) details::no_grid_sync();
        else __syncwarp(mask_);
    }
};

// ---- thread_block ---------------------------------------------------------------------------------
class thread_block : public thread_group {
    friend thread_block this_thread_block();
    thread_block() : thread_group(details::thread_block_id) {}

public:
    static void sync(int line = __builtin_LINE(), const char* file = __builtin_FILE()) { cudacpu_syncthreads(line, file); }
    static unsigned size() { return details::cta_size(); }
    static unsigned num_threads() { return details::cta_size(); }
    static unsigned thread_rank() { return details::cta_rank(); }
    static dim3 group_index() { return dim3(blockIdx); }
    static dim3 thread_index() { return dim3(threadIdx); }
    static dim3 group_dim() { return dim3(blockDim); }
    static dim3 dim_threads() { return dim3(blockDim); }
    // Split arrive/wait: here the whole barrier happens at the wait.
    struct arrival_token {};
    arrival_token barrier_arrive() const { return {}; }
    void barrier_wait(arrival_token&&, int line = __builtin_LINE(), const char* file = __builtin_FILE()) const {
        cudacpu_syncthreads(line, file);
    }
};
inline thread_block this_thread_block() { return thread_block(); }

// ---- grid_group: sizes and ranks work; sync() needs a cooperative launch -------------------------
class grid_group : public thread_group {
    friend grid_group this_grid();
    grid_group() : thread_group(details::grid_group_id) {}

public:
    // false, as on a GPU for a kernel not launched with cudaLaunchCooperativeKernel
    bool is_valid() const { return false; }
    void sync() const { details::no_grid_sync(); }
    static unsigned long long num_blocks() { return (unsigned long long)gridDim.x * gridDim.y * gridDim.z; }
    static unsigned long long block_rank() {
        return blockIdx.x + (unsigned long long)gridDim.x * (blockIdx.y + (unsigned long long)gridDim.y * blockIdx.z);
    }
    static unsigned long long num_threads() { return num_blocks() * details::cta_size(); }
    static unsigned long long size() { return num_threads(); }
    static unsigned long long thread_rank() { return block_rank() * details::cta_size() + details::cta_rank(); }
    static dim3 dim_blocks() { return dim3(gridDim); }
    static dim3 group_dim() { return dim3(gridDim); }
    static dim3 block_index() { return dim3(blockIdx); }
    static dim3 dim_threads() { return dim3(gridDim.x * blockDim.x, gridDim.y * blockDim.y, gridDim.z * blockDim.z); }
    static dim3 thread_index() {
        return dim3(blockIdx.x * blockDim.x + threadIdx.x, blockIdx.y * blockDim.y + threadIdx.y,
                    blockIdx.z * blockDim.z + threadIdx.z);
    }
};
inline grid_group this_grid() { return grid_group(); }

// ---- coalesced_group: lanes of one warp named by a mask ------------------------------------------
class coalesced_group : public thread_group {
    friend struct details::access;
    explicit coalesced_group(unsigned mask, unsigned meta_rank = 0, unsigned meta_size = 1, bool tiled = false)
        : thread_group(mask, details::popc(mask), meta_rank, meta_size, tiled) {}

public:
    unsigned num_threads() const { return size_; }
    unsigned size() const { return size_; }
    unsigned thread_rank() const { return details::popc(mask_ & details::lanemask_lt()); }
    unsigned meta_group_rank() const { return meta_rank_; }
    unsigned meta_group_size() const { return meta_size_; }
    void sync() const { __syncwarp(mask_); }

    // Shuffles address members by rank; shfl_up/down past either end read the caller's own value.
    template <class T>
    T shfl(T v, int src_rank) const { return by_lane(v, details::nth_lane(mask_, (unsigned)src_rank)); }
    template <class T>
    T shfl_down(T v, unsigned delta) const {
        const unsigned r = thread_rank() + delta;
        return by_lane(v, r < size_ ? details::nth_lane(mask_, r) : details::laneid());
    }
    template <class T>
    T shfl_up(T v, int delta) const {
        const int r = (int)thread_rank() - delta;
        return by_lane(v, r >= 0 ? details::nth_lane(mask_, (unsigned)r) : details::laneid());
    }
    int any(int predicate) const { return __ballot_sync(mask_, predicate) != 0; }
    int all(int predicate) const { return __ballot_sync(mask_, predicate) == mask_; }
    unsigned ballot(int predicate) const { return details::pack_lanes(mask_, __ballot_sync(mask_, predicate)); }
    template <class T>
    unsigned match_any(T v) const { return details::pack_lanes(mask_, __match_any_sync(mask_, v)); }
    template <class T>
    unsigned match_all(T v, int& pred) const {
        const unsigned same = __match_any_sync(mask_, v);
        pred = same == mask_;
        return pred ? details::pack_lanes(mask_, same) : 0u;
    }

private:
    template <class T>
    T by_lane(const T& v, unsigned lane) const {
        const unsigned m = mask_;
        return details::move(v, [&](uint64_t x) { return __shfl_sync(m, x, (int)lane, 32); });
    }
};

// ---- thread_block_tile<Size, Parent>: Size consecutive threads of one warp -----------------------
template <unsigned Size, class ParentT = void>
class thread_block_tile : public thread_group {
    static_assert(Size <= 32,
                  "gradcheck cpu backend: thread_block_tile of more than 32 threads (a multi-warp tile) is not "
                  "supported; use tiles of 1, 2, 4, 8, 16 or 32 threads, or run with backend='cuda'");
    static_assert(Size > 0 && (Size & (Size - 1)) == 0, "thread_block_tile: Size must be one of 1/2/4/8/16/32");
    template <unsigned, class>
    friend class thread_block_tile;
    friend struct details::access;

    thread_block_tile(unsigned meta_rank, unsigned meta_size)
        : thread_group(build_mask(), Size, meta_rank, meta_size, true) {}

public:
    // A tile of a known parent converts to the parent-agnostic thread_block_tile<Size>.
    template <class P>
        requires std::is_void_v<ParentT>
    thread_block_tile(const thread_block_tile<Size, P>& g) : thread_block_tile(g.meta_rank_, g.meta_size_) {}

    // The tile's lanes in its warp: all 32 for a tile of 32, so in a partial last warp the mask
    // names lanes that do not exist; the runtime ignores those, as a GPU does.
    static unsigned build_mask() { return details::low_bits(Size) << (details::laneid() & ~(Size - 1)); }

    static constexpr unsigned num_threads() { return Size; }
    static constexpr unsigned size() { return Size; }
    static unsigned thread_rank() { return details::cta_rank() & (Size - 1); }
    unsigned meta_group_rank() const { return meta_rank_; }
    unsigned meta_group_size() const { return meta_size_; }
    static void sync() { __syncwarp(build_mask()); }

    template <class T>
    T shfl(T v, int src_rank) const {
        const unsigned m = build_mask();
        return details::move(v, [&](uint64_t x) { return __shfl_sync(m, x, src_rank, (int)Size); });
    }
    template <class T>
    T shfl_down(T v, unsigned delta) const {
        const unsigned m = build_mask();
        return details::move(v, [&](uint64_t x) { return __shfl_down_sync(m, x, delta, (int)Size); });
    }
    template <class T>
    T shfl_up(T v, unsigned delta) const {
        const unsigned m = build_mask();
        return details::move(v, [&](uint64_t x) { return __shfl_up_sync(m, x, delta, (int)Size); });
    }
    template <class T>
    T shfl_xor(T v, unsigned lane_mask) const {
        const unsigned m = build_mask();
        return details::move(v, [&](uint64_t x) { return __shfl_xor_sync(m, x, (int)lane_mask, (int)Size); });
    }
    int any(int predicate) const { return __ballot_sync(build_mask(), predicate) != 0; }
    // As in CUDA the ballot must equal the tile's mask, so in a partial last warp all() is 0.
    int all(int predicate) const { return __ballot_sync(build_mask(), predicate) == build_mask(); }
    unsigned ballot(int predicate) const { return __ballot_sync(build_mask(), predicate) >> first_lane(); }
    template <class T>
    unsigned match_any(T v) const { return __match_any_sync(build_mask(), v) >> first_lane(); }
    template <class T>
    unsigned match_all(T v, int& pred) const {
        const unsigned same = __match_any_sync(build_mask(), v);
        pred = same == build_mask();
        return pred ? same >> first_lane() : 0u;
    }

private:
    static unsigned first_lane() { return details::laneid() & ~(Size - 1); }
};

namespace details {
template <class>
inline constexpr bool is_tile = false;
template <unsigned S, class P>
inline constexpr bool is_tile<thread_block_tile<S, P>> = true;
template <class>
inline constexpr unsigned tile_size = 0;
template <unsigned S, class P>
inline constexpr unsigned tile_size<thread_block_tile<S, P>> = S;

struct access {
    static unsigned mask(const thread_group& g) { return g.mask_; }
    static bool tiled(const thread_group& g) { return g.tiled_; }
    static coalesced_group coalesced(unsigned mask, unsigned meta_rank, unsigned meta_size, bool tiled) {
        return coalesced_group(mask, meta_rank, meta_size, tiled);
    }
    template <unsigned Size, class ParentT>
    static thread_block_tile<Size, ParentT> tile(unsigned meta_rank, unsigned meta_size) {
        return thread_block_tile<Size, ParentT>(meta_rank, meta_size);
    }
    // Members of rank [k*n, (k+1)*n) of the warp-level group `mask`, for the calling thread's k.
    static coalesced_group subtile(unsigned mask, unsigned n, bool tiled) {
        if (n == 0 || n > 32 || (n & (n - 1))) bad_tile_size();
        const unsigned size = popc(mask), rank = popc(mask & lanemask_lt());
        if (size <= n) return coalesced_group(mask, 0, 1, tiled);
        const unsigned first = rank / n * n;
        unsigned sub = 0;
        for (unsigned r = first; r < first + n && r < size; ++r) sub |= 1u << nth_lane(mask, r);
        return coalesced_group(sub, rank / n, tiled ? size / n : (size + n - 1) / n, tiled);
    }
};
}  // namespace details

// tiled_partition<N>(g): g is the thread_block or a larger tile.
template <unsigned Size, class ParentT>
inline thread_block_tile<Size, ParentT> tiled_partition(const ParentT& g) {
    (void)g;
    if constexpr (std::is_same_v<ParentT, thread_block>) {
        const unsigned n = details::cta_size();
        return details::access::tile<Size, ParentT>(details::cta_rank() / Size, (n + Size - 1) / Size);
    } else {
        static_assert(details::is_tile<ParentT>, "tiled_partition<N>(g): g must be a thread_block or a thread_block_tile");
        constexpr unsigned M = details::tile_size<ParentT>;
        static_assert(Size < M, "tiled_partition<N>(tile): N must be smaller than the parent tile's size");
        return details::access::tile<Size, ParentT>((details::cta_rank() & (M - 1)) / Size, M / Size);
    }
}

inline thread_block_tile<1, void> this_thread() { return details::access::tile<1, void>(0, 1); }

// tiled_partition(parent, n): a run-time tile size, returned as a type-erased thread_group.
inline thread_group tiled_partition(const thread_block& parent, unsigned tilesz) {
    (void)parent;
    if (tilesz == 0 || tilesz > 32 || (tilesz & (tilesz - 1))) details::bad_tile_size();
    const unsigned n = details::cta_size(), rank = details::cta_rank();
    const unsigned base = rank & ~(tilesz - 1), len = n - base < tilesz ? n - base : tilesz;
    const unsigned mask = details::low_bits(len) << (details::laneid() & ~(tilesz - 1));
    return details::access::coalesced(mask, rank / tilesz, (n + tilesz - 1) / tilesz, true);
}
inline coalesced_group tiled_partition(const coalesced_group& parent, unsigned tilesz) {
    return details::access::subtile(details::access::mask(parent), tilesz, details::access::tiled(parent));
}
inline thread_group tiled_partition(const thread_group& parent, unsigned tilesz) {
    if (parent.get_type() == details::thread_block_id)
        return tiled_partition(static_cast<const thread_block&>(parent), tilesz);
    return details::access::subtile(details::access::mask(parent), tilesz, details::access::tiled(parent));
}

inline coalesced_group coalesced_threads() { return details::access::coalesced(__activemask(), 0, 1, false); }

// ---- labeled_partition / binary_partition: split a warp-level group by a value -------------------
namespace details {
inline coalesced_group by_label(unsigned mask, unsigned long long label) {
    const unsigned sub = __match_any_sync(mask, label);
    const unsigned leader = (unsigned)__builtin_ctz(sub);
    const unsigned leaders = __ballot_sync(mask, laneid() == leader);
    return access::coalesced(sub, popc(leaders & low_bits(leader)), popc(leaders), false);
}
inline coalesced_group by_predicate(unsigned mask, bool pred) {
    const unsigned set = __ballot_sync(mask, pred);
    if (set == mask || set == 0) return access::coalesced(mask, 0, 1, false);
    return access::coalesced(pred ? set : mask & ~set, pred ? 1u : 0u, 2, false);
}
template <class G>
inline constexpr bool warp_level = std::is_same_v<G, coalesced_group> || is_tile<G>;
}  // namespace details

template <class G, class Label>
inline coalesced_group labeled_partition(const G& g, Label label) {
    static_assert(details::warp_level<G>, "labeled_partition needs a coalesced_group or a thread_block_tile");
    static_assert(std::is_integral_v<Label> || std::is_pointer_v<Label>,
                  "labeled_partition predicate must be an integral or pointer type");
    if constexpr (std::is_same_v<Label, bool>) return details::by_predicate(details::access::mask(g), label);
    else if constexpr (std::is_pointer_v<Label>)
        return details::by_label(details::access::mask(g), (unsigned long long)(uintptr_t)label);
    else return details::by_label(details::access::mask(g), (unsigned long long)label);
}
template <class G>
inline coalesced_group binary_partition(const G& g, bool pred) {
    static_assert(details::warp_level<G>, "binary_partition needs a coalesced_group or a thread_block_tile");
    return details::by_predicate(details::access::mask(g), pred);
}

// ---- free functions ------------------------------------------------------------------------------
template <class G>
inline void sync(const G& g, int line = __builtin_LINE(), const char* file = __builtin_FILE()) {
    if constexpr (requires { g.sync(line, file); }) g.sync(line, file);  // blocks: keep the call site
    else g.sync();
}
template <class G>
inline auto thread_rank(const G& g) -> decltype(g.thread_rank()) { return g.thread_rank(); }
template <class G>
inline auto group_size(const G& g) -> decltype(g.num_threads()) { return g.num_threads(); }

// invoke_one: the group's rank-0 thread calls fn; _broadcast hands its result to every member.
template <class G, class Fn, class... Args>
inline void invoke_one(const G& g, Fn&& fn, Args&&... args) {
    if (g.thread_rank() == 0) std::forward<Fn>(fn)(std::forward<Args>(args)...);
}
template <class G, class Fn, class... Args>
inline auto invoke_one_broadcast(const G& g, Fn&& fn, Args&&... args)
    -> std::remove_cvref_t<decltype(std::forward<Fn>(fn)(std::forward<Args>(args)...))> {
    std::remove_cvref_t<decltype(std::forward<Fn>(fn)(std::forward<Args>(args)...))> result{};
    if (g.thread_rank() == 0) result = std::forward<Fn>(fn)(std::forward<Args>(args)...);
    return g.shfl(result, 0);
}

// ---- not emulated: a clear compile error where they are used -------------------------------------
template <class T = void>
inline void this_cluster() {
    static_assert(details::unsupported<T>,
                  "gradcheck cpu backend: thread block clusters (cooperative_groups::this_cluster) are not supported; "
                  "run this kernel with backend='cuda'");
}
template <unsigned MaxBlockSize = 0, unsigned = 0>
struct block_tile_memory {
    static_assert(details::unsupported<block_tile_memory>,
                  "gradcheck cpu backend: block_tile_memory (for tiles of 64 threads or more) is not supported; "
                  "run this kernel with backend='cuda'");
};
}  // namespace cooperative_groups
