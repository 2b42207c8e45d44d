// The optimizer over the flat parameter block: the squared global gradient norm
// in one pass, and one fused Adam + weight-average (EMA) update that also writes
// the bf16 compute copy. Formula: backend::AdamStep in Rust.

// out[0] += sum of g^2 over this grid's share (out zeroed by the caller).
extern "C" __global__ void grad_norm_sq(const float* __restrict__ g, long n, float* out) {
    __shared__ float partial[32];
    float acc = 0.0f;
    GRID_STRIDE(i, n) acc += g[i] * g[i];
    acc = warp_sum(acc);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) partial[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        float v = lane < (int)(blockDim.x / 32) ? partial[lane] : 0.0f;
        v = warp_sum(v);
        if (lane == 0) atomicAdd(out, v);
    }
}

extern "C" __global__ void adam_ema(const float* __restrict__ grad, float* master, float* m, float* v, float* ema,
                                    bf16* weight, long n, const float* __restrict__ norm_sq, float lr, float beta1,
                                    float beta2, float eps, float bc1, float bc2, float decay, float clip_norm) {
    const float norm = sqrtf(norm_sq[0]);
    const float clip = (clip_norm > 0.0f && norm > clip_norm) ? clip_norm / norm : 1.0f;
    GRID_STRIDE(i, n) {
        const float g = grad[i] * clip;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        const float p = master[i] - lr * (mi * bc1) / (sqrtf(vi * bc2) + eps);
        m[i] = mi;
        v[i] = vi;
        master[i] = p;
        ema[i] = decay * ema[i] + (1.0f - decay) * p;
        st(weight, i, p);
    }
}
