/* gradcheck cpu backend: cooperative_groups.h is not emulated yet. */
#pragma once
#error "gradcheck cpu backend: cooperative groups (cooperative_groups.h) is not supported yet. Run this kernel with backend='cuda' on a GPU, or build a variant without it (for example with a -D option) for CPU checks."
