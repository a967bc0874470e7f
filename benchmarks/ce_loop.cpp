// The baseline for benchmarks/cpu_backend.py: the softmax cross-entropy gradient of
// kernels_cuda/loss_ce/ce_grad.cu as a plain single-threaded C++ loop, in float32 like the kernel.
//
//   grad[r, v] = mask[r] * inv_n_valid * (softmax(logits[r, :])[v] - (v == targets[r]))
//
// Same three passes per row as the kernel (max, sum of expf, then write); only the order of the
// additions in the sum differs (sequential here, a block reduction in the kernel), so results agree
// to a few ulps. Built with `g++ -O2 -shared -fPIC` and called through ctypes on numpy arrays.

#include <math.h>
#include <cstddef>

extern "C" void ce_grad_loop(const float* logits, const int* targets, const float* mask,
                             float* grad, int rows, int vocab, float inv_n_valid) {
    for (int row = 0; row < rows; ++row) {
        const float* x = logits + static_cast<std::size_t>(row) * vocab;
        float* g = grad + static_cast<std::size_t>(row) * vocab;
        const float scale = mask[row] * inv_n_valid;
        if (scale == 0.f) {  // masked row: the gradient is zero
            for (int v = 0; v < vocab; ++v) g[v] = 0.f;
            continue;
        }
        float m = -INFINITY;
        for (int v = 0; v < vocab; ++v) m = fmaxf(m, x[v]);
        float s = 0.f;
        for (int v = 0; v < vocab; ++v) s += expf(x[v] - m);
        const float inv_s = 1.f / s;
        const int target = targets[row];
        for (int v = 0; v < vocab; ++v)
            g[v] = (expf(x[v] - m) * inv_s - (v == target ? 1.f : 0.f)) * scale;
    }
}
