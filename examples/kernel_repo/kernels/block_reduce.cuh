// A block-wide sum or max in shared memory, for any blockDim.x up to 1024. Every thread gets the
// result. `scratch` holds blockDim.x floats; the trailing barrier lets the caller reuse it.
#pragma once

__device__ inline float block_reduce(float v, float* scratch, bool take_max)
{
    const unsigned t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (unsigned stride = 512; stride > 0; stride >>= 1) {
        if (t < stride && t + stride < blockDim.x) {
            const float other = scratch[t + stride];
            scratch[t] = take_max ? fmaxf(scratch[t], other) : scratch[t] + other;
        }
        __syncthreads();
    }
    const float result = scratch[0];
    __syncthreads();
    return result;
}
