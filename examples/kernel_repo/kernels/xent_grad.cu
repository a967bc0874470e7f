// Gradient of mean softmax cross entropy over unmasked rows, with respect to the logits:
//   grad[r, v] = mask[r] * inv_n_valid * (softmax(logits[r])[v] - (v == targets[r]))
// One block per row (grid-stride over rows), any vocab, any blockDim.x up to 1024.
#include "block_reduce.cuh"

extern "C" __global__ void xent_grad(const float* logits, const int* targets, const float* mask,
                                     float* grad, int rows, int vocab, float inv_n_valid)
{
    __shared__ float scratch[1024];
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* x = logits + (size_t)r * vocab;
        float* g = grad + (size_t)r * vocab;
        const float scale = mask[r] * inv_n_valid;
        float m = -INFINITY;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) m = fmaxf(m, x[v]);
        m = block_reduce(m, scratch, true);
        float s = 0.f;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) s += expf(x[v] - m);
        s = block_reduce(s, scratch, false);
        const int target = targets[r];
        for (int v = threadIdx.x; v < vocab; v += blockDim.x)
            g[v] = scale == 0.f ? 0.f : (expf(x[v] - m) / s - (v == target ? 1.f : 0.f)) * scale;
    }
}
