// KNOWN BUG (catalogue): softmax without the max shift: expf(x) overflows / underflows.
//
// What it is: the kernel computes sum(expf(x)) and expf(x) / sum directly, without subtracting the
// row maximum first ("the logits are small after layer norm anyway").
// Shows at: large-magnitude logits, any vocab and block size (measured: vocab 2000 and 50257).
//   - a logit above ~88.7: expf(x) = +inf, so the sum is inf and that element is inf / inf = NaN
//     (logits around +85 give the odd NaN, around +89 most of them, around +200 all of them);
//   - sum(exp(x)) above FLT_MAX (3.4e38) with every logit below 88.7 (e.g. logits around +80 with
//     vocab 50257): the sum is inf, every probability 0, so grad = -scale at the target, 0 elsewhere:
//     finite but 100% wrong;
//   - all logits of a row below about -87: the exponentials are denormal and lose relative precision
//     (5e-5 at -90, ~100% at -100; zero on a GPU built with flush-to-zero); all below ~-104: every
//     expf(x) is 0 and 0 / 0 = NaN for the whole row (logits around -200).
//   The mask multiplies the result, so masked rows with such logits are NaN too (NaN * 0 = NaN), even
//   with every row masked and inv_n_valid = 0.
// Does not show: moderate logits, roughly -87 < x and a row sum below 3.4e38 (e.g. N(0, 1), N(0, 3),
// or N(0, 1) + 50): then it agrees with the reference to float32 rounding.
// What a user sees: NaN gradients (loss scaler skipping steps, NaN weights) only for some batches,
// typically late in training when the logits have grown, or with a temperature < 1.
// Fix: subtract the row maximum before expf (softmax is invariant to the shift), as ../ce_grad.cu does.

#define NE_FULL_MASK 0xffffffffu

__device__ __forceinline__ float ne_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(NE_FULL_MASK, v, o);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = scratch[0];
    for (int w = 1; w < nwarps; ++w) r += scratch[w];
    __syncthreads();
    return r;
}

extern "C" __global__ void __launch_bounds__(1024)
ce_grad_naive_exp(const float* __restrict__ logits, const int* __restrict__ targets,
                  const float* __restrict__ mask, float* __restrict__ grad, int rows, int vocab,
                  float inv_n_valid)
{
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* x = logits + (size_t)row * vocab;
        float* g = grad + (size_t)row * vocab;
        const float scale = mask[row] * inv_n_valid;
        // BUG: no max subtraction, expf(x) overflows above ~88.7 and underflows below ~-103.
        float s = 0.f;
        for (int v = threadIdx.x; v < vocab; v += blockDim.x) s += expf(x[v]);
        s = ne_block_sum(s, scratch);
        const int target = targets[row];
        for (int v = threadIdx.x; v < vocab; v += blockDim.x)
            g[v] = (expf(x[v]) / s - (v == target ? 1.f : 0.f)) * scale;
    }
}
