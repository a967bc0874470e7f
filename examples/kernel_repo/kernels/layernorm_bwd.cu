// Layer-norm backward over `hidden`, one block per row (grid-stride), any blockDim.x up to 1024:
//   xhat = (x - mean) * rstd,  g = dy * gamma
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
//   dgamma += sum over rows of dy * xhat,  dbeta += sum over rows of dy   (atomicAdd: zeroed first)
#include "block_reduce.cuh"

extern "C" __global__ void layernorm_bwd(const float* dy, const float* x, const float* gamma,
                                         const float* mean, const float* rstd, float* dx,
                                         float* dgamma, float* dbeta, int rows, int hidden)
{
    __shared__ float scratch[1024];
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const size_t off = (size_t)r * hidden;
        const float mu = mean[r], rs = rstd[r];
        float sum_g = 0.f, sum_gx = 0.f;
        for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
            const float xhat = (x[off + j] - mu) * rs;
            const float g = dy[off + j] * gamma[j];
            sum_g += g;
            sum_gx += g * xhat;
            atomicAdd(&dgamma[j], dy[off + j] * xhat);
            atomicAdd(&dbeta[j], dy[off + j]);
        }
        const float mean_g = block_reduce(sum_g, scratch, false) / hidden;
        const float mean_gx = block_reduce(sum_gx, scratch, false) / hidden;
        for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
            const float xhat = (x[off + j] - mu) * rs;
            dx[off + j] = rs * (dy[off + j] * gamma[j] - mean_g - xhat * mean_gx);
        }
    }
}
