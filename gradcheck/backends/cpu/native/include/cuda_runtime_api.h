/* gradcheck cpu backend: CUDA's cuda_runtime_api.h. Kernel code needs nothing from it beyond what the backend's
   prelude (gradcheck_cuda.h) already declares; host API calls are not available in kernel sources. */
#pragma once
