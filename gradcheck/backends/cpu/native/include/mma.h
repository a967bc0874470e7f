/* gradcheck cpu backend: mma.h is not emulated yet. */
#pragma once
#error "gradcheck cpu backend: warp matrix (wmma) operations (mma.h) is not supported yet. Run this kernel with backend='cuda' on a GPU, or build a variant without it (for example with a -D option) for CPU checks."
