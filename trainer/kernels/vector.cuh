// Vectorised loads and stores for the memory-bound kernels.
// ldv<K>/stv<K> move K consecutive elements (K = 1, 2, 4 or 8) at p + i as f32 values:
// one 2-, 4-, 8- or 16-byte access for bf16, up to two 16-byte accesses for f32. The
// caller guarantees alignment (p + i on a 2K-byte boundary for bf16, 4K for f32, at most
// 16). bf16 -> f32 is exact and f32 -> bf16 rounds to nearest even, exactly as ld()/st(),
// so a vectorised kernel gives the same bits as its scalar form.
__device__ __forceinline__ void unpack_bf16x2(unsigned w, float& lo, float& hi) {
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16(lo)) |
           ((unsigned)__bfloat16_as_ushort(__float2bfloat16(hi)) << 16);
}
template <int K> __device__ __forceinline__ void ldv(const bf16* p, long i, float* v) {
    static_assert(K == 1 || K == 2 || K == 4 || K == 8, "1, 2, 4 or 8 elements");
    if constexpr (K == 1) {
        v[0] = ld(p, i);
    } else if constexpr (K == 2) {
        unpack_bf16x2(*reinterpret_cast<const unsigned*>(p + i), v[0], v[1]);
    } else if constexpr (K == 4) {
        uint2 u = *reinterpret_cast<const uint2*>(p + i);
        unpack_bf16x2(u.x, v[0], v[1]);
        unpack_bf16x2(u.y, v[2], v[3]);
    } else {
        uint4 u = *reinterpret_cast<const uint4*>(p + i);
        unpack_bf16x2(u.x, v[0], v[1]);
        unpack_bf16x2(u.y, v[2], v[3]);
        unpack_bf16x2(u.z, v[4], v[5]);
        unpack_bf16x2(u.w, v[6], v[7]);
    }
}
template <int K> __device__ __forceinline__ void ldv(const float* p, long i, float* v) {
    static_assert(K == 1 || K == 2 || K == 4 || K == 8, "1, 2, 4 or 8 elements");
    if constexpr (K == 1) {
        v[0] = p[i];
    } else if constexpr (K == 2) {
        float2 a = *reinterpret_cast<const float2*>(p + i);
        v[0] = a.x; v[1] = a.y;
    } else {
#pragma unroll
        for (int k = 0; k < K; k += 4) {
            float4 a = *reinterpret_cast<const float4*>(p + i + k);
            v[k] = a.x; v[k + 1] = a.y; v[k + 2] = a.z; v[k + 3] = a.w;
        }
    }
}
template <int K> __device__ __forceinline__ void stv(bf16* p, long i, const float* v) {
    static_assert(K == 1 || K == 2 || K == 4 || K == 8, "1, 2, 4 or 8 elements");
    if constexpr (K == 1) {
        st(p, i, v[0]);
    } else if constexpr (K == 2) {
        *reinterpret_cast<unsigned*>(p + i) = pack_bf16x2(v[0], v[1]);
    } else if constexpr (K == 4) {
        *reinterpret_cast<uint2*>(p + i) = make_uint2(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]));
    } else {
        *reinterpret_cast<uint4*>(p + i) = make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]),
                                                      pack_bf16x2(v[4], v[5]), pack_bf16x2(v[6], v[7]));
    }
}
template <int K> __device__ __forceinline__ void stv(float* p, long i, const float* v) {
    static_assert(K == 1 || K == 2 || K == 4 || K == 8, "1, 2, 4 or 8 elements");
    if constexpr (K == 1) {
        p[i] = v[0];
    } else if constexpr (K == 2) {
        *reinterpret_cast<float2*>(p + i) = make_float2(v[0], v[1]);
    } else {
#pragma unroll
        for (int k = 0; k < K; k += 4) *reinterpret_cast<float4*>(p + i + k) = make_float4(v[k], v[k + 1], v[k + 2], v[k + 3]);
    }
}
