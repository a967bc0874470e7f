// Kernels for the cpu backend's race check (races=True): lost updates it must report, and correct
// kernels it must pass. Compiled with no_extern_c=True.

// Layer-norm-backward style column sums, one block per row: acc[j] += ... from every block, with
// no atomic. Blocks run one after another on the cpu backend, so the result is exactly right there;
// on a GPU blocks run at the same time and updates are lost.
extern "C" __global__ void col_sum_plain(const float* dy, float* acc, int rows, int h) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    for (int j = threadIdx.x; j < h; j += blockDim.x) acc[j] += dy[r * h + j];
}

// The same, correct.
extern "C" __global__ void col_sum_atomic(const float* dy, float* acc, int rows, int h) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    for (int j = threadIdx.x; j < h; j += blockDim.x) atomicAdd(&acc[j], dy[r * h + j]);
}

// Two threads of one block (different warps) write different values to one element, with
// (barrier != 0) or without a __syncthreads() between.
extern "C" __global__ void two_writers(float* out, int barrier) {
    if (threadIdx.x == 3) out[0] = 3.f;
    if (barrier) __syncthreads();
    if (threadIdx.x == 40) out[0] = 40.f;
}

// Two lanes of one warp, with (sync != 0) or without a __syncwarp() between.
extern "C" __global__ void two_lanes(int* out, int sync) {
    const int lane = threadIdx.x & 31;
    if (lane == 1) out[0] = 1;
    if (sync) __syncwarp();
    if (lane == 2) out[0] = 2;
}

// Every thread of every block writes the same value: a benign race.
extern "C" __global__ void same_value(float* out, float v) {
    out[0] = v;
    out[1 + blockIdx.x] = 2.f * v;
}

// Each element written by exactly one thread (grid-stride loop).
extern "C" __global__ void one_writer(const float* x, float* y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        y[i] = 2.f * x[i];
}

// A block maximum kept in one shared variable by whichever thread sees a larger value: several
// threads write it in one barrier interval (order-dependent on a GPU, exact here).
extern "C" __global__ void shared_max(const float* x, float* out) {
    __shared__ float s_max;
    if (threadIdx.x == 0) s_max = -INFINITY;
    __syncthreads();
    const float v = x[blockIdx.x * blockDim.x + threadIdx.x];
    if (v > s_max) s_max = v;
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = s_max;
}

// The same conflict in dynamic shared memory.
extern "C" __global__ void dyn_shared_sum(const float* x, float* out) {
    extern __shared__ float dyn[];
    if (threadIdx.x == 0) dyn[0] = 0.f;
    __syncthreads();
    dyn[0] += x[threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0) out[0] = dyn[0];
}

// The threadfence reduction (CUDA sample threadFenceReduction): every block writes its partial sum,
// __threadfence(), takes a ticket with atomicInc; the last block adds the partials and overwrites
// partial[0] with the total. fence == 0 drops the __threadfence(): nothing then orders block 0's
// write of partial[0] before the last block's, which is a race.
extern "C" __global__ void fence_sum(const float* x, float* partial, unsigned* count, int fence) {
    __shared__ float s[256];
    __shared__ bool last;
    const int t = threadIdx.x;
    s[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (t < k) s[t] += s[t + k];
        __syncthreads();
    }
    if (t == 0) {
        partial[blockIdx.x] = s[0];
        if (fence) __threadfence();
        const unsigned ticket = atomicInc(count, gridDim.x - 1);  // wraps back to 0 for the next launch
        last = ticket == gridDim.x - 1;
    }
    __syncthreads();
    if (last && t == 0) {
        float total = 0.f;
        for (unsigned b = 0; b < gridDim.x; ++b) total += ((volatile float*)partial)[b];
        partial[0] = total;
    }
}

// Every thread writes its element and fences, then one thread per block takes the ticket after a
// barrier; the last block doubles every element. Ordered: the barrier hands each thread's fence on
// to the thread that does the atomic.
extern "C" __global__ void fence_then_ticket(float* data, unsigned* count) {
    __shared__ bool last;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    data[i] = (float)i;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicInc(count, gridDim.x - 1) == gridDim.x - 1;
    __syncthreads();
    if (last)
        for (int j = threadIdx.x; j < gridDim.x * blockDim.x; j += blockDim.x) data[j] *= 2.f;
}

// A plain write racing with atomics from other blocks on one counter.
extern "C" __global__ void reset_while_counting(unsigned* count) {
    if (blockIdx.x == 1 && threadIdx.x == 0) count[0] = 0u;
    else if (threadIdx.x == 0) atomicAdd(count, 1u);
}

extern "C" __global__ void write_past_end(float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 1.f;  // off by one
}
