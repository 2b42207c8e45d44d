// LayerNorm over rows of at most 256 columns: one warp per row, values kept in
// registers between the passes. The backward accumulates dgamma/dbeta per lane over
// a grid-stride loop of rows and adds them once per warp.
#define LN_MAXK 8

extern "C" __global__ void layer_norm_fwd(const bf16* x, const bf16* gamma, const bf16* beta, bf16* y,
                                          float* mean, float* rstd, int rows, int cols) {
    long row = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const bf16* xr = x + row * cols;
    float v[LN_MAXK];
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < LN_MAXK; k++) {
        int c = lane + 32 * k;
        v[k] = c < cols ? ld(xr, c) : 0.0f;
        s += v[k];
    }
    float mu = warp_sum(s) / cols;
    float var = 0.0f;
#pragma unroll
    for (int k = 0; k < LN_MAXK; k++) {
        int c = lane + 32 * k;
        if (c < cols) { float d = v[k] - mu; var += d * d; }
    }
    float rs = rsqrtf(warp_sum(var) / cols + 1e-5f);
#pragma unroll
    for (int k = 0; k < LN_MAXK; k++) {
        int c = lane + 32 * k;
        if (c < cols) st(y, row * cols + c, (v[k] - mu) * rs * ld(gamma, c) + ld(beta, c));
    }
    if (lane == 0) { mean[row] = mu; rstd[row] = rs; }
}

template <typename DX>
__device__ void layer_norm_bwd(const bf16* x, const bf16* gamma, const float* mean, const float* rstd,
                               const bf16* dy, DX* dx, int acc, float* dgamma, float* dbeta, int rows, int cols) {
    int lane = threadIdx.x % 32;
    long warp = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    long nwarps = (long)gridDim.x * blockDim.x / 32;
    float dg[LN_MAXK], db[LN_MAXK], g[LN_MAXK];
#pragma unroll
    for (int k = 0; k < LN_MAXK; k++) {
        int c = lane + 32 * k;
        dg[k] = 0.0f; db[k] = 0.0f;
        g[k] = c < cols ? ld(gamma, c) : 0.0f;
    }
    for (long row = warp; row < rows; row += nwarps) {
        float mu = mean[row], rs = rstd[row];
        float xh[LN_MAXK], d[LN_MAXK];
        float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
        for (int k = 0; k < LN_MAXK; k++) {
            int c = lane + 32 * k;
            if (c < cols) {
                xh[k] = (ld(x, row * cols + c) - mu) * rs;
                d[k] = ld(dy, row * cols + c);
                float gd = g[k] * d[k];
                s1 += gd; s2 += gd * xh[k];
                dg[k] += d[k] * xh[k]; db[k] += d[k];
            }
        }
        s1 = warp_sum(s1) / cols; s2 = warp_sum(s2) / cols;
#pragma unroll
        for (int k = 0; k < LN_MAXK; k++) {
            int c = lane + 32 * k;
            if (c < cols) {
                float v = rs * (g[k] * d[k] - s1 - xh[k] * s2);
                long i = row * cols + c;
                if (acc) v += ld(dx, i);
                st(dx, i, v);
            }
        }
    }
    // Reduce dgamma/dbeta over the block's warps in shared memory first: one
    // atomic per column and block instead of one per column and warp.
    __shared__ float red_g[LN_MAXK * 32];
    __shared__ float red_b[LN_MAXK * 32];
    for (int e = threadIdx.x; e < LN_MAXK * 32; e += blockDim.x) { red_g[e] = 0.0f; red_b[e] = 0.0f; }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < LN_MAXK; k++) {
        int c = lane + 32 * k;
        if (c < cols) { atomicAdd(red_g + c, dg[k]); atomicAdd(red_b + c, db[k]); }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < cols; c += blockDim.x) { atomicAdd(dgamma + c, red_g[c]); atomicAdd(dbeta + c, red_b[c]); }
}

// dx in bf16 (activation gradients) or f32 (the residual-stream gradients).
extern "C" __global__ void layer_norm_bwd_b(const bf16* x, const bf16* gamma, const float* mean, const float* rstd,
        const bf16* dy, bf16* dx, int acc, float* dgamma, float* dbeta, int rows, int cols) {
    layer_norm_bwd<bf16>(x, gamma, mean, rstd, dy, dx, acc, dgamma, dbeta, rows, cols);
}
extern "C" __global__ void layer_norm_bwd_f(const bf16* x, const bf16* gamma, const float* mean, const float* rstd,
        const bf16* dy, float* dx, int acc, float* dgamma, float* dbeta, int rows, int cols) {
    layer_norm_bwd<float>(x, gamma, mean, rstd, dy, dx, acc, dgamma, dbeta, rows, cols);
}

// Rows of exactly 32*K columns (K = 2, 4, 8: 64, 128, 256 columns): lane l owns the K
// consecutive columns l*K .. l*K+K-1 and moves them with one vector access (16 bytes of
// bf16 for K = 8). Same arithmetic as the kernels above, only the column-to-lane map differs.
template <int K>
__device__ void layer_norm_fwd_k(const bf16* x, const bf16* gamma, const bf16* beta, bf16* y,
                                 float* mean, float* rstd, int rows) {
    const int cols = 32 * K;
    long row = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    float v[K], g[K], b[K];
    ldv<K>(x, row * cols + lane * K, v);
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < K; k++) s += v[k];
    float mu = warp_sum(s) / cols;
    float var = 0.0f;
#pragma unroll
    for (int k = 0; k < K; k++) { float d = v[k] - mu; var += d * d; }
    float rs = rsqrtf(warp_sum(var) / cols + 1e-5f);
    ldv<K>(gamma, lane * K, g);
    ldv<K>(beta, lane * K, b);
#pragma unroll
    for (int k = 0; k < K; k++) v[k] = (v[k] - mu) * rs * g[k] + b[k];
    stv<K>(y, row * cols + lane * K, v);
    if (lane == 0) { mean[row] = mu; rstd[row] = rs; }
}

template <int K, typename DX>
__device__ void layer_norm_bwd_k(const bf16* x, const bf16* gamma, const float* mean, const float* rstd,
                                 const bf16* dy, DX* dx, int acc, float* dgamma, float* dbeta, int rows) {
    const int cols = 32 * K;
    int lane = threadIdx.x % 32;
    long warp = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    long nwarps = (long)gridDim.x * blockDim.x / 32;
    float dg[K], db[K], g[K];
    ldv<K>(gamma, lane * K, g);
#pragma unroll
    for (int k = 0; k < K; k++) { dg[k] = 0.0f; db[k] = 0.0f; }
    for (long row = warp; row < rows; row += nwarps) {
        float mu = mean[row], rs = rstd[row];
        long base = row * cols + lane * K;
        float xh[K], d[K];
        ldv<K>(x, base, xh);
        ldv<K>(dy, base, d);
        float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
        for (int k = 0; k < K; k++) {
            xh[k] = (xh[k] - mu) * rs;
            float gd = g[k] * d[k];
            s1 += gd; s2 += gd * xh[k];
            dg[k] += d[k] * xh[k]; db[k] += d[k];
        }
        s1 = warp_sum(s1) / cols; s2 = warp_sum(s2) / cols;
        float out[K];
#pragma unroll
        for (int k = 0; k < K; k++) out[k] = rs * (g[k] * d[k] - s1 - xh[k] * s2);
        if (acc) {
            float prev[K];
            ldv<K>(dx, base, prev);
#pragma unroll
            for (int k = 0; k < K; k++) out[k] += prev[k];
        }
        stv<K>(dx, base, out);
    }
    __shared__ float red_g[32 * K];
    __shared__ float red_b[32 * K];
    for (int e = threadIdx.x; e < cols; e += blockDim.x) { red_g[e] = 0.0f; red_b[e] = 0.0f; }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < K; k++) { atomicAdd(red_g + lane * K + k, dg[k]); atomicAdd(red_b + lane * K + k, db[k]); }
    __syncthreads();
    for (int c = threadIdx.x; c < cols; c += blockDim.x) { atomicAdd(dgamma + c, red_g[c]); atomicAdd(dbeta + c, red_b[c]); }
}

#define LAYER_NORM_K(K) \
    extern "C" __global__ void layer_norm_fwd_k##K(const bf16* x, const bf16* gamma, const bf16* beta, bf16* y, \
            float* mean, float* rstd, int rows) { layer_norm_fwd_k<K>(x, gamma, beta, y, mean, rstd, rows); } \
    extern "C" __global__ void layer_norm_bwd_b_k##K(const bf16* x, const bf16* gamma, const float* mean, const float* rstd, \
            const bf16* dy, bf16* dx, int acc, float* dgamma, float* dbeta, int rows) { \
        layer_norm_bwd_k<K, bf16>(x, gamma, mean, rstd, dy, dx, acc, dgamma, dbeta, rows); } \
    extern "C" __global__ void layer_norm_bwd_f_k##K(const bf16* x, const bf16* gamma, const float* mean, const float* rstd, \
            const bf16* dy, float* dx, int acc, float* dgamma, float* dbeta, int rows) { \
        layer_norm_bwd_k<K, float>(x, gamma, mean, rstd, dy, dx, acc, dgamma, dbeta, rows); }
LAYER_NORM_K(2)
LAYER_NORM_K(4)
LAYER_NORM_K(8)
