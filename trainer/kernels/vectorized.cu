// Vectorised forms of the element-wise kernels (bias + activation, sigmoid gating,
// transposes): each thread moves 8 consecutive elements (16 bytes of bf16) and all
// index arithmetic is 32-bit. The host picks them when every operand is 16-byte aligned,
// rows and columns are multiples of 8, and the element count fits 31 bits; otherwise the
// scalar kernels of elementwise.cu run. Results are bit-identical to the scalar kernels,
// except the float-atomic order of bias gradients.

#define VEC_LOOP(i, n) for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (unsigned)(n); i += gridDim.x * blockDim.x)

// y[r, off + c] = act(y + bias[c]) for 8 columns per thread; act 0 none, 1 relu.
extern "C" __global__ void bias_act_fwd_v8(bf16* y, long off, int ldy, const bf16* bias, int rows, int cols, int act) {
    unsigned c8 = cols / 8;
    VEC_LOOP(i, rows * c8) {
        unsigned r = i / c8, c = (i - r * c8) * 8;
        long k = off + (long)r * ldy + c;
        float v[8], b[8];
        ldv<8>(y, k, v);
        ldv<8>(bias, c, b);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            v[j] += b[j];
            if (act == 1) v[j] = fmaxf(v[j], 0.0f);
        }
        stv<8>(y, k, v);
    }
}

// Column sums of dy (after the relu mask, written back into dy) added into dbias.
// blockDim (32, 8). A warp covers `lpr` lanes x 8 columns of 32 / lpr rows at once;
// grid.x walks column chunks of 8 * lpr, grid.y and threadIdx.y stride over rows.
// Partial sums meet across the warp (shuffles) and the block (shared memory); one
// atomicAdd per column and block.
extern "C" __global__ void bias_act_bwd_v8(const bf16* y, long yoff, int ldy, bf16* dy, long doff, int ldd,
                                           float* dbias, int rows, int cols, int act, int lpr) {
    __shared__ float part[8][256];
    int lane = threadIdx.x, rpw = 32 / lpr, sub = lane / lpr, cg = lane % lpr;
    int c = (blockIdx.x * lpr + cg) * 8;
    float acc[8];
#pragma unroll
    for (int j = 0; j < 8; j++) acc[j] = 0.0f;
    if (c < cols) {
        for (int r = (blockIdx.y * 8 + threadIdx.y) * rpw + sub; r < rows; r += gridDim.y * 8 * rpw) {
            long k = doff + (long)r * ldd + c;
            float g[8];
            ldv<8>(dy, k, g);
            if (act == 1) {
                float yv[8];
                ldv<8>(y, yoff + (long)r * ldy + c, yv);
                bool masked = false;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    if (yv[j] <= 0.0f) { g[j] = 0.0f; masked = true; }
                }
                if (masked) stv<8>(dy, k, g);
            }
#pragma unroll
            for (int j = 0; j < 8; j++) acc[j] += g[j];
        }
    }
    for (int o = lpr; o < 32; o <<= 1) {
#pragma unroll
        for (int j = 0; j < 8; j++) acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], o);
    }
    if (sub == 0) {
#pragma unroll
        for (int j = 0; j < 8; j++) part[threadIdx.y][cg * 8 + j] = acc[j];
    }
    __syncthreads();
    int t = threadIdx.y * 32 + threadIdx.x, col = blockIdx.x * lpr * 8 + t;
    if (t < lpr * 8 && col < cols) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; k++) s += part[k][t];
        atomicAdd(dbias + col, s);
    }
}

// out = a * sigmoid(g) on strided views (row r of a view at off + (r / div) * ld), 8 columns per thread.
extern "C" __global__ void sigmoid_mul_fwd_v8(int rows, int cols,
        const bf16* a, long aoff, long ald, long adiv, const bf16* g, long goff, long gld, long gdiv,
        bf16* o, long ooff, long old_, long odiv) {
    unsigned c8 = cols / 8;
    VEC_LOOP(i, rows * c8) {
        unsigned r = i / c8, c = (i - r * c8) * 8;
        float av[8], gv[8];
        ldv<8>(a, aoff + (long)(r / (unsigned)adiv) * ald + c, av);
        ldv<8>(g, goff + (long)(r / (unsigned)gdiv) * gld + c, gv);
#pragma unroll
        for (int j = 0; j < 8; j++) av[j] *= sigmoidf_(gv[j]);
        stv<8>(o, ooff + (long)(r / (unsigned)odiv) * old_ + c, av);
    }
}

// da = dout * s, dg = dout * a * s * (1 - s), 8 columns per thread.
extern "C" __global__ void sigmoid_mul_bwd_v8(int rows, int cols,
        const bf16* a, long aoff, long ald, long adiv, const bf16* g, long goff, long gld, long gdiv,
        const bf16* d, long doff, long dld, long ddiv, bf16* da, long daoff, long dald, long dadiv,
        bf16* dg, long dgoff, long dgld, long dgdiv) {
    unsigned c8 = cols / 8;
    VEC_LOOP(i, rows * c8) {
        unsigned r = i / c8, c = (i - r * c8) * 8;
        float av[8], gv[8], dv[8];
        ldv<8>(a, aoff + (long)(r / (unsigned)adiv) * ald + c, av);
        ldv<8>(g, goff + (long)(r / (unsigned)gdiv) * gld + c, gv);
        ldv<8>(d, doff + (long)(r / (unsigned)ddiv) * dld + c, dv);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float s = sigmoidf_(gv[j]);
            gv[j] = dv[j] * av[j] * s * (1.0f - s);
            dv[j] *= s;
        }
        stv<8>(da, daoff + (long)(r / (unsigned)dadiv) * dald + c, dv);
        stv<8>(dg, dgoff + (long)(r / (unsigned)dgdiv) * dgld + c, gv);
    }
}

// y[a, c, b, d] (=|+=) x[a, b, c, d], K consecutive d per thread (dk = D / K), 32-bit
// indices (the host checks A*B*C*D < 2^31). K = 1 serves any D.
template <int K, typename Ti, typename To>
__device__ void transpose_vec(const Ti* x, To* y, unsigned A, unsigned B, unsigned C, unsigned D, int acc) {
    unsigned dk = D / K;
    VEC_LOOP(o, A * B * C * dk) {
        unsigned id = o % dk, t = o / dk, ib = t % B;
        t /= B;
        unsigned ic = t % C, ia = t / C;
        unsigned src = ((ia * B + ib) * C + ic) * D + id * K;
        float v[K];
        ldv<K>(x, src, v);
        if (acc) {
            float w[K];
            ldv<K>(y, (long)o * K, w);
#pragma unroll
            for (int j = 0; j < K; j++) v[j] += w[j];
        }
        stv<K>(y, (long)o * K, v);
    }
}
#define TRANSPOSE_VEC(K, name, Ti, To) \
    extern "C" __global__ void transpose_v##K##_##name(const Ti* x, To* y, unsigned A, unsigned B, unsigned C, unsigned D, int acc) { \
        transpose_vec<K, Ti, To>(x, y, A, B, C, D, acc); \
    }
TRANSPOSE_VEC(1, bb, bf16, bf16)
TRANSPOSE_VEC(1, fb, float, bf16)
TRANSPOSE_VEC(1, bf, bf16, float)
TRANSPOSE_VEC(1, ff, float, float)
TRANSPOSE_VEC(8, bb, bf16, bf16)
TRANSPOSE_VEC(8, fb, float, bf16)
TRANSPOSE_VEC(8, bf, bf16, float)
TRANSPOSE_VEC(8, ff, float, float)

// x[r, c] *= scale[r], 8 columns per thread.
extern "C" __global__ void scale_rows_v8(bf16* x, const float* __restrict__ scale, int rows, int cols) {
    unsigned c8 = cols / 8;
    VEC_LOOP(i, rows * c8) {
        unsigned r = i / c8;
        float v[8];
        ldv<8>(x, (long)i * 8, v);
        const float s = scale[r];
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] *= s;
        stv<8>(x, (long)i * 8, v);
    }
}

// D == 1 with even B and C: 64 x 64 tiles through shared memory, two elements per
// access (a warp reads and writes 128 contiguous bytes of bf16 per row); blockDim
// (32, 8), grid (ceil(C/64), ceil(B/64), A).
template <typename Ti, typename To>
__device__ void transpose_tiled64(const Ti* x, To* y, unsigned B, unsigned C, int acc) {
    __shared__ float tile[64][65];
    const unsigned a = blockIdx.z, b0 = blockIdx.y * 64, c0 = blockIdx.x * 64, tx = threadIdx.x;
    const Ti* xs = x + (long)a * B * C;
    To* ys = y + (long)a * B * C;
    for (unsigned k = threadIdx.y; k < 64; k += 8) {
        const unsigned b = b0 + k, c = c0 + 2 * tx;
        if (b < B && c < C) {
            float v[2];
            ldv<2>(xs, (long)b * C + c, v);
            tile[k][2 * tx] = v[0];
            tile[k][2 * tx + 1] = v[1];
        }
    }
    __syncthreads();
    for (unsigned k = threadIdx.y; k < 64; k += 8) {
        const unsigned c = c0 + k, b = b0 + 2 * tx;
        if (b < B && c < C) {
            float v[2] = {tile[2 * tx][k], tile[2 * tx + 1][k]};
            const long o = (long)c * B + b;
            if (acc) {
                float w[2];
                ldv<2>(ys, o, w);
                v[0] += w[0];
                v[1] += w[1];
            }
            stv<2>(ys, o, v);
        }
    }
}
#define TRANSPOSE_TILED64(name, Ti, To) \
    extern "C" __global__ void transpose_tiled64_##name(const Ti* x, To* y, unsigned B, unsigned C, int acc) { \
        transpose_tiled64<Ti, To>(x, y, B, C, acc); \
    }
TRANSPOSE_TILED64(bb, bf16, bf16)
TRANSPOSE_TILED64(fb, float, bf16)
TRANSPOSE_TILED64(bf, bf16, float)
TRANSPOSE_TILED64(ff, float, float)

// Dropout on 8 consecutive elements i .. i+7 of a [d0, d1, c] tensor with c % 8 == 0: they
// share (i0, i1), so their mask indices are base .. base+7 (32-bit; the host checks n < 2^31).
// f[j] = 1 without dropout, else the factor of dropout_factor(i + j, ...).
__device__ __forceinline__ void dropout_factor8(unsigned i, float p, unsigned long long seed, unsigned d1, unsigned c,
                                                int shared, float (&f)[8]) {
    if (p <= 0.0f) {
#pragma unroll
        for (int j = 0; j < 8; j++) f[j] = 1.0f;
        return;
    }
    const unsigned i0 = i / (d1 * c), rest = i - i0 * d1 * c, i1 = rest / c, ic = rest - i1 * c;
    const unsigned base = shared == 0 ? i : (shared == 1 ? i1 * c + ic : i0 * c + ic);
#pragma unroll
    for (int j = 0; j < 8; j++) f[j] = mask_factor((unsigned long long)(base + j), p, seed);
}

// residual_dropout_fwd of elementwise.cu (same arguments, same seed), 8 elements per thread.
extern "C" __global__ void residual_dropout_fwd_v8(const bf16* resid, const bf16* x, bf16* out, long n, float p,
        unsigned long long site, const unsigned long long* step_seed, long d1, long c, int shared) {
    const unsigned long long seed = mask_seed(*step_seed, site);
    VEC_LOOP(o, n / 8) {
        const unsigned i = o * 8;
        float r[8], v[8], f[8];
        ldv<8>(resid, i, r);
        ldv<8>(x, i, v);
        dropout_factor8(i, p, seed, d1, c, shared, f);
#pragma unroll
        for (int j = 0; j < 8; j++) r[j] = r[j] + v[j] * f[j];
        stv<8>(out, i, r);
    }
}

// dropout_bwd of elementwise.cu (same arguments, same seed), 8 elements per thread.
template <typename T>
__device__ void dropout_bwd8(const T* dout, bf16* dx, long n, float p, unsigned long long site,
        const unsigned long long* step_seed, long d1, long c, int shared) {
    const unsigned long long seed = mask_seed(*step_seed, site);
    VEC_LOOP(o, n / 8) {
        const unsigned i = o * 8;
        float v[8], f[8];
        ldv<8>(dout, i, v);
        dropout_factor8(i, p, seed, d1, c, shared, f);
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] *= f[j];
        stv<8>(dx, i, v);
    }
}
extern "C" __global__ void dropout_bwd_v8_b(const bf16* dout, bf16* dx, long n, float p, unsigned long long site,
        const unsigned long long* step_seed, long d1, long c, int shared) {
    dropout_bwd8<bf16>(dout, dx, n, p, site, step_seed, d1, c, shared);
}
extern "C" __global__ void dropout_bwd_v8_f(const float* dout, bf16* dx, long n, float p, unsigned long long site,
        const unsigned long long* step_seed, long d1, long c, int shared) {
    dropout_bwd8<float>(dout, dx, n, p, site, step_seed, d1, c, shared);
}
