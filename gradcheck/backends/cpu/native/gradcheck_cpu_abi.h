// The binary interface between a compiled kernel module, the cpu-backend runtime library and the
// Python launch worker (which mirrors these structs with ctypes: keep gradcheck/backends/cpu/_worker.py
// in step with any change here, and bump CUDACPU_ABI_VERSION).
#pragma once
#include <cstdint>

#define CUDACPU_ABI_VERSION 4

extern "C" {

struct uint3 {
    unsigned int x, y, z;
};

// Per OS thread, in the kernel module's thread-local storage: what threadIdx & co. read.
struct cudacpu_ctx {
    uint3 tid, bid, bdim, gdim;
    char* dsmem;  // this block's dynamic shared memory
};

// One kernel parameter as the compiler sees it.
struct cudacpu_param {
    uint8_t is_pointer;
    char code;         // 'f' float, 'i' signed int, 'u' unsigned int, 'b' bool, 'v' void, 's' struct, 'p' pointer
    uint8_t is_const;  // pointee is const (pointers only)
    uint8_t pad;
    uint32_t size;     // scalar size, or pointee size for pointers (0 for void*)
};

struct cudacpu_kernel {
    const char* name;    // as declared, with template arguments for instantiations
    const char* params;  // the parameter list as written (for messages)
    const void* fn;      // the function itself: its symbol is what get_function() looks up
    void (*body)(void** args);
    int32_t nparams;
    const cudacpu_param* types;
};

// Progress the runtime publishes while a launch runs (shared with the parent process). Each OS
// thread's slot has a cache line of its own: they are written on every fiber switch.
struct alignas(64) cudacpu_worker_status {
    volatile uint32_t block;   // linear index of the block this OS thread runs, or UINT32_MAX
    volatile uint32_t thread;  // linear index of the CUDA thread last resumed
};
struct cudacpu_status {
    volatile uint32_t blocks_done;
    volatile uint32_t nworkers;
    uint8_t pad[56];
    cudacpu_worker_status w[64];  // at byte 64, 64 bytes each
};
static_assert(sizeof(cudacpu_worker_status) == 64 && sizeof(cudacpu_status) == 64 + 64 * 64,
              "the Python side reads this layout (_arena.py)");

enum cudacpu_fault_kind {
    CUDACPU_OK = 0,
    CUDACPU_FAULT_MEMORY = 1,
    CUDACPU_FAULT_ARITHMETIC = 2,
    CUDACPU_FAULT_BARRIER = 3,
    CUDACPU_FAULT_WARP = 4,
    CUDACPU_FAULT_ASSERT = 5,
    CUDACPU_FAULT_STACK = 6,
    CUDACPU_FAULT_TRAP = 7,
    CUDACPU_FAULT_SETUP = 8,
    CUDACPU_FAULT_RACE = 9,  // the launch completed, but two writes to one word raced (races=1)
};

// A global-memory argument buffer that a race-checking launch watches (the writable ones).
struct cudacpu_range {
    uint64_t addr, bytes;
    uint32_t itemsize;
    uint32_t raced;  // filled in: how many of its elements were written in a race
};

// The first write-write conflict a race-checking launch found. Threads and blocks are linear indices.
struct cudacpu_race {
    int32_t scope;    // 0: an argument buffer, 1: static __shared__ memory, 2: dynamic shared memory
    int32_t range;    // scope 0: index into cudacpu_launch.ranges
    uint64_t offset;  // first racing byte: into that buffer / the module's static shared block / dynamic shared memory
    uint32_t size;    // bytes of the second write
    uint32_t block, thread;              // the second writer
    uint32_t other_block, other_thread;  // the first writer
    int32_t atomic, other_atomic;        // 1: that write was an atomic
    int32_t same_warp;                   // both writers in one warp of one block
    uint64_t shared_words;               // scope 1/2: distinct 4-byte words of that shared memory that raced
    uint64_t symbol_offset;              // scope 1: byte offset into the named array
    char symbol[256];                    // scope 1: the __shared__ array's name, "" when unknown
};

struct cudacpu_launch {
    uint32_t grid[3], block[3];
    uint64_t shared_bytes;
    uint64_t stack_bytes;
    int32_t schedule;  // 0 ascending, 1 descending, 2 random (seeded)
    uint32_t seed;
    int32_t workers;
    int32_t strict;         // barrier divergence (exited threads while others wait) is an error
    int32_t poison_shared;  // fill shared memory with 0xFF bytes (NaN as float) before every block
    cudacpu_status* status;
    // Race checking: only for a module built with the race hooks (-fsanitize=thread codegen).
    int32_t races;  // 1: keep shadow state and report write-write conflicts (runs on one OS thread)
    uint32_t nranges;
    cudacpu_range* ranges;
    // Run only these blocks (linear indices, ascending, each below the grid's size); gridDim is
    // still the whole grid. nblock_list 0: every block.
    uint32_t nblock_list;
    const uint32_t* block_list;
    // Filled in by the runtime when the launch fails.
    int32_t fault_kind;
    int32_t fault_signal;
    int32_t fault_write;  // 1 write, 0 read, -1 unknown
    uint64_t fault_addr;
    uint32_t fault_block[3], fault_thread[3];
    char message[2048];
    cudacpu_race race;  // when fault_kind is CUDACPU_FAULT_RACE
};

int cudacpu_run(cudacpu_launch* launch, void (*body)(void**), void** args, cudacpu_ctx* (*ctx_addr)());
int cudacpu_abi_version(void);

// Called from kernel code.
void cudacpu_syncthreads(int line, const char* file);
int cudacpu_syncthreads_reduce(int op, int predicate, int line, const char* file);
uint64_t cudacpu_warp(int op, unsigned mask, uint64_t value, int src);
unsigned cudacpu_activemask(void);
[[noreturn]] void cudacpu_assert_fail(const char* expr, const char* file, int line, const char* func);
[[noreturn]] void cudacpu_trap(const char* what);
long long cudacpu_clock(void);
}

enum cudacpu_warp_op {
    CUDACPU_SHFL = 0,
    CUDACPU_BALLOT = 1,
    CUDACPU_SYNCWARP = 2,
    CUDACPU_MATCH_ANY = 3,
    CUDACPU_REDUCE_ADD = 4,
    CUDACPU_REDUCE_MIN = 5,
    CUDACPU_REDUCE_MAX = 6,
    CUDACPU_REDUCE_AND = 7,
    CUDACPU_REDUCE_OR = 8,
    CUDACPU_REDUCE_XOR = 9,
};
enum cudacpu_bar_op { CUDACPU_BAR_PLAIN = 0, CUDACPU_BAR_COUNT = 1, CUDACPU_BAR_AND = 2, CUDACPU_BAR_OR = 3 };
