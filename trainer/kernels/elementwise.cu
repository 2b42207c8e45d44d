// Element-wise and small reduction kernels: fill, bias + activation, sigmoid gating,
// softmax, residual + dropout, transposes. All loops are grid-stride.

#define GRID_STRIDE(i, n) for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long)gridDim.x * blockDim.x)

extern "C" __global__ void fill_bf16(bf16* p, long n, float v) { GRID_STRIDE(i, n) st(p, i, v); }
extern "C" __global__ void fill_f32(float* p, long n, float v) { GRID_STRIDE(i, n) p[i] = v; }

// x[r, c] *= scale[r] (masks, per-row normalisation).
extern "C" __global__ void scale_rows(bf16* x, const float* __restrict__ scale, int rows, int cols) {
    GRID_STRIDE(i, (long)rows * cols) st(x, i, ld(x, i) * scale[i / cols]);
}

// y[r, off + c] = act(y + bias[c]); act 0 none, 1 relu.
extern "C" __global__ void bias_act_fwd(bf16* y, long off, long ldy, const bf16* bias, int rows, int cols, int act) {
    GRID_STRIDE(i, (long)rows * cols) {
        long r = i / cols, c = i % cols, k = off + r * ldy + c;
        float v = ld(y, k) + ld(bias, c);
        if (act == 1) v = fmaxf(v, 0.0f);
        st(y, k, v);
    }
}

// Column sums of dy (after the relu mask) into dbias; blockDim (32, 8).
extern "C" __global__ void bias_act_bwd(const bf16* y, long yoff, long ldy, bf16* dy, long doff, long ldd,
                                        float* dbias, int rows, int cols, int act) {
    __shared__ float part[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (c < cols) {
        for (long r = (long)blockIdx.y * 8 + threadIdx.y; r < rows; r += (long)gridDim.y * 8) {
            long k = doff + r * ldd + c;
            float g = ld(dy, k);
            if (act == 1 && ld(y, yoff + r * ldy + c) <= 0.0f) { g = 0.0f; st(dy, k, 0.0f); }
            acc += g;
        }
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; k++) s += part[k][threadIdx.x];
        atomicAdd(dbias + c, s);
    }
}

// out = a * sigmoid(g) on strided views (a may broadcast rows by adiv).
extern "C" __global__ void sigmoid_mul_fwd(int rows, int cols,
        const bf16* a, long aoff, long ald, long adiv, const bf16* g, long goff, long gld, long gdiv,
        bf16* o, long ooff, long old_, long odiv) {
    GRID_STRIDE(i, (long)rows * cols) {
        long r = i / cols, c = i % cols;
        float av = ld(a, aoff + (r / adiv) * ald + c);
        float gv = ld(g, goff + (r / gdiv) * gld + c);
        st(o, ooff + (r / odiv) * old_ + c, av * sigmoidf_(gv));
    }
}

// da = dout * s (full rows), dg = dout * a * s * (1 - s).
extern "C" __global__ void sigmoid_mul_bwd(int rows, int cols,
        const bf16* a, long aoff, long ald, long adiv, const bf16* g, long goff, long gld, long gdiv,
        const bf16* d, long doff, long dld, long ddiv, bf16* da, long daoff, long dald, long dadiv,
        bf16* dg, long dgoff, long dgld, long dgdiv) {
    GRID_STRIDE(i, (long)rows * cols) {
        long r = i / cols, c = i % cols;
        float av = ld(a, aoff + (r / adiv) * ald + c);
        float s = sigmoidf_(ld(g, goff + (r / gdiv) * gld + c));
        float dv = ld(d, doff + (r / ddiv) * dld + c);
        st(da, daoff + (r / dadiv) * dald + c, dv * s);
        st(dg, dgoff + (r / dgdiv) * dgld + c, dv * av * s * (1.0f - s));
    }
}

// Softmax over rows of length cols; one warp per row.
extern "C" __global__ void softmax_fwd(const bf16* x, bf16* y, int rows, int cols) {
    long row = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const bf16* xr = x + row * cols;
    float m = -INFINITY;
    for (int c = lane; c < cols; c += 32) m = fmaxf(m, ld(xr, c));
    m = warp_max(m);
    float s = 0.0f;
    for (int c = lane; c < cols; c += 32) s += __expf(ld(xr, c) - m);
    s = warp_sum(s);
    for (int c = lane; c < cols; c += 32) st(y, row * cols + c, __expf(ld(xr, c) - m) / s);
}

extern "C" __global__ void softmax_bwd(const bf16* y, const bf16* dy, bf16* dx, int rows, int cols) {
    long row = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    long base = row * cols;
    float dot = 0.0f;
    for (int c = lane; c < cols; c += 32) dot += ld(y, base + c) * ld(dy, base + c);
    dot = warp_sum(dot);
    for (int c = lane; c < cols; c += 32) st(dx, base + c, ld(y, base + c) * (ld(dy, base + c) - dot));
}

// Dropout masks: `site` is the op's fixed seed (a launch argument, the same in every
// step), `*step_seed` the current step's seed in device memory (written by the host
// before a launch or a graph replay), so a captured graph draws new masks each step.
extern "C" __global__ void residual_dropout_fwd(const bf16* resid, const bf16* x, bf16* out, long n, float p,
        unsigned long long site, const unsigned long long* step_seed, long d1, long c, int shared) {
    unsigned long long seed = mask_seed(*step_seed, site);
    GRID_STRIDE(i, n) st(out, i, ld(resid, i) + ld(x, i) * dropout_factor(i, p, seed, d1, c, shared));
}

// dout in bf16 or f32 (the residual-stream gradients); dx in bf16.
template <typename T>
__device__ void dropout_bwd(const T* dout, bf16* dx, long n, float p, unsigned long long site,
        const unsigned long long* step_seed, long d1, long c, int shared) {
    unsigned long long seed = mask_seed(*step_seed, site);
    GRID_STRIDE(i, n) st(dx, i, ld(dout, i) * dropout_factor(i, p, seed, d1, c, shared));
}
extern "C" __global__ void dropout_bwd_b(const bf16* dout, bf16* dx, long n, float p, unsigned long long site,
        const unsigned long long* step_seed, long d1, long c, int shared) {
    dropout_bwd<bf16>(dout, dx, n, p, site, step_seed, d1, c, shared);
}
extern "C" __global__ void dropout_bwd_f(const float* dout, bf16* dx, long n, float p, unsigned long long site,
        const unsigned long long* step_seed, long d1, long c, int shared) {
    dropout_bwd<float>(dout, dx, n, p, site, step_seed, d1, c, shared);
}

// y[a, c, b, d] (=|+=) x[a, b, c, d]; the general form, coalesced along d.
template <typename Ti, typename To>
__device__ void transpose_general(const Ti* x, To* y, long A, long B, long C, long D, int acc) {
    GRID_STRIDE(o, A * B * C * D) {
        long id = o % D, t = o / D, ib = t % B; t /= B;
        long ic = t % C, ia = t / C;
        long src = ((ia * B + ib) * C + ic) * D + id;
        float v = ld(x, src);
        if (acc) v += ld(y, o);
        st(y, o, v);
    }
}
// D == 1: 32x32 tiles through shared memory; blockDim (32, 8), grid (ceil(C/32), ceil(B/32), A).
template <typename Ti, typename To>
__device__ void transpose_tiled(const Ti* x, To* y, long B, long C, int acc) {
    __shared__ float tile[32][33];
    long a = blockIdx.z, b0 = (long)blockIdx.y * 32, c0 = (long)blockIdx.x * 32;
    const Ti* xs = x + a * B * C;
    To* ys = y + a * B * C;
    for (int k = threadIdx.y; k < 32; k += 8) {
        long b = b0 + k, c = c0 + threadIdx.x;
        if (b < B && c < C) tile[k][threadIdx.x] = ld(xs, b * C + c);
    }
    __syncthreads();
    for (int k = threadIdx.y; k < 32; k += 8) {
        long c = c0 + k, b = b0 + threadIdx.x;
        if (b < B && c < C) {
            float v = tile[threadIdx.x][k];
            if (acc) v += ld(ys, c * B + b);
            st(ys, c * B + b, v);
        }
    }
}
#define TRANSPOSE(name, Ti, To) \
    extern "C" __global__ void transpose_##name(const Ti* x, To* y, long A, long B, long C, long D, int acc) { transpose_general<Ti, To>(x, y, A, B, C, D, acc); } \
    extern "C" __global__ void transpose_tiled_##name(const Ti* x, To* y, long B, long C, int acc) { transpose_tiled<Ti, To>(x, y, B, C, acc); }
TRANSPOSE(bb, bf16, bf16)
TRANSPOSE(fb, float, bf16)
TRANSPOSE(bf, bf16, float)
TRANSPOSE(ff, float, float)
