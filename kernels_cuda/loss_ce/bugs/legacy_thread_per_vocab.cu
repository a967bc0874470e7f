// KNOWN BUG (catalogue): legacy "one thread per vocabulary entry" layout; columns >= blockDim.x are
// never written.
//
// What it is: v = threadIdx.x and there is no block-stride loop. Each thread with v < vocab walks the
// whole row serially to get the max and the sum of exp, then writes grad[row, v] only. The layout
// dates from when vocab <= 1024 and the block was launched with blockDim.x = vocab; later the block
// size was fixed (e.g. 256) while vocab grew.
// Shows at: vocab > blockDim.x (e.g. vocab 257 / 1025 / 2000 / 50257 with block 256; vocab 2000 with
// block 1024). Columns v in [blockDim.x, vocab) of every row, masked rows included, are never written.
// Does not show: vocab <= blockDim.x (then the values are correct, only slow: O(vocab^2) per row).
// What a user sees: gradcheck's cpu and cuda backends report them as unwritten (NaN poison,
// Launch.unwritten[3] = rows * (vocab - blockDim.x)); on a plain GPU run they hold whatever the
// buffer held before (zeros from torch.zeros, stale values from torch.empty), so the loss trains
// "mostly" and the tail of the vocabulary never learns.
// Fix: a block-stride loop, for (v = threadIdx.x; v < vocab; v += blockDim.x), with the max and sum
// done once per row by a block reduction (see ../ce_grad.cu).

extern "C" __global__ void __launch_bounds__(1024)
ce_grad_legacy(const float* __restrict__ logits, const int* __restrict__ targets,
               const float* __restrict__ mask, float* __restrict__ grad, int rows, int vocab,
               float inv_n_valid)
{
    const int row = blockIdx.x;
    const int v = threadIdx.x;
    if (row >= rows || v >= vocab) return;
    const float* x = logits + (size_t)row * vocab;
    const float scale = mask[row] * inv_n_valid;
    float m = -INFINITY;
    for (int j = 0; j < vocab; ++j) m = fmaxf(m, x[j]);
    float s = 0.f;
    for (int j = 0; j < vocab; ++j) s += expf(x[j] - m);
    const float p = expf(x[v] - m) / s;
    grad[(size_t)row * vocab + v] = (p - (v == targets[row] ? 1.f : 0.f)) * scale;
}
