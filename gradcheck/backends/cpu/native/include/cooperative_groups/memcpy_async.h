/* gradcheck cpu backend: cooperative_groups::memcpy_async is not emulated. */
#pragma once
#error "gradcheck cpu backend: cooperative_groups::memcpy_async / cg::wait (cooperative_groups/memcpy_async.h) is not supported by the gradcheck cpu backend. Run this kernel with backend='cuda' on a GPU, or build a variant that copies with plain loads and stores (for example with a -D option) for CPU checks."
