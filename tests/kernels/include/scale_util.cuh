// A user header, found through include_dirs; SCALE comes from a -D option.
#pragma once
#ifndef SCALE
#define SCALE 1
#endif
__device__ __forceinline__ float scaled(float v) { return v * SCALE; }
