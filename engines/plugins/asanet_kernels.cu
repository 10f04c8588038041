// Fused CUDA kernels for ASANet's fusion ops (contract: docs/design.md, "Plugin ops").
//
// NCHW tensors, float or half I/O, float accumulation. Every kernel is extern "C" with a _f32 / _f16 suffix so
// that TensorRT's AOT plugin path, CuPy and cuda-python can load it by name from the fatbin or the PTX.
// Launch geometry lives in launch.py (one source of truth for every host-side caller).
#include "asanet_common.cuh"

namespace {

using namespace asanet;

// ---- GRN ------------------------------------------------------------------------------------------------------
// g[n, c] = sqrt(sum_hw x^2): one block per (n, c).
template <typename T>
__device__ void grn_norm(const T* __restrict__ x, float* __restrict__ g, long long hw) {
    const long long plane = blockIdx.x;
    const T* p = x + plane * hw;
    float acc = 0.0f;
    for (long long i = threadIdx.x; i < hw; i += blockDim.x) {
        const float v = to_float(p[i]);
        acc = fmaf(v, v, acc);
    }
    acc = block_reduce<false>(acc);
    if (threadIdx.x == 0) g[plane] = sqrtf(acc);
}

// scale[n, c] = g[n, c] / (mean_c g[n, :] + eps): one block per n.
__device__ void grn_scale(const float* __restrict__ g, float* __restrict__ scale, int channels, float eps) {
    const float* row = g + static_cast<long long>(blockIdx.x) * channels;
    float acc = 0.0f;
    for (int c = threadIdx.x; c < channels; c += blockDim.x) acc += row[c];
    __shared__ float mean;
    acc = block_reduce<false>(acc);
    if (threadIdx.x == 0) mean = acc / channels;
    __syncthreads();
    const float denom = mean + eps;
    for (int c = threadIdx.x; c < channels; c += blockDim.x)
        scale[static_cast<long long>(blockIdx.x) * channels + c] = row[c] / denom;
}

// y = x + gamma * (x * scale) + beta: grid-stride over all elements.
template <typename T>
__device__ void grn_apply(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                          const float* __restrict__ scale, T* __restrict__ y, int channels, long long hw,
                          long long total) {
    for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long plane = i / hw;
        const int c = static_cast<int>(plane % channels);
        const float v = to_float(x[i]);
        y[i] = from_float<T>(v + to_float(gamma[c]) * (v * scale[plane]) + to_float(beta[c]));
    }
}

// ---- SFM ------------------------------------------------------------------------------------------------------
// One pass over d = x1 - x2 per (n, c) plane: p = max d, q = max(-d) = -min d.
template <typename T>
__device__ void sfm_pool(const T* __restrict__ x1, const T* __restrict__ x2, float* __restrict__ pq,
                         long long hw, long long planes) {
    const long long plane = blockIdx.x;
    const T* a = x1 + plane * hw;
    const T* b = x2 + plane * hw;
    float hi = -INFINITY, lo = INFINITY;
    for (long long i = threadIdx.x; i < hw; i += blockDim.x) {
        const float d = to_float(a[i]) - to_float(b[i]);
        hi = max_nan(hi, d);  // a NaN pixel makes the pooled value NaN, as torch's max pooling does
        lo = min_nan(lo, d);
    }
    hi = block_reduce<true>(hi);
    lo = -block_reduce<true>(-lo);
    if (threadIdx.x == 0) {
        pq[plane] = hi;            // first half: the pooled vector of x1 - x2
        pq[planes + plane] = -lo;  // second half: the pooled vector of x2 - x1
    }
}

// gate = 1 + sigmoid(w2 @ gelu(w1 @ v + b1) + b2) for each pooled vector v: block (n, which), shared MLP.
// Dynamic shared memory: (channels + hidden) floats.
template <typename T>
__device__ void sfm_mlp(const float* __restrict__ pq, const T* __restrict__ w1, const T* __restrict__ b1,
                        const T* __restrict__ w2, const T* __restrict__ b2, float* __restrict__ gates, int channels,
                        int hidden, long long planes) {
    extern __shared__ float smem[];
    float* v = smem;
    float* h = smem + channels;
    const long long base = blockIdx.y * planes + static_cast<long long>(blockIdx.x) * channels;
    for (int c = threadIdx.x; c < channels; c += blockDim.x) v[c] = pq[base + c];
    __syncthreads();
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
    for (int m = warp; m < hidden; m += warps) {  // one warp per hidden unit: coalesced rows of w1
        float acc = 0.0f;
        for (int c = lane; c < channels; c += kWarp) acc = fmaf(to_float(w1[static_cast<long long>(m) * channels + c]),
                                                                 v[c], acc);
        acc = warp_sum(acc);
        if (lane == 0) {
            acc += to_float(b1[m]);
            h[m] = 0.5f * acc * (1.0f + erff(acc * 0.70710678118654752f));  // exact GELU, as nn.GELU()
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < channels; c += blockDim.x) {
        float acc = to_float(b2[c]);
        for (int m = 0; m < hidden; ++m) acc = fmaf(to_float(w2[static_cast<long long>(c) * hidden + m]), h[m], acc);
        gates[base + c] = 1.0f + sigmoidf(acc);
    }
}

// y1 = x1 * gate1, y2 = x2 * gate2.
template <typename T>
__device__ void sfm_apply(const T* __restrict__ x1, const T* __restrict__ x2, const float* __restrict__ gates,
                          T* __restrict__ y1, T* __restrict__ y2, long long hw, long long total) {
    const long long planes = total / hw;
    for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long plane = i / hw;
        y1[i] = from_float<T>(to_float(x1[i]) * gates[plane]);
        y2[i] = from_float<T>(to_float(x2[i]) * gates[planes + plane]);
    }
}

// ---- CFM ------------------------------------------------------------------------------------------------------
// w[:, :C] = x1 * sigmoid(s[:, :C]), w[:, C:] = x2 * sigmoid(s[:, C:]); total = N * 2C * HW output elements.
template <typename T>
__device__ void cfm_gate(const T* __restrict__ x1, const T* __restrict__ x2, const T* __restrict__ s,
                         T* __restrict__ w, int channels, long long hw, long long total) {
    for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long plane = i / hw;  // over (n, 2C)
        const long long n = plane / (2 * channels);
        const int c2 = static_cast<int>(plane % (2 * channels));
        const long long pixel = i % hw;
        const T* src = c2 < channels ? x1 : x2;
        const long long src_index = (n * channels + (c2 % channels)) * hw + pixel;
        w[i] = from_float<T>(to_float(src[src_index]) * sigmoidf(to_float(s[plane])));
    }
}

// y = w1 * softmax_c(a1) + w2 * softmax_c(a2), one thread per (n, pixel): channel loops are strided by HW, and
// neighbouring threads read neighbouring pixels, so every load is coalesced. Online softmax: one pass for the
// running max and sum, one pass to write.
template <typename T>
__device__ void cfm_fuse(const T* __restrict__ w, const T* __restrict__ a, T* __restrict__ y, int channels,
                         long long hw, long long pixels) {
    for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < pixels;
         i += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long n = i / hw, pixel = i % hw;
        const long long in_base = n * 2 * channels * hw + pixel;
        float m1 = -INFINITY, m2 = -INFINITY, s1 = 0.0f, s2 = 0.0f;
        for (int c = 0; c < channels; ++c) {
            const float v1 = to_float(a[in_base + c * hw]);
            const float v2 = to_float(a[in_base + (channels + c) * hw]);
            softmax_step(v1, m1, s1);
            softmax_step(v2, m2, s2);
        }
        const float r1 = 1.0f / s1, r2 = 1.0f / s2;
        const long long out_base = n * channels * hw + pixel;
        for (int c = 0; c < channels; ++c) {
            const long long k1 = in_base + c * hw, k2 = in_base + (channels + c) * hw;
            const float p1 = softmax_prob(to_float(a[k1]), m1, r1);
            const float p2 = softmax_prob(to_float(a[k2]), m2, r2);
            y[out_base + c * hw] = from_float<T>(to_float(w[k1]) * p1 + to_float(w[k2]) * p2);
        }
    }
}


// cfm_fuse for small maps with many channels (deep stages): one warp per pixel, lanes split the channels, so a
// 8x8 map with 768 channels still keeps thousands of threads busy.
template <typename T>
__device__ void cfm_fuse_warp(const T* __restrict__ w, const T* __restrict__ a, T* __restrict__ y, int channels,
                              long long hw, long long pixels) {
    const int lane = threadIdx.x % kWarp;
    const long long warps = static_cast<long long>(gridDim.x) * blockDim.x / kWarp;
    for (long long i = (blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x) / kWarp; i < pixels;
         i += warps) {
        const long long n = i / hw, pixel = i % hw;
        const long long in_base = n * 2 * channels * hw + pixel;
        float m1 = -INFINITY, m2 = -INFINITY, s1 = 0.0f, s2 = 0.0f;
        for (int c = lane; c < channels; c += kWarp) {
            const float v1 = to_float(a[in_base + c * hw]);
            const float v2 = to_float(a[in_base + (channels + c) * hw]);
            softmax_step(v1, m1, s1);
            softmax_step(v2, m2, s2);
        }
        warp_softmax_merge(m1, s1);
        warp_softmax_merge(m2, s2);
        const float r1 = 1.0f / s1, r2 = 1.0f / s2;
        const long long out_base = n * channels * hw + pixel;
        for (int c = lane; c < channels; c += kWarp) {
            const long long k1 = in_base + c * hw, k2 = in_base + (channels + c) * hw;
            const float p1 = softmax_prob(to_float(a[k1]), m1, r1);
            const float p2 = softmax_prob(to_float(a[k2]), m2, r2);
            y[out_base + c * hw] = from_float<T>(to_float(w[k1]) * p1 + to_float(w[k2]) * p2);
        }
    }
}

}  // namespace

// ---- entry points ---------------------------------------------------------------------------------------------
#define ASANET_ENTRY_POINTS(SUFFIX, T)                                                                              \
    extern "C" __global__ void grn_norm_##SUFFIX(const T* x, float* g, long long hw) { grn_norm<T>(x, g, hw); }    \
    extern "C" __global__ void grn_apply_##SUFFIX(const T* x, const T* gamma, const T* beta, const float* scale,   \
                                                  T* y, int channels, long long hw, long long total) {            \
        grn_apply<T>(x, gamma, beta, scale, y, channels, hw, total);                                               \
    }                                                                                                              \
    extern "C" __global__ void sfm_pool_##SUFFIX(const T* x1, const T* x2, float* pq, long long hw,                \
                                                 long long planes) {                                              \
        sfm_pool<T>(x1, x2, pq, hw, planes);                                                                       \
    }                                                                                                              \
    extern "C" __global__ void sfm_mlp_##SUFFIX(const float* pq, const T* w1, const T* b1, const T* w2,            \
                                                const T* b2, float* gates, int channels, int hidden,              \
                                                long long planes) {                                               \
        sfm_mlp<T>(pq, w1, b1, w2, b2, gates, channels, hidden, planes);                                           \
    }                                                                                                              \
    extern "C" __global__ void sfm_apply_##SUFFIX(const T* x1, const T* x2, const float* gates, T* y1, T* y2,      \
                                                  long long hw, long long total) {                                \
        sfm_apply<T>(x1, x2, gates, y1, y2, hw, total);                                                            \
    }                                                                                                              \
    extern "C" __global__ void cfm_gate_##SUFFIX(const T* x1, const T* x2, const T* s, T* w, int channels,         \
                                                 long long hw, long long total) {                                 \
        cfm_gate<T>(x1, x2, s, w, channels, hw, total);                                                            \
    }                                                                                                              \
    extern "C" __global__ void cfm_fuse_##SUFFIX(const T* w, const T* a, T* y, int channels, long long hw,         \
                                                 long long pixels) {                                              \
        cfm_fuse<T>(w, a, y, channels, hw, pixels);                                                                \
    }                                                                                                              \
    extern "C" __global__ void cfm_fuse_warp_##SUFFIX(const T* w, const T* a, T* y, int channels, long long hw,    \
                                                      long long pixels) {                                         \
        cfm_fuse_warp<T>(w, a, y, channels, hw, pixels);                                                           \
    }

ASANET_ENTRY_POINTS(f32, float)
ASANET_ENTRY_POINTS(f16, __half)

extern "C" __global__ void grn_scale_f32(const float* g, float* scale, int channels, float eps) {
    grn_scale(g, scale, channels, eps);
}

// TensorRT AOT plugins (tensorrt.plugin.aot_impl) call a kernel as (inputs..., int32 scalars..., outputs...):
// tensorrt.plugin passes only SymInt32 extra arguments, so they take the four dimensions (each far below 2^31)
// and form the sizes in 64 bits here; H*W or N*C*H*W past 2^31 cannot wrap.
#define ASANET_AOT_ENTRY_POINTS(SUFFIX, T)                                                                          \
    extern "C" __global__ void cfm_gate_aot_##SUFFIX(const T* x1, const T* x2, const T* s, int n, int channels,    \
                                                     int h, int w, T* out) {                                      \
        const long long hw = static_cast<long long>(h) * w;                                                        \
        cfm_gate<T>(x1, x2, s, out, channels, hw, static_cast<long long>(n) * 2 * channels * hw);                 \
    }                                                                                                              \
    extern "C" __global__ void cfm_fuse_aot_##SUFFIX(const T* wt, const T* a, int n, int channels, int h, int w,  \
                                                     T* y) {                                                      \
        const long long hw = static_cast<long long>(h) * w;                                                        \
        cfm_fuse<T>(wt, a, y, channels, hw, static_cast<long long>(n) * hw);                                       \
    }

ASANET_AOT_ENTRY_POINTS(f32, float)
ASANET_AOT_ENTRY_POINTS(f16, __half)
