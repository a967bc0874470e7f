// Helper kernels for benchmarks/cpu_backend.py: they split the cpu backend's time for ce_grad into
// a fixed per-launch cost, the cost of the launch's buffers and threads, the cost of the block
// reductions, and (by difference with ce_grad itself) the per-element math.
//
// ce_nop and ce_reduce_only take ce_grad's parameters, so they are launched on the same buffers
// with the same geometry (grid = rows, block = 256). Neither writes grad.

#define BENCH_FULL_MASK 0xffffffffu

// The smallest useful launch: one float written (grid 1, block 32).
extern "C" __global__ void write_one(float* out) {
    if (threadIdx.x == 0) out[0] = 1.f;
}

// ce_grad's launch with no work: what the buffers, the blocks and the threads cost by themselves.
extern "C" __global__ void ce_nop(const float* logits, const int* targets, const float* mask,
                                  float* grad, int rows, int vocab, float inv_n_valid) {}

// ce_grad's two block reductions (warp shuffles, shared slots, four __syncthreads) on one value
// per thread, with no loop over the vocabulary.
extern "C" __global__ void ce_reduce_only(const float* logits, const int* targets,
                                          const float* mask, float* grad, int rows, int vocab,
                                          float inv_n_valid) {
    __shared__ float scratch[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    float v = (float)threadIdx.x;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(BENCH_FULL_MASK, v, o));
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = scratch[0];
    for (int w = 1; w < nwarps; ++w) m = fmaxf(m, scratch[w]);
    __syncthreads();
    float s = (float)threadIdx.x - m;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(BENCH_FULL_MASK, s, o);
    if (lane == 0) scratch[warp] = s;
    __syncthreads();
    float total = 0.f;
    for (int w = 0; w < nwarps; ++w) total += scratch[w];
    __syncthreads();
    if (total > 1e30f) grad[blockIdx.x] = total;  // never true: keeps the result alive
}
