// The cpu backend's runtime: runs a grid of CUDA blocks on OS threads, the CUDA threads of a block
// as fibers that switch only at __syncthreads() and warp collectives, in a chosen schedule.
//
// Bug-finding on by default: shared memory is poisoned before every block, a fault (guard page,
// stack overflow, division by zero, device assert) stops the launch with the block and thread that
// caused it, and barrier or warp-collective misuse is reported instead of hanging.
#include <dlfcn.h>
#include <link.h>
#include <signal.h>
#include <sys/mman.h>
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
};

void record_failure(Grid& g, Worker& w, int kind, const std::string& msg) {
    std::lock_guard<std::mutex> lk(g.mu);
    g.stop = true;
    if (g.failed) return;
    g.failed = true;
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
    const uint3 gd{L->grid[0], L->grid[1], L->grid[2]}, bd{L->block[0], L->block[1], L->block[2]};

    for (;;) {
        if (g.stop) break;
        const unsigned blk = g.next.fetch_add(1);
        if (blk >= g.nblocks) break;
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
    g.nblocks = L->grid[0] * L->grid[1] * L->grid[2];
    g.nthreads = L->block[0] * L->block[1] * L->block[2];
    L->fault_kind = CUDACPU_OK;
    L->message[0] = 0;
    Dl_info di{};
    if (dladdr((void*)ctx_addr, &di) && di.dli_fname) {
        g.tls.name = di.dli_fname;
        dl_iterate_phdr(find_tls, &g.tls);
    }
    const int nw = std::max(1, std::min<int>(std::min(L->workers, 64), (int)g.nblocks));
    L->status->nworkers = (uint32_t)nw;
    std::vector<std::thread> threads;
    for (int i = 1; i < nw; ++i) threads.emplace_back([&g, i] { work(g, i); });
    work(g, 0);
    for (auto& t : threads) t.join();
    fflush(stdout);
    return L->fault_kind;
}

void cudacpu_syncthreads(int line, const char* file) {
    Worker* w = W;
    Lane& l = w->lanes[w->cur];
    l.op = CUDACPU_BAR_PLAIN;
    l.line = line;
    l.file = file;
    park(l, BAR);
}

int cudacpu_syncthreads_reduce(int op, int predicate, int line, const char* file) {
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
