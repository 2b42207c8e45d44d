// Fused gated attention on the tensor cores (FlashAttention-2 style): bf16
// operands, f32 accumulation, head widths 8, 16 and 32. Same semantics and
// layouts as attention.cu, which stays as the fallback for what this file does
// not cover (unaligned views, a bias gradient too long for shared memory):
//   qkvg [B, L, 4, H, D] (q | k | v | g per position), bias [H, L, L] shared
//   over the batch, key mask [B, L] (f32, 0 = masked), attn/out [B, L, H, D],
//   lse [B, H, L] (f32). A query whose keys are all masked gets zeros, lse 0.
//
// Every matrix product is a warp-level mma.sync m16n8k16 (bf16 x bf16 -> f32).
// A CTA owns 64 rows (queries in the forward and the dq kernel, keys in the
// dk/dv kernel), 16 per warp (4 warps; 8 in the dq kernel with a bias
// gradient, where two warps share each 16 rows), and walks the other axis in
// tiles of 64 staged in shared memory. The L x L logits never leave registers.
//
// Fragment layouts of m16n8k16 (g = lane / 4, t = lane % 4), used everywhere:
//   A (16 x 16, row-major)  a0 = A[g][2t, 2t+1]     a1 = A[g+8][2t, 2t+1]
//                           a2 = A[g][2t+8, 2t+9]   a3 = A[g+8][2t+8, 2t+9]
//   B (16 x 8, k x n)       b0 = B[2t, 2t+1][g]     b1 = B[2t+8, 2t+9][g]
//   C (16 x 8, f32)         c0, c1 = C[g][2t, 2t+1] c2, c3 = C[g+8][2t, 2t+1]
// Two neighbouring C tiles (n = 16 columns) hold exactly the elements of one A
// tile (k = 16), so probabilities computed from one product feed the next
// product straight from registers, rounded to bf16 (as FlashAttention does).
// A B operand B[k][n] is read as pairs along k, so it must sit in shared memory
// with k contiguous: S = Q K^T reads K as [key][d] ("row" tiles), P V reads V
// as [d][key] ("column" tiles, transposed on the way in).
// For D = 8 the products over d use k = 16 with the upper half zero.

#define TC_WARPS 4
#define TC_ROWS (16 * TC_WARPS)  // rows owned by one CTA
#define TC_TILE 64               // keys (forward, dq) or queries (dk/dv) per staged tile
#define TC_NT (TC_TILE / 8)      // n-tiles of 8 columns in one staged tile
#define TC_TS (TC_TILE + 8)      // row stride (elements) of a column tile [d][TC_TILE]
#define TC_BS (TC_TILE + 8)      // row stride (elements) of a staged bias tile [TC_ROWS][TC_TILE]

// Row stride (elements) of a row tile [TC_TILE][D]: 16-byte aligned rows whose
// fragment reads (8 rows x 4 words) hit 32 distinct banks.
template <int D> struct TcRow { static constexpr int stride = D == 8 ? 24 : D + 8; };

__device__ __forceinline__ void mma_bf16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as a bf16 pair in one register (lo in the low half).
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}
__device__ __forceinline__ float2 unpack_bf16(unsigned u) {
    __nv_bfloat162 v = *reinterpret_cast<__nv_bfloat162*>(&u);
    return __bfloat1622float2(v);
}
// Two consecutive bf16 (4-byte aligned) as one register.
__device__ __forceinline__ unsigned ld_pair(const bf16* p) { return *reinterpret_cast<const unsigned*>(p); }
__device__ __forceinline__ void st_pair(bf16* p, float lo, float hi) { *reinterpret_cast<unsigned*>(p) = pack_bf16(lo, hi); }

// Sum / max over the 4 lanes of a quad (the lanes sharing one fragment row).
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

// A-operand fragments of a [16, D] bf16 matrix read from global memory: rows
// r0 + g and r0 + g + 8 at `src + row * ld` (rows >= L read as zeros). The
// result feeds products over d (k-steps of 16; the upper half is zero for D = 8).
template <int D>
__device__ __forceinline__ void load_a_frags(unsigned (&f)[(D + 15) / 16][4], const bf16* src, long ld, int r0, int L) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int ra = r0 + g, rb = r0 + g + 8;
#pragma unroll
    for (int kk = 0; kk < (D + 15) / 16; kk++) {
        const int c = kk * 16 + 2 * t;
        f[kk][0] = ra < L ? ld_pair(src + ra * ld + c) : 0u;
        f[kk][1] = rb < L ? ld_pair(src + rb * ld + c) : 0u;
        f[kk][2] = (D > 8 && ra < L) ? ld_pair(src + ra * ld + c + 8) : 0u;
        f[kk][3] = (D > 8 && rb < L) ? ld_pair(src + rb * ld + c + 8) : 0u;
    }
}

// Stages rows [r0, r0 + TC_TILE) of a [L, D] bf16 matrix (row stride `ld`
// elements, 16-byte aligned rows) in shared memory, as a row tile
// rows[TC_TILE][TcRow<D>::stride] and/or a column tile cols[D][TC_TS] (either
// may be null). Rows past L become zeros, so padded keys can never inject NaN.
template <int D>
__device__ __forceinline__ void stage_tile(bf16* rows, bf16* cols, const bf16* src, long ld, int r0, int L) {
    constexpr int C = D / 8;  // 16-byte chunks per row
    for (int e = threadIdx.x; e < TC_TILE * C; e += blockDim.x) {
        // Consecutive threads take consecutive rows of one chunk column, so the
        // transposed 2-byte stores land in consecutive addresses.
        const int r = e % TC_TILE, c = e / TC_TILE, j = r0 + r;
        uint4 v = j < L ? *reinterpret_cast<const uint4*>(src + j * ld + c * 8) : make_uint4(0u, 0u, 0u, 0u);
        if (rows) *reinterpret_cast<uint4*>(rows + r * TcRow<D>::stride + c * 8) = v;
        if (cols) {
            const bf16* x = reinterpret_cast<const bf16*>(&v);
#pragma unroll
            for (int k = 0; k < 8; k++) cols[(c * 8 + k) * TC_TS + r] = x[k];
        }
    }
}

// acc[nt] += A (16 x D, fragments a) . rows^T for NT n-tiles of a row tile
// starting at `rows`: the [16, 8 NT] product of this warp's rows with the
// tile's rows over d.
template <int D, int NT>
__device__ __forceinline__ void mma_rows_t(float (&acc)[NT][4], const unsigned (&a)[(D + 15) / 16][4], const bf16* rows) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
        for (int kk = 0; kk < (D + 15) / 16; kk++) {
            const bf16* p = rows + (nt * 8 + g) * TcRow<D>::stride + kk * 16 + 2 * t;
            mma_bf16(acc[nt], a[kk], ld_pair(p), D > 8 ? ld_pair(p + 8) : 0u);
        }
    }
}

// acc[nd] += P (16 x 8 NT, in C-fragment registers p) . cols^T: the [16, D]
// product of per-tile weights with the 8 NT columns of a column tile [D][TC_TS]
// starting at `cols`.
template <int D, int NT>
__device__ __forceinline__ void mma_weights(float (&acc)[D / 8][4], const float (&p)[NT][4], const bf16* cols) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int kt = 0; kt < NT / 2; kt++) {
        const unsigned a[4] = {pack_bf16(p[2 * kt][0], p[2 * kt][1]), pack_bf16(p[2 * kt][2], p[2 * kt][3]),
                               pack_bf16(p[2 * kt + 1][0], p[2 * kt + 1][1]), pack_bf16(p[2 * kt + 1][2], p[2 * kt + 1][3])};
#pragma unroll
        for (int nd = 0; nd < D / 8; nd++) {
            const bf16* q = cols + (nd * 8 + g) * TC_TS + kt * 16 + 2 * t;
            mma_bf16(acc[nd], a, ld_pair(q), ld_pair(q + 8));
        }
    }
}

// Additive key mask of one staged tile: 0 for a live key, -inf for a masked key
// or one past L.
__device__ __forceinline__ void stage_key_mask(float* keep, const float* mask, int b, int j0, int L) {
    for (int jj = threadIdx.x; jj < TC_TILE; jj += blockDim.x) {
        const int j = j0 + jj;
        keep[jj] = (j < L && (!mask || mask[(long)b * L + j] != 0.0f)) ? 0.0f : -INFINITY;
    }
}

// Pair-bias value bias[h, i, j] (0 when out of range).
__device__ __forceinline__ float bias_at(const bf16* bias, int h, int i, int j, int L) {
    return (i < L && j < L) ? __bfloat162float(bias[((long)h * L + i) * L + j]) : 0.0f;
}

// Stages the bias block bias[h, i0 .. i0 + TC_ROWS, j0 .. j0 + TC_TILE] in shared
// memory as dst[TC_ROWS][TC_BS] (zeros out of range), with coalesced 16-byte
// loads when every row starts 16-byte aligned (L % 8 == 0, aligned base), else
// element by element. Fragment reads of pairs dst[row][2t..] then hit 32 banks.
__device__ __forceinline__ void stage_bias_tile(bf16* dst, const bf16* bias, int h, int i0, int j0, int L) {
    if ((L & 7) == 0 && (reinterpret_cast<unsigned long long>(bias) & 15) == 0) {
        for (int e = threadIdx.x; e < TC_ROWS * (TC_TILE / 8); e += blockDim.x) {
            const int r = e / (TC_TILE / 8), c = (e % (TC_TILE / 8)) * 8, i = i0 + r, j = j0 + c;
            const uint4 v = (i < L && j < L) ? *reinterpret_cast<const uint4*>(bias + ((long)h * L + i) * L + j)
                                             : make_uint4(0u, 0u, 0u, 0u);
            *reinterpret_cast<uint4*>(dst + r * TC_BS + c) = v;
        }
    } else {
        for (int e = threadIdx.x; e < TC_ROWS * TC_TILE; e += blockDim.x) {
            const int r = e / TC_TILE, c = e % TC_TILE;
            dst[r * TC_BS + c] = __float2bfloat16(bias_at(bias, h, i0 + r, j0 + c, L));
        }
    }
}

// Forward: grid (ceil(L / 64), H, B), 128 threads. Each warp keeps its 16
// queries' running max m, running sum l and unnormalised output o in
// registers while it walks the key tiles (online softmax).
template <int D>
__device__ void attn_tc_fwd(const bf16* __restrict__ qkvg, const bf16* __restrict__ bias, const float* __restrict__ mask, bf16* attn,
                            bf16* out, float* lse, int L, int H, float scale) {
    constexpr int KD = (D + 15) / 16, ND = D / 8;
    __shared__ __align__(16) bf16 ks[TC_TILE * TcRow<D>::stride];  // K tile [key][d]
    __shared__ __align__(16) bf16 vt[D * TC_TS];                   // V tile [d][key]
    __shared__ __align__(16) bf16 bsm[TC_ROWS * TC_BS];           // bias tile [query][key]
    __shared__ float keep[TC_TILE];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int b = blockIdx.z, h = blockIdx.y, r0 = blockIdx.x * TC_ROWS + warp * 16;
    const bf16* my_bias = bsm + (warp * 16 + g) * TC_BS + 2 * t;  // this thread's rows of the bias tile
    const long W = (long)H * D, RW = 4 * W;
    const bf16* base = qkvg + (long)b * L * RW;
    const int row[2] = {r0 + g, r0 + g + 8};

    unsigned qf[KD][4];
    load_a_frags<D>(qf, base + h * D, RW, r0, L);
    float o[ND][4];
#pragma unroll
    for (int nd = 0; nd < ND; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    for (int j0 = 0; j0 < L; j0 += TC_TILE) {
        __syncthreads();  // the previous tile is no longer read
        stage_tile<D>(ks, nullptr, base + W + h * D, RW, j0, L);
        stage_tile<D>(nullptr, vt, base + 2 * W + h * D, RW, j0, L);
        stage_key_mask(keep, mask, b, j0, L);
        if (bias) stage_bias_tile(bsm, bias, h, blockIdx.x * TC_ROWS, j0, L);
        __syncthreads();

        // Logits s = scale * q.k + bias (+ -inf for masked keys).
        float s[TC_NT][4];
#pragma unroll
        for (int nt = 0; nt < TC_NT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
        mma_rows_t<D>(s, qf, ks);
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int nt = 0; nt < TC_NT; nt++) {
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int jj = nt * 8 + 2 * t;
                const float2 bp = bias ? unpack_bf16(ld_pair(my_bias + r * 8 * TC_BS + nt * 8)) : make_float2(0.0f, 0.0f);
                s[nt][2 * r] = s[nt][2 * r] * scale + keep[jj] + bp.x;
                s[nt][2 * r + 1] = s[nt][2 * r + 1] * scale + keep[jj + 1] + bp.y;
                mx[r] = fmaxf(mx[r], fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            }
        }
        // Rescale what was accumulated to the new running max. A row that has seen
        // only masked keys keeps m = -inf; it exponentiates against 0 instead, so
        // every weight is exp(-inf) = 0 and nothing becomes NaN.
        float ref[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = quad_max(mx[r]);
            ref[r] = mx[r] == -INFINITY ? 0.0f : mx[r];
            const float corr = __expf(m[r] - ref[r]);
            m[r] = mx[r];
            l[r] *= corr;
#pragma unroll
            for (int nd = 0; nd < ND; nd++) { o[nd][2 * r] *= corr; o[nd][2 * r + 1] *= corr; }
        }
#pragma unroll
        for (int nt = 0; nt < TC_NT; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float p = __expf(s[nt][e] - ref[e / 2]);
                s[nt][e] = p;
                l[e / 2] += p;  // this lane's part of the row sum; the quad adds up at the end
            }
        }
        mma_weights<D>(o, s, vt);
    }

    // attn = o / l, out = attn * sigmoid(g), lse = m + log l (0 for fully masked rows).
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] = quad_sum(l[r]);
        if (row[r] >= L) continue;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        const long orow = ((long)b * L + row[r]) * W + h * D;
#pragma unroll
        for (int nd = 0; nd < ND; nd++) {
            const int c = nd * 8 + 2 * t;
            const float a0 = o[nd][2 * r] * inv, a1 = o[nd][2 * r + 1] * inv;
            const float2 gate = unpack_bf16(ld_pair(base + row[r] * RW + 3 * W + h * D + c));
            st_pair(attn + orow + c, a0, a1);
            st_pair(out + orow + c, a0 * sigmoidf_(gate.x), a1 * sigmoidf_(gate.y));
        }
        if (t == 0) lse[((long)b * H + h) * L + row[r]] = l[r] > 0.0f ? m[r] + __logf(l[r]) : 0.0f;
    }
}

// Backward, part 1: dq, dg and the bias gradient. Grid (ceil(L / 64), H,
// ceil(B / group)), 256 threads; the CTA takes `group` batch entries in turn
// for one block of 64 queries and one head, so that it can sum dbias over them
// in shared memory (dynamic, [64][dbs_stride] f32; each element always belongs
// to the same thread, so no atomics there) and add it to global memory once.
// That accumulator leaves room for only two CTAs per SM, so the kernel that
// keeps one (SPLIT = 2, 256 threads) gives each 16-query block two warps, each
// taking half of every key tile; their dq halves meet in shared memory at the
// end of each batch entry. Without a bias gradient SPLIT = 1 (128 threads).
//
// With dA = dout * sigmoid(g) and delta = dA . attn (per query), P recomputed
// from lse: dP = dA V^T, dS = P * (dP - delta), dq = scale * dS K,
// dbias += dS, dg = dout * attn * sigmoid'(g).
template <int D, int SPLIT>
__device__ void attn_tc_bwd_q(const bf16* __restrict__ qkvg, const bf16* __restrict__ bias, const float* __restrict__ mask,
                              const bf16* __restrict__ attn, const float* __restrict__ lse, const bf16* __restrict__ dout,
                              bf16* dqkvg, float* dbias, int B, int L, int H, float scale, int group, int dbs_stride) {
    constexpr int KD = (D + 15) / 16, ND = D / 8;
    constexpr int NT = TC_NT / SPLIT;  // n-tiles (8 keys each) per warp and key tile
    __shared__ __align__(16) bf16 ks[TC_TILE * TcRow<D>::stride];  // K tile [key][d]
    __shared__ __align__(16) bf16 kt[D * TC_TS];                   // K tile [d][key]
    __shared__ __align__(16) bf16 vs[TC_TILE * TcRow<D>::stride];  // V tile [key][d]
    __shared__ __align__(16) bf16 bsm[TC_ROWS * TC_BS];           // bias tile [query][key]
    __shared__ float keep[TC_TILE];
    __shared__ float dq_half[SPLIT > 1 ? TC_WARPS : 1][SPLIT > 1 ? ND * 4 * 32 : 1];  // dq of a block's second warp
    extern __shared__ __align__(16) float dbs[];  // [TC_ROWS][dbs_stride], only with dbias
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    // Query block rb (16 rows) and, within every key tile, keys kof .. kof + 8 NT.
    const int rb = warp % TC_WARPS, part = warp / TC_WARPS, kof = part * 8 * NT;
    const int h = blockIdx.y, i0 = blockIdx.x * TC_ROWS, r0 = i0 + rb * 16;
    const bf16* my_bias = bsm + (rb * 16 + g) * TC_BS + kof + 2 * t;  // this thread's part of the bias tile
    const long W = (long)H * D, RW = 4 * W;
    const int row[2] = {r0 + g, r0 + g + 8};
    // This thread's dbias elements: rows (rb * 16 + g, + 8), columns j0 + kof + nt * 8 + 2t (+1).
    float* my_dbs = dbs + (rb * 16 + g) * dbs_stride + kof + 2 * t;

    if (dbias) {
        for (int e = threadIdx.x; e < TC_ROWS * dbs_stride; e += blockDim.x) dbs[e] = 0.0f;
    }
    const int b_end = min(B, (int)(blockIdx.z + 1) * group);
    for (int b = blockIdx.z * group; b < b_end; b++) {
        const bf16* base = qkvg + (long)b * L * RW;
        bf16* dbase = dqkvg + (long)b * L * RW;
        unsigned qf[KD][4];
        load_a_frags<D>(qf, base + h * D, RW, r0, L);

        // dA fragments (A operand of dP = dA V^T), delta, and dg, in one pass over
        // this thread's share of the 16 x D block: per row the quad covers every column once.
        unsigned daf[KD][4];
        float delta[2] = {0.0f, 0.0f}, lse_r[2];
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int r = q & 1, c = kk * 16 + 2 * t + (q >= 2 ? 8 : 0);
                daf[kk][q] = 0u;
                if (c >= D || row[r] >= L) continue;
                const long orow = ((long)b * L + row[r]) * W + h * D + c;
                const long grow = row[r] * RW + 3 * W + h * D + c;
                const float2 go = unpack_bf16(ld_pair(dout + orow));
                const float2 a = unpack_bf16(ld_pair(attn + orow));
                const float2 gate = unpack_bf16(ld_pair(base + grow));
                const float s0 = sigmoidf_(gate.x), s1 = sigmoidf_(gate.y);
                const float da0 = go.x * s0, da1 = go.y * s1;
                delta[r] += da0 * a.x + da1 * a.y;
                daf[kk][q] = pack_bf16(da0, da1);
                if (part == 0) st_pair(dbase + grow, go.x * a.x * s0 * (1.0f - s0), go.y * a.y * s1 * (1.0f - s1));
            }
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            delta[r] = quad_sum(delta[r]);
            // A padded query row gets lse = +inf: all its weights exp(x - inf) are 0.
            lse_r[r] = row[r] < L ? lse[((long)b * H + h) * L + row[r]] : INFINITY;
        }
        float dq[ND][4];
#pragma unroll
        for (int nd = 0; nd < ND; nd++) dq[nd][0] = dq[nd][1] = dq[nd][2] = dq[nd][3] = 0.0f;

        for (int j0 = 0; j0 < L; j0 += TC_TILE) {
            __syncthreads();
            stage_tile<D>(ks, kt, base + W + h * D, RW, j0, L);
            stage_tile<D>(vs, nullptr, base + 2 * W + h * D, RW, j0, L);
            stage_key_mask(keep, mask, b, j0, L);
            if (bias) stage_bias_tile(bsm, bias, h, i0, j0, L);
            __syncthreads();

            float s[NT][4], dp[NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.0f;
            mma_rows_t<D>(s, qf, ks + kof * TcRow<D>::stride);
            mma_rows_t<D>(dp, daf, vs + kof * TcRow<D>::stride);
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int jj = kof + nt * 8 + 2 * t;
                    const float2 bp = bias ? unpack_bf16(ld_pair(my_bias + r * 8 * TC_BS + nt * 8)) : make_float2(0.0f, 0.0f);
                    const float p0 = __expf(s[nt][2 * r] * scale + keep[jj] + bp.x - lse_r[r]);
                    const float p1 = __expf(s[nt][2 * r + 1] * scale + keep[jj + 1] + bp.y - lse_r[r]);
                    s[nt][2 * r] = p0 * (dp[nt][2 * r] - delta[r]);  // dS
                    s[nt][2 * r + 1] = p1 * (dp[nt][2 * r + 1] - delta[r]);
                }
                if (dbias) {
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        float2* acc = reinterpret_cast<float2*>(my_dbs + r * 8 * dbs_stride + j0 + nt * 8);
                        float2 v = *acc;
                        v.x += s[nt][2 * r];
                        v.y += s[nt][2 * r + 1];
                        *acc = v;
                    }
                }
            }
            mma_weights<D>(dq, s, kt + kof);
        }
        if (SPLIT > 1) {
            // The two warps of a query block hold the same fragment positions: the
            // second hands its dq over lane by lane, the first adds and writes.
            if (part == 1) {
#pragma unroll
                for (int nd = 0; nd < ND; nd++)
#pragma unroll
                    for (int e = 0; e < 4; e++) dq_half[rb][(nd * 4 + e) * 32 + lane] = dq[nd][e];
            }
            __syncthreads();
            if (part == 1) continue;
#pragma unroll
            for (int nd = 0; nd < ND; nd++)
#pragma unroll
                for (int e = 0; e < 4; e++) dq[nd][e] += dq_half[rb][(nd * 4 + e) * 32 + lane];
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            if (row[r] >= L) continue;
#pragma unroll
            for (int nd = 0; nd < ND; nd++)
                st_pair(dbase + row[r] * RW + h * D + nd * 8 + 2 * t, dq[nd][2 * r] * scale, dq[nd][2 * r + 1] * scale);
        }
    }
    if (!dbias) return;
    __syncthreads();
    const int qn = min(TC_ROWS, L - i0);
    for (int e = threadIdx.x; e < qn * L; e += blockDim.x) {
        const int ii = e / L, j = e % L;
        atomicAdd(dbias + ((long)h * L + i0 + ii) * L + j, dbs[ii * dbs_stride + j]);
    }
}

// Backward, part 2: dk and dv. Grid (ceil(L / 64), H, B), 128 threads; each
// warp owns 16 keys and walks the query tiles, working on transposed products
// (rows = keys): S^T = K Q^T, P^T from lse, dV += P^T dA, dP^T = V dA^T,
// dS^T = P^T * (dP^T - delta), dK += scale * dS^T Q. Per query tile the CTA
// stages Q and dA both as row and column tiles, delta and lse per query, and
// the bias tile (so that its global reads stay coalesced).
template <int D>
__device__ void attn_tc_bwd_kv(const bf16* __restrict__ qkvg, const bf16* __restrict__ bias, const float* __restrict__ mask,
                               const bf16* __restrict__ attn, const float* __restrict__ lse, const bf16* __restrict__ dout,
                               bf16* dqkvg, int L, int H, float scale) {
    constexpr int KD = (D + 15) / 16, ND = D / 8, RS = TcRow<D>::stride, C = D / 8;
    __shared__ __align__(16) bf16 qs[TC_TILE * RS];   // Q tile [query][d]
    __shared__ __align__(16) bf16 qt[D * TC_TS];      // Q tile [d][query]
    __shared__ __align__(16) bf16 das[TC_TILE * RS];  // dA tile [query][d]
    __shared__ __align__(16) bf16 dat[D * TC_TS];     // dA tile [d][query]
    __shared__ __align__(16) bf16 bsm[TC_TILE * TC_BS];  // bias tile [query][key of this CTA]
    __shared__ float delta_s[TC_TILE], lse_s[TC_TILE];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int b = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * TC_ROWS, r0 = k0 + warp * 16;
    const long W = (long)H * D, RW = 4 * W;
    const bf16* base = qkvg + (long)b * L * RW;
    const int row[2] = {r0 + g, r0 + g + 8};  // this thread's keys
    // A masked key (or one past L) gets no weight: its dk and dv are zero.
    float key_add[2];
#pragma unroll
    for (int r = 0; r < 2; r++)
        key_add[r] = (row[r] < L && (!mask || mask[(long)b * L + row[r]] != 0.0f)) ? 0.0f : -INFINITY;

    unsigned kf[KD][4], vf[KD][4];
    load_a_frags<D>(kf, base + W + h * D, RW, r0, L);
    load_a_frags<D>(vf, base + 2 * W + h * D, RW, r0, L);
    float dk[ND][4], dv[ND][4];
#pragma unroll
    for (int nd = 0; nd < ND; nd++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[nd][e] = dv[nd][e] = 0.0f;

    for (int i0 = 0; i0 < L; i0 += TC_TILE) {
        __syncthreads();
        stage_tile<D>(qs, qt, base + h * D, RW, i0, L);
        // dA = dout * sigmoid(g) and delta = dA . attn: each thread takes 8
        // consecutive columns of one query (16-byte loads); the C threads of a
        // query are neighbouring lanes and add up delta with shuffles.
        for (int e = threadIdx.x; e < TC_TILE * C; e += blockDim.x) {
            const int qi = e / C, c = (e % C) * 8, i = i0 + qi;
            unsigned da[4] = {0u, 0u, 0u, 0u};
            float delta = 0.0f;
            if (i < L) {
                const long orow = ((long)b * L + i) * W + h * D + c;
                const uint4 go4 = *reinterpret_cast<const uint4*>(dout + orow);
                const uint4 a4 = *reinterpret_cast<const uint4*>(attn + orow);
                const uint4 g4 = *reinterpret_cast<const uint4*>(base + i * RW + 3 * W + h * D + c);
                const unsigned gou[4] = {go4.x, go4.y, go4.z, go4.w}, au[4] = {a4.x, a4.y, a4.z, a4.w},
                               gu[4] = {g4.x, g4.y, g4.z, g4.w};
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const float2 go = unpack_bf16(gou[k]), a = unpack_bf16(au[k]), gate = unpack_bf16(gu[k]);
                    const float da0 = go.x * sigmoidf_(gate.x), da1 = go.y * sigmoidf_(gate.y);
                    delta += da0 * a.x + da1 * a.y;
                    da[k] = pack_bf16(da0, da1);
                }
            }
            *reinterpret_cast<uint4*>(das + qi * RS + c) = make_uint4(da[0], da[1], da[2], da[3]);
            const bf16* x = reinterpret_cast<const bf16*>(da);
#pragma unroll
            for (int k = 0; k < 8; k++) dat[(c + k) * TC_TS + qi] = x[k];
#pragma unroll
            for (int o = 1; o < C; o *= 2) delta += __shfl_xor_sync(0xffffffffu, delta, o);
            if (c == 0) {
                delta_s[qi] = delta;
                // A padded query gets lse = +inf: its weights exp(x - inf) are all 0.
                lse_s[qi] = i < L ? lse[((long)b * H + h) * L + i] : INFINITY;
            }
        }
        if (bias) stage_bias_tile(bsm, bias, h, i0, k0, L);
        __syncthreads();

        float st[TC_NT][4], dpt[TC_NT][4];
#pragma unroll
        for (int nt = 0; nt < TC_NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) st[nt][e] = dpt[nt][e] = 0.0f;
        mma_rows_t<D>(st, kf, qs);
        mma_rows_t<D>(dpt, vf, das);
#pragma unroll
        for (int nt = 0; nt < TC_NT; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int qi = nt * 8 + 2 * t + (e & 1);
                float x = st[nt][e] * scale + key_add[e / 2];
                if (bias) x += __bfloat162float(bsm[qi * TC_BS + warp * 16 + g + 8 * (e / 2)]);
                const float p = __expf(x - lse_s[qi]);
                st[nt][e] = p;
                dpt[nt][e] = p * (dpt[nt][e] - delta_s[qi]);  // dS^T
            }
        }
        mma_weights<D>(dv, st, dat);
        mma_weights<D>(dk, dpt, qt);
    }
    bf16* dbase = dqkvg + (long)b * L * RW;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (row[r] >= L) continue;
#pragma unroll
        for (int nd = 0; nd < ND; nd++) {
            const int c = h * D + nd * 8 + 2 * t;
            st_pair(dbase + row[r] * RW + W + c, dk[nd][2 * r] * scale, dk[nd][2 * r + 1] * scale);
            st_pair(dbase + row[r] * RW + 2 * W + c, dv[nd][2 * r], dv[nd][2 * r + 1]);
        }
    }
}

#define ATTN_TC_KERNELS(D) \
    extern "C" __global__ void __launch_bounds__(32 * TC_WARPS) attn_tc_fwd_d##D(const bf16* qkvg, const bf16* bias, const float* mask, bf16* attn, bf16* out, float* lse, int L, int H, float scale) \
        { attn_tc_fwd<D>(qkvg, bias, mask, attn, out, lse, L, H, scale); } \
    extern "C" __global__ void __launch_bounds__(64 * TC_WARPS, 2) attn_tc_bwd_q_d##D(const bf16* qkvg, const bf16* bias, const float* mask, const bf16* attn, const float* lse, const bf16* dout, bf16* dqkvg, float* dbias, int B, int L, int H, float scale, int group, int dbs_stride) \
        { attn_tc_bwd_q<D, 2>(qkvg, bias, mask, attn, lse, dout, dqkvg, dbias, B, L, H, scale, group, dbs_stride); } \
    extern "C" __global__ void __launch_bounds__(32 * TC_WARPS) attn_tc_bwd_q1_d##D(const bf16* qkvg, const bf16* bias, const float* mask, const bf16* attn, const float* lse, const bf16* dout, bf16* dqkvg, float* dbias, int B, int L, int H, float scale, int group, int dbs_stride) \
        { attn_tc_bwd_q<D, 1>(qkvg, bias, mask, attn, lse, dout, dqkvg, dbias, B, L, H, scale, group, dbs_stride); } \
    extern "C" __global__ void __launch_bounds__(32 * TC_WARPS, 4) attn_tc_bwd_kv_d##D(const bf16* qkvg, const bf16* bias, const float* mask, const bf16* attn, const float* lse, const bf16* dout, bf16* dqkvg, int L, int H, float scale) \
        { attn_tc_bwd_kv<D>(qkvg, bias, mask, attn, lse, dout, dqkvg, L, H, scale); }
ATTN_TC_KERNELS(8)
ATTN_TC_KERNELS(16)
ATTN_TC_KERNELS(32)
