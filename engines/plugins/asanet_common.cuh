// Device helpers shared by the plugin kernels (asanet_kernels.cu): type conversion, warp and block reductions,
// the online-softmax merge. Header-only, all inline: each .cu that includes it gets its own copies, so nothing
// here needs relocatable device code.
#pragma once

#include <cuda_fp16.h>

namespace asanet {

constexpr int kWarp = 32;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half(v); }

__device__ __forceinline__ float sigmoidf(float v) { return 1.0f / (1.0f + __expf(-v)); }

// max/min that propagate NaN like torch.amax/amin (fmaxf/fminf return the other operand and drop it).
__device__ __forceinline__ float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }
__device__ __forceinline__ float min_nan(float a, float b) { return (a < b || a != a) ? a : b; }

// One step of an online softmax over values v with running max m and sum s of exp(v - m). A -inf value adds
// nothing (exp(-inf - -inf) would be NaN and poison the row); a NaN value makes the row NaN, as in torch.
__device__ __forceinline__ void softmax_step(float v, float& m, float& s) {
    if (v > m) {
        s = (m == -INFINITY) ? 0.0f : s * __expf(m - v);
        m = v;
    }
    if (v != -INFINITY) s += __expf(v - m);
}

// exp(v - m) / s for a finished row; a row of only -inf (m = -inf) is NaN, as torch.softmax gives.
__device__ __forceinline__ float softmax_prob(float v, float m, float r) {
    return m == -INFINITY ? __int_as_float(0x7fc00000) : __expf(v - m) * r;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = kWarp / 2; offset > 0; offset /= 2) v = max_nan(v, __shfl_down_sync(0xffffffffu, v, offset));
    return v;
}

// Block-wide reduction; the result is valid in thread 0 (callers broadcast it through shared memory).
// blockDim.x is a multiple of 32, at most 1024.
template <bool kMax>
__device__ float block_reduce(float v) {
    __shared__ float partial[kWarp];
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    v = kMax ? warp_max(v) : warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    const int warps = blockDim.x / kWarp;
    v = threadIdx.x < warps ? partial[threadIdx.x] : (kMax ? -INFINITY : 0.0f);
    if (warp == 0) v = kMax ? warp_max(v) : warp_sum(v);
    __syncthreads();  // partial[] may be reused by a second reduction in the same kernel
    return v;
}

// Online-softmax state (max, sum) of one lane, merged across a warp with butterfly shuffles so every lane
// ends with the warp's result. An empty lane (max = -inf) contributes nothing.
__device__ __forceinline__ void warp_softmax_merge(float& m, float& s) {
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
        const float mo = __shfl_xor_sync(0xffffffffu, m, offset);
        const float so = __shfl_xor_sync(0xffffffffu, s, offset);
        const float mn = max_nan(m, mo);
        if (mn != -INFINITY)
            s = (m == -INFINITY ? 0.0f : s * __expf(m - mn)) + (mo == -INFINITY ? 0.0f : so * __expf(mo - mn));
        m = mn;
    }
}

}  // namespace asanet
