// Shared helpers for the trainer's kernels: bf16 conversion, warp reductions,
// and the dropout hash (identical to backend::mix64 / dropout_keep in Rust).
#include <cuda_bf16.h>
typedef __nv_bfloat16 bf16;
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

__device__ __forceinline__ float ld(const bf16* p, long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float ld(const float* p, long i) { return p[i]; }
__device__ __forceinline__ void st(bf16* p, long i, float v) { p[i] = __float2bfloat16(v); }
__device__ __forceinline__ void st(float* p, long i, float v) { p[i] = v; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + __expf(-x)); }

__device__ __forceinline__ unsigned long long mix64(unsigned long long x) {
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
// The seed of one op's mask in one step: the step's seed mixed with the op's site seed
// (the host's `backend::mask_seed`).
__device__ __forceinline__ unsigned long long mask_seed(unsigned long long step, unsigned long long site) {
    return mix64(step ^ mix64(site + 0xD1B54A32D192ED03ull));
}
// Factor of mask element idx for p > 0: 0 or 1/(1-p) (the host's `dropout_keep`).
__device__ __forceinline__ float mask_factor(unsigned long long idx, float p, unsigned long long seed) {
    unsigned long long h = mix64(seed ^ mix64(idx + 0x9E3779B97F4A7C15ull));
    float u = (float)(h >> 40) * (1.0f / 16777216.0f);
    return u >= p ? 1.0f / (1.0f - p) : 0.0f;
}
// Factor of element i of a [d0, d1, c] tensor: 0 or 1/(1-p). shared: 0 none, 1 axis0, 2 axis1.
__device__ __forceinline__ float dropout_factor(long i, float p, unsigned long long seed, long d1, long c, int shared) {
    if (p <= 0.0f) return 1.0f;
    long i0 = i / (d1 * c), rest = i % (d1 * c), i1 = rest / c, ic = rest % c;
    long idx = shared == 0 ? i : (shared == 1 ? i1 * c + ic : i0 * c + ic);
    return mask_factor((unsigned long long)idx, p, seed);
}
