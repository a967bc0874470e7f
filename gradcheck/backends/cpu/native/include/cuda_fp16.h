/* gradcheck cpu backend: cuda_fp16.h is not emulated yet. */
#pragma once
#error "gradcheck cpu backend: __half (16-bit float) (cuda_fp16.h) is not supported yet. Run this kernel with backend='cuda' on a GPU, or build a variant without it (for example with a -D option) for CPU checks."
