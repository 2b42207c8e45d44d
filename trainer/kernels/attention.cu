// Fused gated attention with an additive bias shared over the batch.
// Layout: qkvg [B, L, 4, H, D] (q | k | v | g per position), bias [H, L, L],
// attn/out [B, L, H, D], lse [B, H, L] (f32). Online softmax: the L x L logits
// never reach device memory. An optional key mask [B, L] (f32, 0 = masked)
// drops keys from the softmax; a query with every key masked gets zeros and lse 0. One thread per query (forward, dq) or key (dk, dv);
// key/value or query tiles are staged in shared memory as f32.

#define FWD_Q 64
#define FWD_K 64

template <int D>
__device__ void attn_fwd(const bf16* __restrict__ qkvg, const bf16* __restrict__ bias, const float* __restrict__ mask, bf16* attn, bf16* out,
                         float* lse, int L, int H, float scale) {
    __shared__ float ks[FWD_K][D];
    __shared__ float vs[FWD_K][D];
    __shared__ float bs[FWD_Q][FWD_K + 1];
    const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * FWD_Q, i = i0 + threadIdx.x;
    const long W = (long)H * D, RW = 4 * W;
    const bf16* base = qkvg + (long)b * L * RW;
    const bool active = i < L;
    float q[D], o[D];
    float m = -INFINITY, l = 0.0f;
#pragma unroll
    for (int c = 0; c < D; c++) { q[c] = active ? ld(base, i * RW + h * D + c) * scale : 0.0f; o[c] = 0.0f; }
    for (int j0 = 0; j0 < L; j0 += FWD_K) {
        __syncthreads();
        for (int e = threadIdx.x; e < FWD_K * D; e += FWD_Q) {
            int jj = e / D, c = e % D, j = j0 + jj;
            ks[jj][c] = j < L ? ld(base, j * RW + W + h * D + c) : 0.0f;
            vs[jj][c] = j < L ? ld(base, j * RW + 2 * W + h * D + c) : 0.0f;
        }
        if (bias) {
            // Row-contiguous loads: consecutive threads read consecutive keys of one query row.
            for (int e = threadIdx.x; e < FWD_Q * FWD_K; e += FWD_Q) {
                int qi = e / FWD_K, jj = e % FWD_K, ii = i0 + qi, j = j0 + jj;
                bs[qi][jj] = (ii < L && j < L) ? ld(bias, ((long)h * L + ii) * L + j) : 0.0f;
            }
        }
        __syncthreads();
        if (active) {
            int jn = min(FWD_K, L - j0);
            for (int jj = 0; jj < jn; jj++) {
                if (mask && mask[(long)b * L + j0 + jj] == 0.0f) continue;
                float p4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int c = 0; c < D; c++) p4[c % 4] += q[c] * ks[jj][c];
                float s = (p4[0] + p4[1]) + (p4[2] + p4[3]);
                if (bias) s += bs[threadIdx.x][jj];
                if (s > m) {
                    float corr = __expf(m - s);
                    l *= corr;
#pragma unroll
                    for (int c = 0; c < D; c++) o[c] *= corr;
                    m = s;
                }
                float p = __expf(s - m);
                l += p;
#pragma unroll
                for (int c = 0; c < D; c++) o[c] += p * vs[jj][c];
            }
        }
    }
    if (!active) return;
    const long orow = ((long)b * L + i) * W + h * D;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int c = 0; c < D; c++) {
        float a = o[c] * inv;
        st(attn, orow + c, a);
        st(out, orow + c, a * sigmoidf_(ld(base, i * RW + 3 * W + h * D + c)));
    }
    lse[((long)b * H + h) * L + i] = l > 0.0f ? m + __logf(l) : 0.0f;
}

// dq, dg, and the bias gradient. A block holds 32 queries and BWD_W warps; each
// warp takes its own batch entries (BWD_G per block in all), staging its own
// key/value tiles (bf16) in shared memory. The bias gradient is summed over the
// block's batches in shared memory (shared atomics) and added to global memory
// once per element and block. Requires L <= 256 when bias is given.
#define BWD_Q 32
#define BWD_W 4
#define BWD_KT 16
#define BWD_G 16
#define BIAS_MAX_L 256

template <int D>
__device__ void attn_bwd_q(const bf16* __restrict__ qkvg, const bf16* __restrict__ bias, const float* __restrict__ mask, const bf16* __restrict__ attn,
                           const float* __restrict__ lse, const bf16* __restrict__ dout, bf16* dqkvg, float* dbias,
                           int B, int L, int H, float scale) {
    __shared__ bf16 ks[BWD_W][BWD_KT][D];
    __shared__ bf16 vs[BWD_W][BWD_KT][D];
    __shared__ float dbs[BWD_Q][BIAS_MAX_L + 1];
    __shared__ bf16 bsq[BWD_W][BWD_Q][BWD_KT + 2];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int h = blockIdx.y, i0 = blockIdx.x * BWD_Q, i = i0 + lane;
    const long W = (long)H * D, RW = 4 * W;
    const bool active = i < L;
    if (dbias)
        for (int e = threadIdx.x; e < BWD_Q * L; e += blockDim.x) dbs[e / L][e % L] = 0.0f;
    __syncthreads();
    const int b_end = min(B, (int)(blockIdx.z + 1) * BWD_G);
    for (int b = blockIdx.z * BWD_G + warp; b < b_end; b += BWD_W) {
        const bf16* base = qkvg + (long)b * L * RW;
        bf16* dbase = dqkvg + (long)b * L * RW;
        float q[D], da[D], dq[D];
        float delta = 0.0f, lse_i = 0.0f;
        if (active) {
            const long orow = ((long)b * L + i) * W + h * D;
#pragma unroll
            for (int c = 0; c < D; c++) {
                q[c] = ld(base, i * RW + h * D + c);
                float s = sigmoidf_(ld(base, i * RW + 3 * W + h * D + c));
                float g = ld(dout, orow + c), a = ld(attn, orow + c);
                da[c] = g * s;
                delta += da[c] * a;
                st(dbase, i * RW + 3 * W + h * D + c, g * a * s * (1.0f - s));
                dq[c] = 0.0f;
            }
            lse_i = lse[((long)b * H + h) * L + i];
        }
        for (int j0 = 0; j0 < L; j0 += BWD_KT) {
            __syncwarp();
            for (int e = lane; e < BWD_KT * D; e += 32) {
                int jj = e / D, c = e % D, j = j0 + jj;
                ks[warp][jj][c] = j < L ? base[j * RW + W + h * D + c] : __float2bfloat16(0.0f);
                vs[warp][jj][c] = j < L ? base[j * RW + 2 * W + h * D + c] : __float2bfloat16(0.0f);
            }
            if (bias) {
                for (int e = lane; e < BWD_Q * BWD_KT; e += 32) {
                    int qi = e / BWD_KT, jj = e % BWD_KT, ii = i0 + qi, j = j0 + jj;
                    bsq[warp][qi][jj] = (ii < L && j < L) ? bias[((long)h * L + ii) * L + j] : __float2bfloat16(0.0f);
                }
            }
            __syncwarp();
            if (active) {
                int jn = min(BWD_KT, L - j0);
                for (int jj = 0; jj < jn; jj++) {
                    if (mask && mask[(long)b * L + j0 + jj] == 0.0f) continue;
                    float s4[4] = {0.0f, 0.0f, 0.0f, 0.0f}, d4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                    for (int c = 0; c < D; c++) {
                        s4[c % 4] += q[c] * __bfloat162float(ks[warp][jj][c]);
                        d4[c % 4] += da[c] * __bfloat162float(vs[warp][jj][c]);
                    }
                    float s = (s4[0] + s4[1]) + (s4[2] + s4[3]), dp = (d4[0] + d4[1]) + (d4[2] + d4[3]);
                    s *= scale;
                    if (bias) s += __bfloat162float(bsq[warp][lane][jj]);
                    float p = __expf(s - lse_i);
                    float ds = p * (dp - delta);
#pragma unroll
                    for (int c = 0; c < D; c++) dq[c] += ds * __bfloat162float(ks[warp][jj][c]);
                    if (dbias) atomicAdd(&dbs[lane][j0 + jj], ds);
                }
            }
        }
        if (active) {
#pragma unroll
            for (int c = 0; c < D; c++) st(dbase, i * RW + h * D + c, dq[c] * scale);
        }
    }
    if (!dbias) return;
    __syncthreads();
    const int qn = min(BWD_Q, L - i0);
    for (int e = threadIdx.x; e < qn * L; e += blockDim.x) {
        int ii = e / L, j = e % L;
        atomicAdd(dbias + ((long)h * L + i0 + ii) * L + j, dbs[ii][j]);
    }
}

// dk, dv: one thread per key, query tiles (with their dA = dout * sigmoid(g) and
// delta = dA . attn computed at load) staged in shared memory.
#define KV_K 64
#define KV_Q 64

template <int D>
__device__ void attn_bwd_kv(const bf16* __restrict__ qkvg, const bf16* __restrict__ bias, const float* __restrict__ mask, const bf16* __restrict__ attn,
                            const float* __restrict__ lse, const bf16* __restrict__ dout, bf16* dqkvg,
                            int L, int H, float scale) {
    __shared__ float qs[KV_Q][D];
    __shared__ float das[KV_Q][D];
    __shared__ float deltas[KV_Q];
    __shared__ float lses[KV_Q];
    const int b = blockIdx.z, h = blockIdx.y, j = blockIdx.x * KV_K + threadIdx.x;
    const long W = (long)H * D, RW = 4 * W;
    const bf16* base = qkvg + (long)b * L * RW;
    const bool active = j < L;
    // A masked key gets no weight: its dk and dv are zero.
    const bool live = active && (!mask || mask[(long)b * L + j] != 0.0f);
    float k[D], v[D], dk[D], dv[D];
#pragma unroll
    for (int c = 0; c < D; c++) {
        k[c] = active ? ld(base, j * RW + W + h * D + c) : 0.0f;
        v[c] = active ? ld(base, j * RW + 2 * W + h * D + c) : 0.0f;
        dk[c] = 0.0f; dv[c] = 0.0f;
    }
    for (int i0 = 0; i0 < L; i0 += KV_Q) {
        __syncthreads();
        {
            int t = threadIdx.x, i = i0 + t;
            if (i < L) {
                const long orow = ((long)b * L + i) * W + h * D;
                float delta = 0.0f;
#pragma unroll
                for (int c = 0; c < D; c++) {
                    qs[t][c] = ld(base, i * RW + h * D + c);
                    float s = sigmoidf_(ld(base, i * RW + 3 * W + h * D + c));
                    float a = ld(dout, orow + c) * s;
                    das[t][c] = a;
                    delta += a * ld(attn, orow + c);
                }
                deltas[t] = delta;
                lses[t] = lse[((long)b * H + h) * L + i];
            }
        }
        __syncthreads();
        if (live) {
            int in = min(KV_Q, L - i0);
            for (int ii = 0; ii < in; ii++) {
                float s4[4] = {0.0f, 0.0f, 0.0f, 0.0f}, d4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int c = 0; c < D; c++) { s4[c % 4] += qs[ii][c] * k[c]; d4[c % 4] += das[ii][c] * v[c]; }
                float s = (s4[0] + s4[1]) + (s4[2] + s4[3]), dp = (d4[0] + d4[1]) + (d4[2] + d4[3]);
                s *= scale;
                if (bias) s += ld(bias, ((long)h * L + i0 + ii) * L + j);
                float p = __expf(s - lses[ii]);
                float ds = p * (dp - deltas[ii]);
#pragma unroll
                for (int c = 0; c < D; c++) { dv[c] += p * das[ii][c]; dk[c] += ds * qs[ii][c]; }
            }
        }
    }
    if (!active) return;
    bf16* dbase = dqkvg + (long)b * L * RW;
#pragma unroll
    for (int c = 0; c < D; c++) {
        st(dbase, j * RW + W + h * D + c, dk[c] * scale);
        st(dbase, j * RW + 2 * W + h * D + c, dv[c]);
    }
}

#define ATTN_KERNELS(D) \
    extern "C" __global__ void __launch_bounds__(FWD_Q) attn_fwd_d##D(const bf16* qkvg, const bf16* bias, const float* mask, bf16* attn, bf16* out, float* lse, int L, int H, float scale) \
        { attn_fwd<D>(qkvg, bias, mask, attn, out, lse, L, H, scale); } \
    extern "C" __global__ void __launch_bounds__(BWD_Q * BWD_W) attn_bwd_q_d##D(const bf16* qkvg, const bf16* bias, const float* mask, const bf16* attn, const float* lse, const bf16* dout, bf16* dqkvg, float* dbias, int B, int L, int H, float scale) \
        { attn_bwd_q<D>(qkvg, bias, mask, attn, lse, dout, dqkvg, dbias, B, L, H, scale); } \
    extern "C" __global__ void __launch_bounds__(KV_K) attn_bwd_kv_d##D(const bf16* qkvg, const bf16* bias, const float* mask, const bf16* attn, const float* lse, const bf16* dout, bf16* dqkvg, int L, int H, float scale) \
        { attn_bwd_kv<D>(qkvg, bias, mask, attn, lse, dout, dqkvg, L, H, scale); }
ATTN_KERNELS(8)
ATTN_KERNELS(16)
ATTN_KERNELS(32)
