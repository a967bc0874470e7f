// The cpu backend's runtime: runs a grid of CUDA blocks on OS threads, the CUDA threads of a block
// as fibers that switch only at __syncthreads() and warp collectives, in a chosen schedule.
//
// Bug-finding on by default: shared memory is poisoned before every block, a fault (guard page,
// stack overflow, division by zero, device assert) stops the launch with the block and thread that
// caused it, and barrier or warp-collective misuse is reported instead of hanging. On request
// (races=1, with a module built with the race hooks) writes that race are reported too: see
// "race checking" below.
#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csetjmp>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gradcheck_cpu_abi.h"

namespace {

enum State : uint8_t { RUN, BAR, WARP, DONE };

struct Lane {
    State st;
    uint8_t started;
    uint8_t op;       // warp op or barrier op
    unsigned mask;    // warp op mask
    int src;          // shuffle source lane (absolute thread index) / reduce signedness
    int line;         // __syncthreads() site
    const char* file;
    uint64_t val, res;
    uint3 tid;
    void* sp;  // saved stack pointer while parked (x86-64 switch)
    jmp_buf jb;
};

struct FaultInfo {
    int kind = CUDACPU_OK;
    int sig = 0;
    int write = -1;
    uintptr_t addr = 0;
    std::string message;
};

struct Worker {
    cudacpu_launch* L = nullptr;
    void (*body)(void**) = nullptr;
    void** args = nullptr;
    cudacpu_ctx* ctx = nullptr;
    cudacpu_worker_status* st = nullptr;
    unsigned nthreads = 0;
    std::vector<Lane> lanes;
    std::vector<ucontext_t> ucs;
    char* stacks = nullptr;
    size_t slot = 0, stack_map = 0, page = 0;
    ucontext_t boot;
    void* sched_sp = nullptr;
    jmp_buf sched_jb;
    std::vector<int> order;
    sigjmp_buf fault_jb;
    volatile bool in_block = false;
    int cur = 0;
    unsigned blk = 0;
    std::vector<char> dsmem;
    char* tls_base = nullptr;
    size_t tls_size = 0;
    FaultInfo fault;
    std::vector<char> altstack;
};

thread_local Worker* W = nullptr;

std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

uint3 linear_to_3d(unsigned i, const uint3& d) { return uint3{i % d.x, (i / d.x) % d.y, i / (d.x * d.y)}; }

std::string tstr(unsigned i, const uint3& d) {
    uint3 t = linear_to_3d(i, d);
    return fmt("(%u,%u,%u)", t.x, t.y, t.z);
}

// ---- race checking (races=1) --------------------------------------------------------------------
//
// A module built for race checking is the same translation unit compiled with g++'s
// -fsanitize=thread instrumentation, linked against this library instead of libtsan: every store
// calls __tsan_writeN(address) just before it happens, every atomic is a call to
// __tsan_atomicN_<op> (which performs it here), and __threadfence() calls
// __tsan_atomic_thread_fence. For every 4-byte word of the watched memory (the writable argument
// buffers, the block's static and dynamic shared memory) the hooks keep the last writer and the word
// as that write left it, and report a write of a different value by another thread that nothing
// orders after it. A race-checking launch runs its blocks on one OS thread, one after another, so
// the hooks need no locks and their state lives in plain globals.
//
// Ordering. Within a block: a completed __syncthreads() orders everything before it; for two lanes
// of one warp, so does a completed warp collective (__syncwarp, __shfl_sync, ...: counted per warp).
// Between blocks only a release/acquire chain does, and CUDA atomics are relaxed: the writer's
// block must __threadfence() after its write and then do an atomic on some location L, and the
// second block must do an atomic on L before its write. This is tracked with one scalar clock
// instead of vector clocks: the clock counts __threadfence() calls; a write records the clock;
// a fence releases the new clock value to the fencing thread; an atomic write publishes the thread's
// released clock at L; any atomic on L acquires what L holds; barriers and warp collectives pass the
// released and acquired clocks on among the threads they synchronise. A write W1 is ordered before W2 of another
// block when W1's clock is below what W2's thread acquired. The approximation: since the clock is
// grid-wide, a fence in one block also covers earlier writes of *other* blocks that never fenced
// (fewer reports, never a false one); exact for the usual "write, __threadfence(), atomic ticket,
// last block reads" pattern.

struct Shadow {
    uint32_t block;   // the writer's linear block index + 1; 0: never written
    uint32_t bar;     // barriers its block had completed
    uint32_t wsync;   // collectives its warp had completed
    uint32_t value;   // the word as the write left it
    uint32_t clock;   // the fence clock at the write
    uint16_t thread;  // the writer's linear thread index
    uint8_t bytes;    // which bytes of the word it wrote
    uint8_t flags;    // bit 0: an atomic; bits 4-7: bytes of the word found in a race
};
static_assert(sizeof(Shadow) == 24, "one shadow entry per 4-byte word");

enum { SCOPE_GLOBAL = 0, SCOPE_STATIC = 1, SCOPE_DYNAMIC = 2 };

struct Region {
    uintptr_t lo = 0, len = 0;  // watched bytes [lo, lo + len), lo 4-aligned
    uintptr_t base = 0;         // where offsets count from (shared memory)
    Shadow* sh = nullptr;
    size_t map = 0;
    std::vector<uint8_t> raced;  // shared memory: words found in a race (entries are per block)
};
// Read by every instrumented store: all lengths are 0 unless a race-checking launch runs.
Region RG[3];

// Atomic location -> the clock released through it: open addressing, key 0 free (cheaper to compile
// than std::unordered_map, and atomics on few locations are the rule).
struct SyncTable {
    std::vector<std::pair<uintptr_t, uint32_t>> slots;
    size_t used = 0;
    size_t home(uintptr_t a) const { return (size_t)(((uint64_t)a * 0x9E3779B97F4A7C15ull) >> 20) & (slots.size() - 1); }
    const uint32_t* find(uintptr_t a) const {
        if (!used) return nullptr;
        for (size_t i = home(a);; i = (i + 1) & (slots.size() - 1)) {
            if (slots[i].first == a) return &slots[i].second;
            if (!slots[i].first) return nullptr;
        }
    }
    uint32_t& operator[](uintptr_t a) {
        if (2 * (used + 1) > slots.size()) {
            std::vector<std::pair<uintptr_t, uint32_t>> old(std::max<size_t>(64, 2 * slots.size()));
            old.swap(slots);
            used = 0;
            for (auto& kv : old)
                if (kv.first) (*this)[kv.first] = kv.second;
        }
        size_t i = home(a);
        while (slots[i].first && slots[i].first != a) i = (i + 1) & (slots.size() - 1);
        if (!slots[i].first) slots[i] = {a, 0u}, ++used;
        return slots[i].second;
    }
};

struct Race {
    cudacpu_launch* L = nullptr;
    Worker* w = nullptr;
    uintptr_t pend = 0;  // the last store whose hook ran: its value is read at the next hook
    uint32_t pend_n = 0;
    uint32_t clock = 0;              // __threadfence() calls so far, grid-wide
    uint32_t bar = 0;                // barriers the running block completed
    std::vector<uint32_t> wsync;     // per warp: collectives completed
    std::vector<uint32_t> rel, acq;  // per thread: clock released by its last fence / acquired
    SyncTable sync;                  // atomic location -> clock released through it
    bool found = false;
    cudacpu_race first{};
};
Race* R = nullptr;

inline bool watched(uintptr_t a) {
    return a - RG[0].lo < RG[0].len || a - RG[1].lo < RG[1].len || a - RG[2].lo < RG[2].len;
}

inline uint32_t byte_bits(unsigned m) {
    return (m & 1u ? 0xFFu : 0u) | (m & 2u ? 0xFF00u : 0u) | (m & 4u ? 0xFF0000u : 0u) | (m & 8u ? 0xFF000000u : 0u);
}

// Two writes to the bytes `raced` of the word at wa conflict; e is the earlier one's entry.
void conflict(int r, uintptr_t wa, unsigned raced, Shadow& e, bool atomic, uint32_t n) {
    const uintptr_t at = wa + (unsigned)__builtin_ctz(raced);
    cudacpu_launch* L = R->L;
    int range = -1;
    uint64_t off;
    if (r == SCOPE_GLOBAL) {
        for (uint32_t i = 0; i < L->nranges; ++i)
            if (at - L->ranges[i].addr < L->ranges[i].bytes) {
                range = (int)i;
                break;
            }
        if (range < 0) return;  // the slack around a buffer: the canary check reports writes there
        off = at - L->ranges[range].addr;
        e.flags |= (uint8_t)(raced << 4);
    } else {
        off = at - RG[r].base;
        RG[r].raced[(wa - RG[r].lo) >> 2] = 1;
    }
    if (R->found) return;
    R->found = true;
    cudacpu_race& f = R->first;
    const unsigned me = (unsigned)R->w->cur;
    f.scope = r;
    f.range = range;
    f.offset = off;
    f.size = n;
    f.block = R->w->blk;
    f.thread = me;
    f.other_block = e.block - 1;
    f.other_thread = e.thread;
    f.atomic = atomic;
    f.other_atomic = e.flags & 1u;
    f.same_warp = e.block == R->w->blk + 1 && (e.thread >> 5) == (me >> 5);
}

// A write of n bytes at a (done: its value is in memory). atomic: by an atomic operation.
void record(uintptr_t a, uint32_t n, bool atomic) {
    Worker* w = R->w;
    const uint32_t me = (uint32_t)w->cur, blk1 = w->blk + 1;
    const uint32_t wsync = R->wsync[me >> 5];
    const uintptr_t end = a + n;
    for (uintptr_t wa = a & ~(uintptr_t)3; wa < end; wa += 4) {
        int r = -1;
        for (int i = 0; i < 3; ++i)
            if (wa - RG[i].lo < RG[i].len) {
                r = i;
                break;
            }
        if (r < 0) continue;
        const unsigned b0 = a > wa ? unsigned(a - wa) : 0u, b1 = end < wa + 4 ? unsigned(end - wa) : 4u;
        const uint8_t mask = uint8_t(((1u << b1) - 1u) & ~((1u << b0) - 1u));
        uint32_t value;
        std::memcpy(&value, reinterpret_cast<const void*>(wa), 4);
        Shadow& e = RG[r].sh[(wa - RG[r].lo) >> 2];
        const bool stale = r != SCOPE_GLOBAL && e.block != blk1;  // shared memory of an earlier block
        const bool mine = !stale && e.block == blk1 && e.thread == me;
        if (e.block && !stale && !mine) {
            const unsigned both = e.bytes & mask;
            const uint32_t diff = (e.value ^ value) & byte_bits(both);
            if (diff && !(atomic && (e.flags & 1u))) {  // atomics among themselves never race
                bool ordered;
                if (e.block != blk1)
                    ordered = e.clock < R->acq[me];
                else
                    ordered = e.bar != R->bar || ((e.thread >> 5) == (me >> 5) && e.wsync != wsync);
                if (!ordered) conflict(r, wa, both, e, atomic, n);
            }
        }
        const uint8_t keep = stale ? 0 : (uint8_t)(e.flags & 0xF0u);
        e.bytes = mine ? (uint8_t)(e.bytes | mask) : mask;
        e.block = blk1;
        e.bar = R->bar;
        e.wsync = wsync;
        e.value = value;
        e.clock = R->clock;
        e.thread = (uint16_t)me;
        e.flags = (uint8_t)(keep | (atomic ? 1u : 0u));
    }
}

// The running thread's last store is in memory by now: check it.
inline void flush() {
    if (R->pend_n) {
        const uint32_t n = R->pend_n;
        R->pend_n = 0;
        record(R->pend, n, false);
    }
}

__attribute__((noinline)) void on_write(uintptr_t a, uint32_t n) {
    flush();
    R->pend = a;
    R->pend_n = n;
}

inline void race_switch() {  // the running thread is about to park or exit
    if (R) flush();
}

void race_block_start() {
    R->pend_n = 0;
    R->bar = 0;
    std::fill(R->wsync.begin(), R->wsync.end(), 0u);
    std::fill(R->rel.begin(), R->rel.end(), 0u);
    std::fill(R->acq.begin(), R->acq.end(), 0u);
}

// After a barrier (or warp collective) every thread it synchronised has what any of them had
// released or acquired: "all threads write, __threadfence(), __syncthreads(), thread 0 takes the
// ticket" releases every thread's write through thread 0's atomic.
void join(std::vector<uint32_t>& v, size_t lo, size_t hi, unsigned lanes) {
    uint32_t m = 0;
    for (size_t i = lo; i < hi; ++i)
        if (lanes >> ((i - lo) & 31u) & 1u) m = std::max(m, v[i]);
    for (size_t i = lo; i < hi; ++i)
        if (lanes >> ((i - lo) & 31u) & 1u) v[i] = m;
}

void race_barrier() {  // a __syncthreads() completed
    ++R->bar;
    join(R->acq, 0, R->acq.size(), ~0u);
    join(R->rel, 0, R->rel.size(), ~0u);
}

void race_warp(unsigned warp, unsigned lanes) {  // a warp collective completed for these lanes
    ++R->wsync[warp];
    const size_t lo = (size_t)warp * 32, hi = std::min(R->acq.size(), lo + 32);
    join(R->acq, lo, hi, lanes);
    join(R->rel, lo, hi, lanes);
}

inline void atomic_before(const volatile void* p) {
    flush();
    if (const uint32_t* rel = R->sync.find((uintptr_t)p)) {
        uint32_t& acq = R->acq[R->w->cur];
        acq = std::max(acq, *rel);
    }
}

inline void atomic_after(const volatile void* p, uint32_t n, bool wrote) {
    if (!wrote) return;
    const uint32_t rel = R->rel[R->w->cur];
    if (rel) {
        uint32_t& s = R->sync[(uintptr_t)p];
        s = std::max(s, rel);
    }
    if (watched((uintptr_t)p)) record((uintptr_t)p, n, true);
}

void map_region(Region& rg, uintptr_t lo, uintptr_t hi, uintptr_t base, bool per_block) {
    rg = Region{};
    lo &= ~(uintptr_t)3;
    hi = (hi + 3) & ~(uintptr_t)3;
    if (hi <= lo) return;
    const size_t words = (hi - lo) / 4;
    void* m = mmap(nullptr, words * sizeof(Shadow), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return;
    rg.sh = static_cast<Shadow*>(m);
    rg.map = words * sizeof(Shadow);
    rg.base = base;
    if (per_block) rg.raced.assign(words, 0);
    rg.lo = lo;
    rg.len = hi - lo;  // last: from here on the hooks see this region
}

void unmap_regions() {
    for (Region& rg : RG) {
        rg.len = 0;
        if (rg.sh) munmap(rg.sh, rg.map);
        rg = Region{};
    }
}

// Distinct elements of an argument buffer that raced (from the shadow's raced-byte bits).
uint32_t raced_elements(const cudacpu_range& r) {
    const Region& rg = RG[SCOPE_GLOBAL];
    const uintptr_t lo = std::max<uintptr_t>(r.addr & ~(uintptr_t)3, rg.lo), hi = std::min<uintptr_t>(r.addr + r.bytes, rg.lo + rg.len);
    const uint64_t size = std::max<uint32_t>(1, r.itemsize);
    uint64_t n = 0, last = ~0ull;
    for (uintptr_t wa = lo; wa < hi; wa += 4) {
        const unsigned raced = rg.sh[(wa - rg.lo) >> 2].flags >> 4;
        if (!raced) continue;
        for (unsigned k = 0; k < 4; ++k) {
            const uintptr_t b = wa + k;
            if (!(raced >> k & 1u) || b - r.addr >= r.bytes) continue;
            const uint64_t el = (b - r.addr) / size;
            if (el != last) ++n, last = el;
        }
    }
    return (uint32_t)std::min<uint64_t>(n, UINT32_MAX);
}

// The static __shared__ variable holding byte `off` of the module's TLS block, from its symbol table.
bool tls_symbol(const std::string& path, uint64_t off, std::string& name, uint64_t& start, uint64_t& size) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat st{};
    bool found = false;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size > sizeof(Elf64_Ehdr)) {
        void* m = mmap(nullptr, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m != MAP_FAILED) {
            const char* base = static_cast<const char*>(m);
            const size_t fsize = (size_t)st.st_size;
            const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
            const bool ok = std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
                            eh->e_shoff && eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) <= fsize;
            const auto* sh = ok ? reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff) : nullptr;
            for (unsigned i = 0; ok && i < eh->e_shnum && !found; ++i) {
                if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
                const Elf64_Shdr& strs = sh[sh[i].sh_link];
                if (sh[i].sh_offset + sh[i].sh_size > fsize || strs.sh_offset + strs.sh_size > fsize) continue;
                const auto* sym = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
                const size_t nsym = sh[i].sh_size / sizeof(Elf64_Sym);
                for (size_t j = 0; j < nsym; ++j) {
                    if (ELF64_ST_TYPE(sym[j].st_info) != STT_TLS || sym[j].st_name >= strs.sh_size) continue;
                    if (off < sym[j].st_value || off >= sym[j].st_value + std::max<uint64_t>(1, sym[j].st_size)) continue;
                    const char* raw = base + strs.sh_offset + sym[j].st_name;
                    int status = 0;
                    char* dem = abi::__cxa_demangle(raw, nullptr, nullptr, &status);
                    name = status == 0 && dem ? dem : raw;
                    std::free(dem);
                    // "kernel(float*)::s_max" -> "s_max"; template arguments may hold "::" too
                    int depth = 0;
                    size_t cut = std::string::npos;
                    for (size_t k = 0; k + 1 < name.size(); ++k) {
                        const char c = name[k];
                        if (c == '<' || c == '(') ++depth;
                        else if (c == '>' || c == ')') --depth;
                        else if (depth == 0 && c == ':' && name[k + 1] == ':') cut = k + 2;
                    }
                    if (cut != std::string::npos) name = name.substr(cut);
                    start = sym[j].st_value;
                    size = sym[j].st_size;
                    found = true;
                    break;
                }
            }
            munmap(m, fsize);
        }
    }
    close(fd);
    return found;
}

void race_start(cudacpu_launch* L) {
    R = new Race;
    R->L = L;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (uint32_t i = 0; i < L->nranges; ++i) {
        L->ranges[i].raced = 0;
        if (!L->ranges[i].bytes) continue;
        lo = std::min<uintptr_t>(lo, L->ranges[i].addr);
        hi = std::max<uintptr_t>(hi, L->ranges[i].addr + L->ranges[i].bytes);
    }
    if (hi > lo) map_region(RG[SCOPE_GLOBAL], lo, hi, 0, false);
}

// After the launch: report the first conflict (unless the launch failed otherwise) and clean up.
void race_finish(cudacpu_launch* L, const std::string& module) {
    if (R->found && L->fault_kind == CUDACPU_OK) {
        cudacpu_race& f = R->first;
        for (uint32_t i = 0; i < L->nranges; ++i) L->ranges[i].raced = raced_elements(L->ranges[i]);
        if (f.scope != SCOPE_GLOBAL) {
            const Region& rg = RG[f.scope];
            uint64_t lo = 0, hi = rg.raced.size() * 4;  // byte offsets from rg.lo
            std::string name;
            uint64_t start = 0, size = 0;
            if (f.scope == SCOPE_STATIC && tls_symbol(module, f.offset, name, start, size)) {
                snprintf(f.symbol, sizeof f.symbol, "%s", name.c_str());
                f.symbol_offset = f.offset - start;
                lo = start + (rg.base - rg.lo);
                hi = lo + std::max<uint64_t>(size, 1);
            }
            for (uint64_t k = lo / 4; k < rg.raced.size() && k * 4 < hi; ++k) f.shared_words += rg.raced[k];
        }
        const uint3 gd{L->grid[0], L->grid[1], L->grid[2]}, bd{L->block[0], L->block[1], L->block[2]};
        const uint3 b = linear_to_3d(f.block, gd), t = linear_to_3d(f.thread, bd);
        L->fault_block[0] = b.x, L->fault_block[1] = b.y, L->fault_block[2] = b.z;
        L->fault_thread[0] = t.x, L->fault_thread[1] = t.y, L->fault_thread[2] = t.z;
        L->race = f;
        L->fault_kind = CUDACPU_FAULT_RACE;
        snprintf(L->message, sizeof L->message, "data race: two unordered writes of different values to one word");
    }
    unmap_regions();
    delete R;
    R = nullptr;
}

// ---- fibers -----------------------------------------------------------------------------------

// Each fiber runs the kernel body once per block, parking in between: fibers are made once per
// launch, not once per block.
void fiber_main();

#if defined(__x86_64__)
// A fiber switch is the hot path (every barrier, every warp collective, for every thread): save the
// callee-saved registers on the current stack, swap stack pointers, restore. No signal mask, no
// pointer mangling: several times cheaper than setjmp/longjmp.
extern "C" void cudacpu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .type cudacpu_switch,@function
cudacpu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cudacpu_switch, .-cudacpu_switch
)");

void* initial_sp(char* stack, size_t size) {
    // The first switch "returns" into fiber_main with the stack aligned as after a call.
    uintptr_t top = ((uintptr_t)(stack + size)) & ~(uintptr_t)15;
    void** sp = reinterpret_cast<void**>(top - 16);
    sp[0] = reinterpret_cast<void*>(&fiber_main);  // return address of the first switch
    sp[1] = nullptr;                               // fiber_main never returns
    sp -= 6;                                       // r15 r14 r13 r12 rbx rbp
    for (int i = 0; i < 6; ++i) sp[i] = nullptr;
    return sp;
}

inline void to_fiber(Worker* w, Lane& l) { cudacpu_switch(&w->sched_sp, l.sp); }
inline void to_scheduler(Worker* w, Lane& l) { cudacpu_switch(&l.sp, w->sched_sp); }
#else
// Portable path: ucontext for the first entry, then _setjmp/_longjmp between stacks.
inline void to_fiber(Worker* w, Lane& l) {
    if (!_setjmp(w->sched_jb)) {
        if (l.started) _longjmp(l.jb, 1);
        l.started = 1;
        swapcontext(&w->boot, &w->ucs[&l - w->lanes.data()]);
    }
}
inline void to_scheduler(Worker* w, Lane& l) {
    if (!_setjmp(l.jb)) _longjmp(w->sched_jb, 1);
}
#endif

void fiber_main() {
    for (;;) {
        Worker* w = W;
        w->body(w->args);
        race_switch();
        Lane& l = w->lanes[w->cur];
        l.st = DONE;
        to_scheduler(w, l);
    }
}

inline void resume(Worker* w, int i) {
    Lane& l = w->lanes[i];
    w->cur = i;
    w->ctx->tid = l.tid;
    w->st->thread = (uint32_t)i;
    to_fiber(w, l);
}

inline void park(Lane& l, State st) {
    l.st = st;
    to_scheduler(W, l);
}

[[noreturn]] void fail_in_fiber(int kind, const std::string& msg) {
    Worker* w = W;
    w->fault.kind = kind;
    w->fault.message = msg;
    siglongjmp(w->fault_jb, 1);
}

// ---- the block scheduler ----------------------------------------------------------------------

std::string describe_lanes(Worker* w, State st, const char* what) {
    unsigned n = 0, first = 0;
    for (unsigned i = 0; i < w->nthreads; ++i)
        if (w->lanes[i].st == st) {
            if (!n) first = i;
            ++n;
        }
    return fmt("%u thread%s %s (first: thread %s)", n, n == 1 ? "" : "s", what, tstr(first, w->ctx->bdim).c_str());
}

// Completes the warp collectives whose lanes have all arrived. Returns an error message, or "".
std::string resolve_warps(Worker* w, bool& progressed) {
    const unsigned n = w->nthreads;
    const uint3 bd = w->ctx->bdim;
    for (unsigned lo = 0; lo < n; lo += 32) {
        const unsigned hi = std::min(n, lo + 32);
        unsigned need = 0, at = 0;
        for (unsigned i = lo; i < hi; ++i)
            if (w->lanes[i].st == WARP) {
                need |= w->lanes[i].mask;
                at |= 1u << (i - lo);
            }
        if (!at) continue;
        // Lanes past the end of a partial last warp do not exist; masks may name them.
        if (hi - lo < 32) need &= (1u << (hi - lo)) - 1u;
        need |= at;
        const unsigned first = lo + (unsigned)__builtin_ctz(at);
        for (unsigned i = lo; i < hi; ++i) {
            if (!(need >> (i - lo) & 1u)) continue;
            const Lane& l = w->lanes[i];
            if (l.st == DONE)
                return fmt("warp collective over an exited lane: thread %s calls a __shfl/__ballot/__syncwarp "
                           "whose mask 0x%08x names lane %u (thread %s), which has already returned. On a GPU "
                           "this hangs or reads garbage; pass only the active lanes (e.g. __activemask() or "
                           "__ballot_sync of the loop condition).",
                           tstr(first, bd).c_str(), w->lanes[first].mask, i - lo, tstr(i, bd).c_str());
            if (l.st == BAR)
                return fmt("warp collective deadlock: thread %s waits in a warp collective (mask 0x%08x) for "
                           "lane %u (thread %s), which waits in __syncthreads() at line %d: neither can proceed.",
                           tstr(first, bd).c_str(), w->lanes[first].mask, i - lo, tstr(i, bd).c_str(), l.line);
            if (l.op != w->lanes[first].op)
                return fmt("divergent warp collectives in warp %u: lanes call different collectives "
                           "(e.g. __shfl_sync and __ballot_sync) at the same time.",
                           lo / 32);
        }
        // All named lanes are here: compute every lane's result.
        const uint8_t op = w->lanes[first].op;
        unsigned ballot = 0;
        uint64_t acc_u = 0;
        int64_t acc_i = 0;
        bool init = false;
        for (unsigned i = lo; i < hi; ++i) {
            if (!(at >> (i - lo) & 1u)) continue;
            const Lane& l = w->lanes[i];
            if (op == CUDACPU_BALLOT && l.val) ballot |= 1u << (i - lo);
            if (op >= CUDACPU_REDUCE_ADD) {
                const int64_t vi = (int64_t)l.val;
                const uint64_t vu = (uint32_t)l.val;
                if (!init) {
                    acc_u = vu;
                    acc_i = vi;
                    init = true;
                    continue;
                }
                switch (op) {
                    case CUDACPU_REDUCE_ADD: acc_u += vu; acc_i += vi; break;
                    case CUDACPU_REDUCE_MIN: acc_u = std::min(acc_u, vu); acc_i = std::min(acc_i, vi); break;
                    case CUDACPU_REDUCE_MAX: acc_u = std::max(acc_u, vu); acc_i = std::max(acc_i, vi); break;
                    case CUDACPU_REDUCE_AND: acc_u &= vu; break;
                    case CUDACPU_REDUCE_OR: acc_u |= vu; break;
                    case CUDACPU_REDUCE_XOR: acc_u ^= vu; break;
                }
            }
        }
        for (unsigned i = lo; i < hi; ++i) {
            if (!(at >> (i - lo) & 1u)) continue;
            Lane& l = w->lanes[i];
            switch (op) {
                case CUDACPU_SHFL: {
                    const unsigned s = lo + (unsigned)l.src;  // src is a lane of this warp
                    // Reading a lane that is not taking part is undefined in CUDA: hand back poison.
                    l.res = (s < hi && (at >> (s - lo) & 1u)) ? w->lanes[s].val : ~0ull;
                    break;
                }
                case CUDACPU_BALLOT: l.res = ballot & l.mask; break;
                case CUDACPU_SYNCWARP: l.res = 0; break;
                case CUDACPU_MATCH_ANY: {
                    unsigned m = 0;
                    for (unsigned j = lo; j < hi; ++j)
                        if ((at >> (j - lo) & 1u) && (l.mask >> (j - lo) & 1u) && w->lanes[j].val == l.val) m |= 1u << (j - lo);
                    l.res = m;
                    break;
                }
                default: {
                    const bool sgn = l.src == 1 && (op == CUDACPU_REDUCE_ADD || op == CUDACPU_REDUCE_MIN || op == CUDACPU_REDUCE_MAX);
                    l.res = sgn ? (uint64_t)(uint32_t)(int32_t)acc_i : (uint64_t)(uint32_t)acc_u;
                }
            }
            l.st = RUN;
            progressed = true;
        }
        if (R) race_warp(lo / 32, at);
    }
    return "";
}

// A small seedable generator: a block's random schedule is reproducible from (seed, block).
struct SplitMix64 {
    using result_type = uint64_t;
    uint64_t s;
    static constexpr uint64_t min() { return 0; }
    static constexpr uint64_t max() { return ~0ull; }
    uint64_t operator()() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
};

std::string run_block(Worker* w, SplitMix64& rng) {
    const cudacpu_launch* L = w->L;
    std::vector<int>& order = w->order;
    std::iota(order.begin(), order.end(), 0);
    if (L->schedule == 1) std::reverse(order.begin(), order.end());
    for (auto& l : w->lanes) l.st = RUN;
    for (;;) {
        if (L->schedule == 2) std::shuffle(order.begin(), order.end(), rng);
        for (int i : order)
            if (w->lanes[i].st == RUN) resume(w, i);
        bool progressed = false;
        std::string err = resolve_warps(w, progressed);
        if (!err.empty()) return err;
        if (progressed) continue;
        unsigned bar = 0, done = 0;
        for (auto& l : w->lanes) (l.st == BAR ? bar : done)++;
        if (!bar) return "";
        if (done && L->strict)
            return "barrier divergence: " + describe_lanes(w, DONE, "returned") + " while " +
                   describe_lanes(w, BAR, "wait in __syncthreads()") +
                   ". CUDA requires every thread of the block to reach each __syncthreads(); an early "
                   "return before a barrier is undefined behaviour (it can hang or skip the barrier). Keep "
                   "the threads alive and guard the work instead (if (i < n) ...), or pass strict=False "
                   "to accept it as many GPUs do.";
        // Every waiting thread must wait at the same __syncthreads() call.
        const Lane* ref = nullptr;
        for (auto& l : w->lanes)
            if (l.st == BAR) {
                if (!ref) ref = &l;
                else if (l.line != ref->line || (l.file != ref->file && std::strcmp(l.file, ref->file))) {
                    unsigned a = 0, b = 0, ia = 0, ib = 0;
                    for (unsigned i = 0; i < w->nthreads; ++i) {
                        const Lane& x = w->lanes[i];
                        if (x.st != BAR) continue;
                        if (x.line == ref->line && !std::strcmp(x.file, ref->file)) { if (!a++) ia = i; }
                        else if (!b++) ib = i;
                    }
                    return fmt("barrier divergence: threads wait at different __syncthreads() calls: %u at %s:%d "
                               "(first: thread %s), %u at %s:%d (first: thread %s). A __syncthreads() inside a "
                               "branch that threads take differently is undefined behaviour in CUDA; move the "
                               "barrier out of the branch.",
                               a, ref->file, ref->line, tstr(ia, w->ctx->bdim).c_str(), b, l.file, l.line,
                               tstr(ib, w->ctx->bdim).c_str());
                }
            }
        if (ref->op != CUDACPU_BAR_PLAIN) {
            int count = 0, all = 1, any = 0;
            for (auto& l : w->lanes)
                if (l.st == BAR) {
                    count += l.val ? 1 : 0;
                    all &= l.val ? 1 : 0;
                    any |= l.val ? 1 : 0;
                }
            const uint64_t r = ref->op == CUDACPU_BAR_COUNT ? (uint64_t)count : ref->op == CUDACPU_BAR_AND ? all : any;
            for (auto& l : w->lanes)
                if (l.st == BAR) l.res = r;
        }
        if (R) race_barrier();
        for (auto& l : w->lanes)
            if (l.st == BAR) l.st = RUN;
    }
}

// ---- faults -----------------------------------------------------------------------------------

void on_fault(int sig, siginfo_t* si, void* uctx) {
    Worker* w = W;
    if (w && w->in_block) {
        w->fault.sig = sig;
        w->fault.addr = (uintptr_t)si->si_addr;
#if defined(__x86_64__)
        if (sig == SIGSEGV) w->fault.write = (((ucontext_t*)uctx)->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
#else
        (void)uctx;
#endif
        const uintptr_t a = w->fault.addr, s = (uintptr_t)w->stacks;
        const bool in_stack_guard = w->stacks && a >= s && a < s + w->stack_map && (a - s) % w->slot < w->page;
        w->fault.kind = sig == SIGFPE ? CUDACPU_FAULT_ARITHMETIC
                        : sig == SIGILL ? CUDACPU_FAULT_TRAP
                        : in_stack_guard ? CUDACPU_FAULT_STACK
                                         : CUDACPU_FAULT_MEMORY;
        siglongjmp(w->fault_jb, 1);
    }
    // Not inside a launch: let the signal do what it would have done.
    signal(sig, SIG_DFL);
    raise(sig);
}

void install_handlers() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa{};
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL}) sigaction(sig, &sa, nullptr);
    });
}

// ---- the kernel module's thread-local storage: its static __shared__ variables ------------------

struct TlsModule {
    std::string name;
    size_t modid = 0, size = 0;
};

int find_tls(dl_phdr_info* info, size_t, void* data) {
    auto* m = static_cast<TlsModule*>(data);
    if (!info->dlpi_name || m->name != info->dlpi_name) return 0;
    for (int i = 0; i < info->dlpi_phnum; ++i)
        if (info->dlpi_phdr[i].p_type == PT_TLS) {
            m->size = info->dlpi_phdr[i].p_memsz;
            m->modid = info->dlpi_tls_modid;
        }
    return 1;
}

struct tls_index_t {
    unsigned long module, offset;
};
extern "C" void* __tls_get_addr(tls_index_t*);

// ---- fiber stacks, kept from launch to launch ---------------------------------------------------

// Mapping the stacks and their guard pages (one mprotect per CUDA thread) and faulting them in costs
// more than a small launch's kernel: each worker slot keeps its stacks while the geometry repeats.
struct StackCache {
    char* mem = nullptr;
    size_t map = 0, slot = 0;
    unsigned n = 0;
};
StackCache stack_cache[64];

char* acquire_stacks(int worker_slot, size_t map, size_t slot, unsigned n, size_t page) {
    StackCache& c = stack_cache[worker_slot];
    if (c.mem && c.map == map && c.slot == slot && c.n == n) return c.mem;
    if (c.mem) munmap(c.mem, c.map);
    c = StackCache{};
    void* mem = mmap(nullptr, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) return nullptr;
    char* stacks = static_cast<char*>(mem);
    for (unsigned i = 0; i < n; ++i) mprotect(stacks + i * slot, page, PROT_NONE);
    c = StackCache{stacks, map, slot, n};
    return stacks;
}

// ---- one OS thread's share of the grid --------------------------------------------------------

struct Grid {
    cudacpu_launch* L;
    void (*body)(void**);
    void** args;
    cudacpu_ctx* (*ctx_addr)();
    TlsModule tls;
    unsigned nblocks, nthreads;
    std::atomic<unsigned> next{0};
    std::atomic<bool> stop{false};
    std::mutex mu;
    bool failed = false;
    unsigned failed_blk = 0;  // the block the recorded failure is in
};

// A failure stops the grid: no worker takes a new block. Blocks are taken in index order (a block
// list is ascending), so every block below a failing one is taken already; those still running
// finish, and the failure reported is the one in the lowest block (the first failing thread of that
// block, in the schedule's order), whichever worker got there first. The same kernel and inputs
// give the same report on any machine.
void record_failure(Grid& g, Worker& w, int kind, const std::string& msg) {
    std::lock_guard<std::mutex> lk(g.mu);
    g.stop = true;
    if (g.failed && w.blk >= g.failed_blk) return;
    g.failed = true;
    g.failed_blk = w.blk;
    cudacpu_launch* L = g.L;
    L->fault_kind = kind;
    L->fault_signal = w.fault.sig;
    L->fault_write = w.fault.write;
    L->fault_addr = w.fault.addr;
    const uint3 b = linear_to_3d(w.blk, L->grid[0] ? uint3{L->grid[0], L->grid[1], L->grid[2]} : uint3{1, 1, 1});
    const uint3 t = linear_to_3d((unsigned)w.cur, w.ctx->bdim);
    L->fault_block[0] = b.x, L->fault_block[1] = b.y, L->fault_block[2] = b.z;
    L->fault_thread[0] = t.x, L->fault_thread[1] = t.y, L->fault_thread[2] = t.z;
    snprintf(L->message, sizeof L->message, "%s", msg.c_str());
}

void work(Grid& g, int slot) {
    Worker w;
    W = &w;
    cudacpu_launch* L = g.L;
    w.L = L;
    w.body = g.body;
    w.args = g.args;
    w.st = &L->status->w[slot];
    w.nthreads = g.nthreads;
    w.page = (size_t)sysconf(_SC_PAGESIZE);
    // The signal handler runs on its own stack: a fiber that overflowed its stack has none left.
    w.altstack.resize(std::max<size_t>(65536, (size_t)SIGSTKSZ));
    stack_t ss{};
    ss.ss_sp = w.altstack.data();
    ss.ss_size = w.altstack.size();
    sigaltstack(&ss, nullptr);

    w.ctx = g.ctx_addr();
    if (g.tls.modid) {
        tls_index_t ti{g.tls.modid, 0};
        w.tls_base = static_cast<char*>(__tls_get_addr(&ti));
        w.tls_size = g.tls.size;
    }
    // Fiber stacks, each above a guard page so an overflow faults instead of corrupting a neighbour.
    const size_t ssz = (L->stack_bytes + w.page - 1) / w.page * w.page;
    w.slot = ssz + w.page;
    w.stack_map = w.slot * w.nthreads;
    w.stacks = acquire_stacks(slot, w.stack_map, w.slot, w.nthreads, w.page);
    if (!w.stacks) {
        record_failure(g, w, CUDACPU_FAULT_SETUP, fmt("cannot map %zu bytes of fiber stacks", w.stack_map));
        return;
    }
    w.lanes.assign(w.nthreads, Lane{});
    const uint3 bdim{L->block[0], L->block[1], L->block[2]};
    for (unsigned i = 0; i < w.nthreads; ++i) {
        w.lanes[i].tid = linear_to_3d(i, bdim);
#if defined(__x86_64__)
        w.lanes[i].sp = initial_sp(w.stacks + i * w.slot + w.page, ssz);
#endif
    }
#if !defined(__x86_64__)
    w.ucs.resize(w.nthreads);
    for (unsigned i = 0; i < w.nthreads; ++i) {
        getcontext(&w.ucs[i]);
        w.ucs[i].uc_stack.ss_sp = w.stacks + i * w.slot + w.page;
        w.ucs[i].uc_stack.ss_size = ssz;
        w.ucs[i].uc_link = nullptr;
        makecontext(&w.ucs[i], fiber_main, 0);
    }
#endif
    w.order.resize(w.nthreads);
    w.dsmem.resize(L->shared_bytes + 16);
    if (R) {  // race checking: one worker; watch this block's shared memory too
        R->w = &w;
        map_region(RG[SCOPE_STATIC], (uintptr_t)w.tls_base, (uintptr_t)w.tls_base + w.tls_size, (uintptr_t)w.tls_base, true);
        map_region(RG[SCOPE_DYNAMIC], (uintptr_t)w.dsmem.data(), (uintptr_t)w.dsmem.data() + L->shared_bytes,
                   (uintptr_t)w.dsmem.data(), true);
        R->wsync.assign((w.nthreads + 31) / 32, 0u);
        R->rel.assign(w.nthreads, 0u);
        R->acq.assign(w.nthreads, 0u);
    }
    const uint3 gd{L->grid[0], L->grid[1], L->grid[2]}, bd{L->block[0], L->block[1], L->block[2]};

    for (;;) {
        if (g.stop) break;
        const unsigned taken = g.next.fetch_add(1);
        if (taken >= g.nblocks) break;
        const unsigned blk = L->nblock_list ? L->block_list[taken] : taken;
        w.blk = blk;
        w.st->block = blk;
        if (L->poison_shared) {
            if (w.tls_base) std::memset(w.tls_base, 0xFF, w.tls_size);
            std::memset(w.dsmem.data(), 0xFF, w.dsmem.size());
        }
        // The context lives in the module's TLS too: set it after poisoning.
        w.ctx->bid = linear_to_3d(blk, gd);
        w.ctx->bdim = bd;
        w.ctx->gdim = gd;
        w.ctx->dsmem = w.dsmem.data();
        if (R) race_block_start();
        SplitMix64 rng{(uint64_t)L->seed * 1000003u + blk};
        w.fault = FaultInfo{};
        if (sigsetjmp(w.fault_jb, 1)) {
            w.in_block = false;
            std::string what;
            switch (w.fault.kind) {
                case CUDACPU_FAULT_MEMORY:
                    what = fmt("illegal %s at address 0x%lx", w.fault.write == 1 ? "write" : w.fault.write == 0 ? "read" : "access",
                               (unsigned long)w.fault.addr);
                    break;
                case CUDACPU_FAULT_STACK:
                    what = fmt("stack overflow: the thread used more than its %zu-byte stack (deep recursion or a "
                               "large local array?)", ssz);
                    break;
                case CUDACPU_FAULT_ARITHMETIC: what = "arithmetic trap (integer division by zero?)"; break;
                case CUDACPU_FAULT_TRAP: what = w.fault.message.empty() ? "illegal instruction" : w.fault.message; break;
                default: what = w.fault.message;
            }
            record_failure(g, w, w.fault.kind, what);
            break;
        }
        w.in_block = true;
        std::string err = run_block(&w, rng);
        w.in_block = false;
        if (!err.empty()) {
            const bool warp = err.rfind("warp", 0) == 0 || err.rfind("divergent warp", 0) == 0;
            w.fault.kind = warp ? CUDACPU_FAULT_WARP : CUDACPU_FAULT_BARRIER;
            record_failure(g, w, w.fault.kind, err);
            break;
        }
        __atomic_add_fetch(&L->status->blocks_done, 1u, __ATOMIC_RELAXED);
    }
    w.st->block = UINT32_MAX;
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, nullptr);
    W = nullptr;
}

}  // namespace

// ---- the interface ------------------------------------------------------------------------------

extern "C" {

int cudacpu_abi_version(void) { return CUDACPU_ABI_VERSION; }

int cudacpu_run(cudacpu_launch* L, void (*body)(void**), void** args, cudacpu_ctx* (*ctx_addr)()) {
    install_handlers();
    Grid g;
    g.L = L;
    g.body = body;
    g.args = args;
    g.ctx_addr = ctx_addr;
    g.nblocks = L->nblock_list ? L->nblock_list : L->grid[0] * L->grid[1] * L->grid[2];
    g.nthreads = L->block[0] * L->block[1] * L->block[2];
    L->fault_kind = CUDACPU_OK;
    L->message[0] = 0;
    Dl_info di{};
    if (dladdr((void*)ctx_addr, &di) && di.dli_fname) {
        g.tls.name = di.dli_fname;
        dl_iterate_phdr(find_tls, &g.tls);
    }
    if (L->races) race_start(L);
    // A race check runs the blocks on one OS thread, in order: deterministic, and no locks in the hooks.
    const int nw = L->races ? 1 : std::max(1, std::min<int>(std::min(L->workers, 64), (int)g.nblocks));
    L->status->nworkers = (uint32_t)nw;
    std::vector<std::thread> threads;
    for (int i = 1; i < nw; ++i) threads.emplace_back([&g, i] { work(g, i); });
    work(g, 0);
    for (auto& t : threads) t.join();
    if (R) race_finish(L, g.tls.name);
    fflush(stdout);
    return L->fault_kind;
}

void cudacpu_syncthreads(int line, const char* file) {
    race_switch();
    Worker* w = W;
    Lane& l = w->lanes[w->cur];
    l.op = CUDACPU_BAR_PLAIN;
    l.line = line;
    l.file = file;
    park(l, BAR);
}

int cudacpu_syncthreads_reduce(int op, int predicate, int line, const char* file) {
    race_switch();
    Worker* w = W;
    Lane& l = w->lanes[w->cur];
    l.op = (uint8_t)op;
    l.val = (uint64_t)predicate;
    l.line = line;
    l.file = file;
    park(l, BAR);
    return (int)W->lanes[W->cur].res;
}

uint64_t cudacpu_warp(int op, unsigned mask, uint64_t value, int src) {
    race_switch();
    Worker* w = W;
    Lane& l = w->lanes[w->cur];
    l.op = (uint8_t)op;
    l.mask = mask;
    l.val = value;
    l.src = src;
    park(l, WARP);
    return W->lanes[W->cur].res;
}

unsigned cudacpu_activemask(void) {
    Worker* w = W;
    const unsigned lo = (unsigned)w->cur & ~31u, hi = std::min(w->nthreads, lo + 32);
    unsigned m = 0;
    for (unsigned i = lo; i < hi; ++i)
        if (w->lanes[i].st != DONE) m |= 1u << (i - lo);
    return m;
}

void cudacpu_assert_fail(const char* expr, const char* file, int line, const char* func) {
    fail_in_fiber(CUDACPU_FAULT_ASSERT, fmt("device-side assert failed: `%s` at %s:%d in %s", expr, file, line, func));
}

void cudacpu_trap(const char* what) { fail_in_fiber(CUDACPU_FAULT_TRAP, fmt("%s called", what)); }

long long cudacpu_clock(void) {
    unsigned lo, hi;
#if defined(__x86_64__)
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return (long long)(((unsigned long long)hi << 32) | lo);
#else
    (void)lo, (void)hi;
    return (long long)std::chrono::steady_clock::now().time_since_epoch().count();
#endif
}

}  // extern "C"

// ---- the race-check hooks: what g++ -fsanitize=thread code calls --------------------------------
// Every entry point g++ 12 can emit is defined, so a race-checking module always loads. Loads are not
// checked (read-after-write hazards are what thread-order schedules find); atomics are performed here.

namespace {
using u128 = unsigned __int128;
enum AtomicOp { A_XCHG, A_ADD, A_SUB, A_AND, A_OR, A_XOR, A_NAND };

// 16-byte atomics would need libatomic: a lock serves (race checks run on one OS thread anyway).
std::atomic_flag lock16 = ATOMIC_FLAG_INIT;
struct Lock16 {
    Lock16() {
        while (lock16.test_and_set(std::memory_order_acquire)) {
        }
    }
    ~Lock16() { lock16.clear(std::memory_order_release); }
};

template <class T>
T apply(T o, T v, AtomicOp op) {
    switch (op) {
        case A_XCHG: return v;
        case A_ADD: return (T)(o + v);
        case A_SUB: return (T)(o - v);
        case A_AND: return (T)(o & v);
        case A_OR: return (T)(o | v);
        case A_XOR: return (T)(o ^ v);
        default: return (T) ~(o & v);
    }
}

template <class T>
T a_load(const volatile T* a) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); }
template <>
u128 a_load(const volatile u128* a) {
    Lock16 g;
    return *a;
}
template <class T>
void a_store(volatile T* a, T v) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); }
template <>
void a_store(volatile u128* a, u128 v) {
    Lock16 g;
    *a = v;
}
template <class T>
T a_rmw(volatile T* a, T v, AtomicOp op) {
    switch (op) {
        case A_XCHG: return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);
        case A_ADD: return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);
        case A_SUB: return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);
        case A_AND: return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);
        case A_OR: return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);
        case A_XOR: return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);
        default: return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST);
    }
}
template <>
u128 a_rmw(volatile u128* a, u128 v, AtomicOp op) {
    Lock16 g;
    const u128 o = *a;
    *a = apply(o, v, op);
    return o;
}
template <class T>
bool a_cas(volatile T* a, T* expected, T desired) {
    return __atomic_compare_exchange_n(a, expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
template <>
bool a_cas(volatile u128* a, u128* expected, u128 desired) {
    Lock16 g;
    if (*a == *expected) {
        *a = desired;
        return true;
    }
    *expected = *a;
    return false;
}

template <class T>
T h_load(const volatile T* a) {
    if (R) atomic_before(a);
    return a_load(a);
}
template <class T>
void h_store(volatile T* a, T v) {
    if (R) atomic_before(a);
    a_store(a, v);
    if (R) atomic_after(a, sizeof(T), true);
}
template <class T>
T h_rmw(volatile T* a, T v, AtomicOp op) {
    if (R) atomic_before(a);
    const T o = a_rmw(a, v, op);
    if (R) atomic_after(a, sizeof(T), true);
    return o;
}
template <class T>
int h_cas(volatile T* a, T* expected, T desired) {
    if (R) atomic_before(a);
    const bool ok = a_cas(a, expected, desired);
    if (R) atomic_after(a, sizeof(T), ok);
    return ok;
}
template <class T>
T h_cas_val(volatile T* a, T expected, T desired) {
    h_cas(a, &expected, desired);
    return expected;  // the old value either way
}
}  // namespace

extern "C" {

void __tsan_init(void) {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit(void) {}
void __tsan_vptr_read(void**) {}
void __tsan_read_range(void*, unsigned long) {}
void __tsan_write_range(void* p, unsigned long n) {
    if (n && watched((uintptr_t)p)) on_write((uintptr_t)p, (uint32_t)std::min<unsigned long>(n, UINT32_MAX));
}
void __tsan_vptr_update(void** p, void*) {
    if (watched((uintptr_t)p)) on_write((uintptr_t)p, sizeof(void*));
}

#define CUDACPU_TSAN_ACCESS(N)                                                   \
    void __tsan_read##N(void*) {}                                                \
    void __tsan_unaligned_read##N(void*) {}                                      \
    void __tsan_volatile_read##N(void*) {}                                       \
    void __tsan_write##N(void* p) {                                              \
        if (watched((uintptr_t)p)) on_write((uintptr_t)p, N);                    \
    }                                                                            \
    void __tsan_unaligned_write##N(void* p) {                                    \
        if (watched((uintptr_t)p)) on_write((uintptr_t)p, N);                    \
    }                                                                            \
    void __tsan_volatile_write##N(void* p) {                                     \
        if (watched((uintptr_t)p)) on_write((uintptr_t)p, N);                    \
    }
CUDACPU_TSAN_ACCESS(1)
CUDACPU_TSAN_ACCESS(2)
CUDACPU_TSAN_ACCESS(4)
CUDACPU_TSAN_ACCESS(8)
CUDACPU_TSAN_ACCESS(16)
#undef CUDACPU_TSAN_ACCESS

#define CUDACPU_TSAN_ATOMIC(N, T)                                                                                 \
    T __tsan_atomic##N##_load(const volatile T* a, int) { return h_load(a); }                                     \
    void __tsan_atomic##N##_store(volatile T* a, T v, int) { h_store(a, v); }                                     \
    T __tsan_atomic##N##_exchange(volatile T* a, T v, int) { return h_rmw(a, v, A_XCHG); }                        \
    T __tsan_atomic##N##_fetch_add(volatile T* a, T v, int) { return h_rmw(a, v, A_ADD); }                        \
    T __tsan_atomic##N##_fetch_sub(volatile T* a, T v, int) { return h_rmw(a, v, A_SUB); }                        \
    T __tsan_atomic##N##_fetch_and(volatile T* a, T v, int) { return h_rmw(a, v, A_AND); }                        \
    T __tsan_atomic##N##_fetch_or(volatile T* a, T v, int) { return h_rmw(a, v, A_OR); }                          \
    T __tsan_atomic##N##_fetch_xor(volatile T* a, T v, int) { return h_rmw(a, v, A_XOR); }                        \
    T __tsan_atomic##N##_fetch_nand(volatile T* a, T v, int) { return h_rmw(a, v, A_NAND); }                      \
    int __tsan_atomic##N##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) { return h_cas(a, c, v); } \
    int __tsan_atomic##N##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) { return h_cas(a, c, v); }   \
    T __tsan_atomic##N##_compare_exchange_val(volatile T* a, T c, T v, int, int) { return h_cas_val(a, c, v); }
CUDACPU_TSAN_ATOMIC(8, uint8_t)
CUDACPU_TSAN_ATOMIC(16, uint16_t)
CUDACPU_TSAN_ATOMIC(32, uint32_t)
CUDACPU_TSAN_ATOMIC(64, uint64_t)
CUDACPU_TSAN_ATOMIC(128, u128)
#undef CUDACPU_TSAN_ATOMIC

void __tsan_atomic_thread_fence(int) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (R) {  // __threadfence(): releases this thread's writes so far (see "race checking")
        flush();
        R->rel[R->w->cur] = ++R->clock;
    }
}
void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

}  // extern "C"
