// Fused CUDA kernels of gadms-nn (the CUDA arm of `src/fast`): QuickGELU, LayerNorm, a linear
// layer's bias, the attention core and GASS's per-layer maps, each with its backward where it
// has one; f32 (GASS's maps in f64; bf16 copies of what the backward keeps under
// --precision bf16). Compiled to PTX by build.rs
// (nvcc --ptx) and launched from src/fast/cuda/; the CPU kernels of src/fast compute the
// same functions and tests/cuda.rs compares the two.
//
// Conventions: every backward ADDS into its gradient buffers (dfdx accumulates gradients);
// row-major, contiguous tensors; reductions run in a fixed order (no atomics), so results
// are the same on every run.

#define WARP 32
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// `v` reduced over the whole block with `op` (blockDim.x a multiple of 32, at most 1024): warp
// shuffles, then one value per warp in shared memory, then warp 0's order in every warp. Every
// thread gets the result. One shared array per instantiation.
template <typename T, typename Op>
__device__ T block_reduce(T v, T identity, Op op) {
    __shared__ T part[WARP];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int warps = blockDim.x / WARP;
    for (int o = WARP / 2; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();  // `part` may still be read by a previous call
    if (lane == 0) part[warp] = v;
    __syncthreads();
    T t = lane < warps ? part[lane] : identity;
    for (int o = WARP / 2; o > 0; o >>= 1) t = op(t, __shfl_xor_sync(0xffffffffu, t, o));
    return t;
}

struct Add {
    template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

__device__ float block_sum(float v) { return block_reduce(v, 0.0f, Add()); }
__device__ double block_sum_f64(double v) { return block_reduce(v, 0.0, Add()); }
__device__ float block_max(float v) { return block_reduce(v, NEG_INF, Max()); }

// ---- QuickGELU (OpenAI CLIP): y = x·σ(1.702x) -------------------------------------------

extern "C" __global__ void quick_gelu_fwd(const unsigned long long n, const float *x, float *y) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        const float v = x[i];
        y[i] = v / (1.0f + expf(-1.702f * v));
    }
}

// dx += dy·(s + 1.702·x·s·(1 − s)), s = σ(1.702x)
extern "C" __global__ void quick_gelu_bwd(const unsigned long long n, const float *x,
                                          const float *dy, float *dx) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        const float v = x[i];
        const float s = 1.0f / (1.0f + expf(-1.702f * v));
        dx[i] += dy[i] * (s + 1.702f * v * s * (1.0f - s));
    }
}

// ---- bf16 copies kept for the backward pass under --precision bf16 ------------------------
// The bits of bf16(v) rounded to nearest even, as CUBLAS_COMPUTE_32F_FAST_16BF rounds the
// inputs of a product and as PyTorch's `.to(torch.bfloat16)` does; a NaN stays a (quiet) NaN.
__device__ __forceinline__ unsigned short bf16_bits(const float v) {
    const unsigned int b = __float_as_uint(v);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((b >> 16) | 0x40u);
    return (unsigned short)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float bf16_value(const unsigned short h) {
    return __uint_as_float((unsigned int)h << 16);
}

// y[i] = bf16(x[i])
extern "C" __global__ void to_bf16(const unsigned long long n, const float *x, unsigned short *y) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x)
        y[i] = bf16_bits(x[i]);
}

// QuickGELU from the f32 input, keeping bf16(x) for the backward (autocast keeps the bf16
// output of the product before it): y = x·σ(1.702x), xb = bf16(x).
extern "C" __global__ void quick_gelu_fwd_bf16(const unsigned long long n, const float *x,
                                               float *y, unsigned short *xb) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        const float v = x[i];
        y[i] = v / (1.0f + expf(-1.702f * v));
        xb[i] = bf16_bits(v);
    }
}

// quick_gelu_bwd at the kept bf16 input: dx += dy·(s + 1.702·x·s·(1 − s)), x = xb
extern "C" __global__ void quick_gelu_bwd_bf16(const unsigned long long n,
                                               const unsigned short *xb, const float *dy,
                                               float *dx) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        const float v = bf16_value(xb[i]);
        const float s = 1.0f / (1.0f + expf(-1.702f * v));
        dx[i] += dy[i] * (s + 1.702f * v * s * (1.0f - s));
    }
}

// ---- LayerNorm over the last dimension m (biased variance, ε inside the root) -------------
// One block per row. stats[2r] = mean, stats[2r+1] = r = 1/√(σ² + ε).

extern "C" __global__ void layer_norm_fwd(const int rows, const int m, const float eps,
                                          const float *x, const float *w, const float *b,
                                          float *y, float *stats) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float *xr = x + (size_t)r * m;
    float *yr = y + (size_t)r * m;
    float s = 0.0f;
    for (int j = threadIdx.x; j < m; j += blockDim.x) s += xr[j];
    const float mean = block_sum(s) / m;
    float q = 0.0f;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        const float d = xr[j] - mean;
        q += d * d;
    }
    const float rstd = 1.0f / sqrtf(block_sum(q) / m + eps);
    for (int j = threadIdx.x; j < m; j += blockDim.x) yr[j] = (xr[j] - mean) * rstd * w[j] + b[j];
    if (threadIdx.x == 0) {
        stats[2 * r] = mean;
        stats[2 * r + 1] = rstd;
    }
}

// dx += r·(g − mean(g) − x̂·mean(g·x̂)), g = dy·γ, x̂ = (x − μ)·r. One block per row.
extern "C" __global__ void layer_norm_bwd_x(const int rows, const int m, const float *x,
                                            const float *w, const float *stats, const float *dy,
                                            float *dx) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float mean = stats[2 * r], rstd = stats[2 * r + 1];
    const float *xr = x + (size_t)r * m, *gr = dy + (size_t)r * m;
    float *dr = dx + (size_t)r * m;
    float sg = 0.0f, sgx = 0.0f;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        const float g = gr[j] * w[j];
        sg += g;
        sgx += g * (xr[j] - mean) * rstd;
    }
    const float mg = block_sum(sg) / m;
    const float mgx = block_sum(sgx) / m;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        const float xh = (xr[j] - mean) * rstd;
        dr[j] += rstd * (gr[j] * w[j] - mg - xh * mgx);
    }
}

// Partial sums of dγ = Σ dy·x̂ and dβ = Σ dy over the rows of chunk blockIdx.y:
// part[(c·2 + 0)·m + j] and part[(c·2 + 1)·m + j]. Thread = column.
extern "C" __global__ void layer_norm_bwd_params(const int rows, const int m, const int chunk,
                                                 const float *x, const float *stats,
                                                 const float *dy, float *part) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int c = blockIdx.y;
    if (j >= m) return;
    const int r0 = c * chunk;
    const int r1 = min(rows, r0 + chunk);
    float gw = 0.0f, gb = 0.0f;
    for (int r = r0; r < r1; ++r) {
        const float g = dy[(size_t)r * m + j];
        gw += g * (x[(size_t)r * m + j] - stats[2 * r]) * stats[2 * r + 1];
        gb += g;
    }
    part[(size_t)(2 * c) * m + j] = gw;
    part[(size_t)(2 * c + 1) * m + j] = gb;
}

// dγ[j] += Σ_c part[2c][j], dβ[j] += Σ_c part[2c+1][j], chunks in order.
extern "C" __global__ void layer_norm_bwd_reduce(const int chunks, const int m, const float *part,
                                                 float *dw, float *db) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= m) return;
    float gw = 0.0f, gb = 0.0f;
    for (int c = 0; c < chunks; ++c) {
        gw += part[(size_t)(2 * c) * m + j];
        gb += part[(size_t)(2 * c + 1) * m + j];
    }
    dw[j] += gw;
    db[j] += gb;
}

// ---- Bias of a linear layer: out = y + b over rows of m -----------------------------------

extern "C" __global__ void bias_add_fwd(const unsigned long long n, const int m, const float *y,
                                        const float *b, float *out) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x)
        out[i] = y[i] + b[i % m];
}

// out = y + b + r: a linear layer's bias and the residual stream, in one pass.
extern "C" __global__ void bias_residual_fwd(const unsigned long long n, const int m,
                                             const float *y, const float *b, const float *r,
                                             float *out) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x)
        out[i] = (y[i] + b[i % m]) + r[i];
}

// dst += src, element-wise.
extern "C" __global__ void add_assign(const unsigned long long n, const float *src, float *dst) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x)
        dst[i] += src[i];
}

// Column sums of src [rows, m] over the rows of chunk blockIdx.y: part[c·m + j]. Thread = column.
extern "C" __global__ void col_sum_partial(const int rows, const int m, const int chunk,
                                           const float *src, float *part) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int c = blockIdx.y;
    if (j >= m) return;
    const int r1 = min(rows, (c + 1) * chunk);
    float s = 0.0f;
    for (int r = c * chunk; r < r1; ++r) s += src[(size_t)r * m + j];
    part[(size_t)c * m + j] = s;
}

// dst[j] += Σ_c part[c·m + j], chunks in order.
extern "C" __global__ void col_sum_reduce(const int chunks, const int m, const float *part,
                                          float *dst) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= m) return;
    float s = 0.0f;
    for (int c = 0; c < chunks; ++c) s += part[(size_t)c * m + j];
    dst[j] += s;
}

// ---- Weighted softmax cross entropy over the rows of z [n, c] (nn/src/fast/loss.rs) --------
// L = Σ_i w_i (logsumexp(z_i) − z_i[label_i]); rows with w_i = 0 are not read. One block per
// row; stats[2i] = max, stats[2i+1] = Σ exp(z − max) in f64; row_loss[i] = w_i·(…).

extern "C" __global__ void ce_fwd(const int n, const int c, const float *z,
                                  const long long *labels,
                                  const double *w, double *stats, double *row_loss) {
    const int i = blockIdx.x;
    if (i >= n) return;
    if (w[i] == 0.0) {
        if (threadIdx.x == 0) {
            stats[2 * i] = 0.0;
            stats[2 * i + 1] = 1.0;
            row_loss[i] = 0.0;
        }
        return;
    }
    const float *zi = z + (size_t)i * c;
    float m = NEG_INF;
    for (int j = threadIdx.x; j < c; j += blockDim.x) m = fmaxf(m, zi[j]);
    m = block_max(m);
    double s = 0.0;
    for (int j = threadIdx.x; j < c; j += blockDim.x) s += (double)expf(zi[j] - m);
    s = block_sum_f64(s);
    if (threadIdx.x == 0) {
        stats[2 * i] = (double)m;
        stats[2 * i + 1] = s;
        row_loss[i] = w[i] * ((double)m - (double)zi[labels[i]] + log(s));
    }
}

// out = Σ_i row_loss[i] in row order (one thread).
extern "C" __global__ void ce_sum(const int n, const double *row_loss, float *out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double s = 0.0;
    for (int i = 0; i < n; ++i) s += row_loss[i];
    out[0] = (float)s;
}

// dz_i += a (softmax(z_i) − onehot(label_i)), a = u·w_i with u = *up (the loss's gradient).
extern "C" __global__ void ce_bwd(const int n, const int c, const float *z, const long long *labels,
                                  const double *w, const double *stats, const float *up,
                                  float *dz) {
    const int i = blockIdx.x;
    if (i >= n) return;
    const double a = (double)up[0] * w[i];
    if (a == 0.0) return;
    const float m = (float)stats[2 * i];
    const float coef = (float)(a / stats[2 * i + 1]);
    const long long label = labels[i];
    const float *zi = z + (size_t)i * c;
    float *gi = dz + (size_t)i * c;
    for (int j = threadIdx.x; j < c; j += blockDim.x) {
        float g = gi[j] + coef * expf(zi[j] - m);
        if (j == label) g -= (float)a;
        gi[j] = g;
    }
}

// ---- SDM loss (nn/src/fast/loss.rs `sdm`, in f64 with its summation orders) ----------------
// v = x/‖x‖, t = y/‖y‖ (rows of [b, k]); G = v tᵀ; per row of s·G (image→text) and of s·Gᵀ
// (text→image) KL(softmax ‖ q) with log q given; L = (Σ KL)/b; dG = (s/b)(d_i2t + d_t2iᵀ).

// One block per row: norms[i] = ‖x_i‖, unit[i] = x_i/‖x_i‖.
extern "C" __global__ void sdm_unit(const int b, const int k, const float *x, double *unit,
                                    double *norms) {
    const int i = blockIdx.x;
    if (i >= b) return;
    const float *xi = x + (size_t)i * k;
    double s = 0.0;
    for (int j = threadIdx.x; j < k; j += blockDim.x) s += (double)xi[j] * (double)xi[j];
    const double n = sqrt(block_sum_f64(s));
    for (int j = threadIdx.x; j < k; j += blockDim.x) unit[(size_t)i * k + j] = (double)xi[j] / n;
    if (threadIdx.x == 0) norms[i] = n;
}

// g[i·b + j] = v_i·t_j, in index order. Thread per (i, j).
extern "C" __global__ void sdm_gram(const int b, const int k, const double *v, const double *t,
                                    double *g) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= b * b) return;
    const int i = idx / b, j = idx % b;
    double s = 0.0;
    for (int d = 0; d < k; ++d) s += v[(size_t)i * k + d] * t[(size_t)j * k + d];
    g[idx] = s;
}

// Thread per row r: z_j = s·g[r, j] (or s·g[j, r] when `transposed`); KL of softmax(z) against
// log q row r; writes dKL/dz into d[r, ·] and KL into kl[r].
extern "C" __global__ void sdm_kl(const int b, const double s, const double *g, const double *lq,
                                  const int transposed, double *d, double *kl) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= b) return;
    double m = -INFINITY;
    for (int j = 0; j < b; ++j) m = fmax(m, s * (transposed ? g[(size_t)j * b + r] : g[(size_t)r * b + j]));
    double e = 0.0;
    for (int j = 0; j < b; ++j) e += exp(s * (transposed ? g[(size_t)j * b + r] : g[(size_t)r * b + j]) - m);
    const double lse = m + log(e);
    double acc = 0.0;
    double *dr = d + (size_t)r * b;
    for (int j = 0; j < b; ++j) {
        const double z = s * (transposed ? g[(size_t)j * b + r] : g[(size_t)r * b + j]);
        dr[j] = z - lse - lq[(size_t)r * b + j];
        acc += exp(z - lse) * dr[j];
    }
    for (int j = 0; j < b; ++j) {
        const double z = s * (transposed ? g[(size_t)j * b + r] : g[(size_t)r * b + j]);
        dr[j] = exp(z - lse) * (dr[j] - acc);
    }
    kl[r] = acc;
}

// out = (Σ_i kl_i2t[i] + Σ_j kl_t2i[j]) / b in that order; dG = c·(d_i2t + d_t2iᵀ) (thread 0
// sums; every thread of the grid writes dG entries).
extern "C" __global__ void sdm_loss_dg(const int b, const double c, const double *kl1,
                                       const double *kl2, const double *d1, const double *d2,
                                       float *out, double *dg) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx == 0) {
        double l = 0.0;
        for (int i = 0; i < b; ++i) l += kl1[i];
        for (int j = 0; j < b; ++j) l += kl2[j];
        out[0] = (float)(l / b);
    }
    if (idx >= b * b) return;
    const int i = idx / b, j = idx % b;
    dg[idx] = c * (d1[idx] + d2[(size_t)j * b + i]);
}

// Backward, one block per row i of one side: a = Σ_j coef(i, j)·other_j with coef = dG[i, j]
// (image side) or dG[j, i] (text side, `transposed`); then through the normalisation,
// dx = (a − u_i (u_i·a))/‖x_i‖, and gx_i += up·dx. Dynamic shared memory: k doubles.
extern "C" __global__ void sdm_back(const int b, const int k, const double *dg,
                                    const double *other, const double *unit,
                                    const double *norms, const int transposed, const float *up,
                                    float *gx) {
    extern __shared__ double acc[];
    const int i = blockIdx.x;
    if (i >= b) return;
    const double *ui = unit + (size_t)i * k;
    double dot = 0.0;
    for (int d = threadIdx.x; d < k; d += blockDim.x) {
        double a = 0.0;
        for (int j = 0; j < b; ++j)
            a += (transposed ? dg[(size_t)j * b + i] : dg[(size_t)i * b + j]) * other[(size_t)j * k + d];
        acc[d] = a;
        dot += ui[d] * a;
    }
    dot = block_sum_f64(dot);
    const double u = (double)up[0];
    for (int d = threadIdx.x; d < k; d += blockDim.x) {
        const double dx = (acc[d] - ui[d] * dot) / norms[i];
        gx[(size_t)i * k + d] += (float)(u * dx);
    }
}

// ---- Attention core: out = softmax(q·kᵀ·scale + mask)·v for every head ------------------
// q [B, Sq, W], k, v [B, Sk, W], out [B, Sq, W]; head h owns columns h·hd .. (h+1)·hd.
// mask [Sq, Sk] is added to the scaled scores (may be null). One warp per query row:
// grid (ceil(Sq / warps per block), heads, B); dynamic shared memory: one row of Sk scores
// per warp. The probabilities are not kept: lse [B, heads, Sq] = max + ln Σ exp lets the
// backward recompute them (the flash-attention scheme).

struct Attn {
    int sq, sk, w, heads, hd;
    float scale;
};

__device__ __forceinline__ float dot_head(const float *a, const float *b, int hd) {
    float s = 0.0f;
    for (int d = threadIdx.x % WARP; d < hd; d += WARP) s += a[d] * b[d];
    return warp_sum(s);
}

extern "C" __global__ void attn_fwd(const Attn p, const float *q, const float *k, const float *v,
                                    const float *mask, float *out, float *lse) {
    extern __shared__ float shm[];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int i = blockIdx.x * (blockDim.x / WARP) + warp;
    const int h = blockIdx.y, b = blockIdx.z;
    if (i >= p.sq) return;  // whole warps leave together; no block-wide barrier follows
    float *s = shm + (size_t)warp * p.sk;
    const float *qi = q + ((size_t)b * p.sq + i) * p.w + h * p.hd;
    const float *kb = k + (size_t)b * p.sk * p.w + h * p.hd;
    const float *vb = v + (size_t)b * p.sk * p.w + h * p.hd;
    float mx = NEG_INF;
    for (int j = 0; j < p.sk; ++j) {
        float t = dot_head(qi, kb + (size_t)j * p.w, p.hd) * p.scale;
        if (mask) t += mask[(size_t)i * p.sk + j];
        if (lane == 0) s[j] = t;
        mx = fmaxf(mx, t);
    }
    __syncwarp();
    float sum = 0.0f;
    for (int j = lane; j < p.sk; j += WARP) {
        const float e = expf(s[j] - mx);
        s[j] = e;
        sum += e;
    }
    sum = warp_sum(sum);
    __syncwarp();
    const float inv = 1.0f / sum;
    float *oi = out + ((size_t)b * p.sq + i) * p.w + h * p.hd;
    for (int d = lane; d < p.hd; d += WARP) {
        float o = 0.0f;
        for (int j = 0; j < p.sk; ++j) o += s[j] * vb[(size_t)j * p.w + d];
        oi[d] = o * inv;
    }
    if (lane == 0) lse[((size_t)b * p.heads + h) * p.sq + i] = mx + logf(sum);
}

// Backward, query side: with P recomputed from lse, dP_ij = dO_i·v_j, Δ_i = Σ_j P_ij·dP_ij,
// dS_ij = P_ij·(dP_ij − Δ_i)·scale; dq_i += Σ_j dS_ij·k_j; Δ is stored for the key side.
// Same grid as attn_fwd; dynamic shared memory: two rows of Sk (P and dP) per warp.
extern "C" __global__ void attn_bwd_q(const Attn p, const float *q, const float *k,
                                      const float *v, const float *mask, const float *lse,
                                      const float *dout, float *delta, float *dq) {
    extern __shared__ float shm[];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int i = blockIdx.x * (blockDim.x / WARP) + warp;
    const int h = blockIdx.y, b = blockIdx.z;
    if (i >= p.sq) return;
    float *pr = shm + (size_t)warp * 2 * p.sk;
    float *dpr = pr + p.sk;
    const size_t row = ((size_t)b * p.sq + i) * p.w + h * p.hd;
    const float *qi = q + row, *gi = dout + row;
    const float *kb = k + (size_t)b * p.sk * p.w + h * p.hd;
    const float *vb = v + (size_t)b * p.sk * p.w + h * p.hd;
    const float l = lse[((size_t)b * p.heads + h) * p.sq + i];
    for (int j = 0; j < p.sk; ++j) {
        float t = dot_head(qi, kb + (size_t)j * p.w, p.hd) * p.scale;
        if (mask) t += mask[(size_t)i * p.sk + j];
        const float dp = dot_head(gi, vb + (size_t)j * p.w, p.hd);
        if (lane == 0) {
            pr[j] = expf(t - l);
            dpr[j] = dp;
        }
    }
    __syncwarp();
    float dl = 0.0f;
    for (int j = lane; j < p.sk; j += WARP) dl += pr[j] * dpr[j];
    dl = warp_sum(dl);
    for (int j = lane; j < p.sk; j += WARP) dpr[j] = pr[j] * (dpr[j] - dl) * p.scale;
    __syncwarp();
    float *dqi = dq + row;
    for (int d = lane; d < p.hd; d += WARP) {
        float g = 0.0f;
        for (int j = 0; j < p.sk; ++j) g += dpr[j] * kb[(size_t)j * p.w + d];
        dqi[d] += g;
    }
    if (lane == 0) delta[((size_t)b * p.heads + h) * p.sq + i] = dl;
}

// Backward, key side: one warp per key row j (grid (ceil(Sk / warps per block), heads, B)):
// dk_j += Σ_i dS_ij·q_i, dv_j += Σ_i P_ij·dO_i, P and dS recomputed from lse and Δ.
// hd ≤ 32·ATTN_HD_LANES (512: GASS's single head over all of W).
#define ATTN_HD_LANES 16
extern "C" __global__ void attn_bwd_kv(const Attn p, const float *q, const float *k,
                                       const float *v, const float *mask, const float *lse,
                                       const float *delta, const float *dout, float *dk,
                                       float *dv) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int j = blockIdx.x * (blockDim.x / WARP) + warp;
    const int h = blockIdx.y, b = blockIdx.z;
    if (j >= p.sk) return;
    const size_t krow = ((size_t)b * p.sk + j) * p.w + h * p.hd;
    const float *kj = k + krow, *vj = v + krow;
    const float *qb = q + (size_t)b * p.sq * p.w + h * p.hd;
    const float *gb = dout + (size_t)b * p.sq * p.w + h * p.hd;
    const float *lb = lse + ((size_t)b * p.heads + h) * p.sq;
    const float *db = delta + ((size_t)b * p.heads + h) * p.sq;
    float ak[ATTN_HD_LANES], av[ATTN_HD_LANES];
    for (int t = 0; t < ATTN_HD_LANES; ++t) ak[t] = av[t] = 0.0f;
    for (int i = 0; i < p.sq; ++i) {
        const float *qi = qb + (size_t)i * p.w, *gi = gb + (size_t)i * p.w;
        float t = dot_head(qi, kj, p.hd) * p.scale;
        if (mask) t += mask[(size_t)i * p.sk + j];
        const float pij = expf(t - lb[i]);
        const float dp = dot_head(gi, vj, p.hd);
        const float ds = pij * (dp - db[i]) * p.scale;
        for (int u = 0; u < ATTN_HD_LANES; ++u) {
            const int d = lane + u * WARP;
            if (d < p.hd) {
                ak[u] += ds * qi[d];
                av[u] += pij * gi[d];
            }
        }
    }
    for (int u = 0; u < ATTN_HD_LANES; ++u) {
        const int d = lane + u * WARP;
        if (d < p.hd) {
            dk[krow + d] += ak[u];
            dv[krow + d] += av[u];
        }
    }
}

// ---- GASS per-layer maps (paper §3.2, Eq. 1–3), the device twin of part B of nn/src/gass.rs -
// One block per sample; in f64 like the host version, and with the same summation orders.
// For layer l and sample b with EOS index e, rows j of that sample's q, k, v, g [S, W]:
//   w_j = minmax_j cos(MSP(q)_e, MSP(k)_j), r_j = (g_e·v_j)·w_j,
//   a_j = softmax_{n ≤ e}(q_e·k_n/√W)_j (0 beyond e), Z = Σ_{0<j<e} a_j (paper) or Σ_j r_j
//   (official), total[b, j] += [0 < j < e]·r_j·a_j/(Z + 1e-8).
#define GASS_MAX_SCALES 4
struct Gass {
    int b, s, w, nscales, official;
    int scales[GASS_MAX_SCALES];
};

// Mean of column d over window i of scale c (the last window takes the S mod c leftovers).
__device__ double window_mean(const Gass &p, const float *x, int c, int full, int i, int d) {
    const int lo = i < full ? i * c : full * c;
    const int hi = i < full ? (i + 1) * c : p.s;
    double sum = 0.0;
    for (int t = lo; t < hi; ++t) sum += (double)x[(size_t)t * p.w + d];
    return sum * (1.0 / (double)(hi - lo));
}

// Multi-scale pooling of row j, column d (nn/src/gass.rs `multi_scale_pool`): per scale, the
// window means resized back to S by linear interpolation (align_corners = False); the mean
// over the scales.
__device__ double msp(const Gass &p, const float *x, int j, int d) {
    const double inv = 1.0 / (double)p.nscales;
    double out = 0.0;
    for (int t = 0; t < p.nscales; ++t) {
        const int c = p.scales[t];
        const int full = p.s / c;
        const int np = full + (p.s % c != 0 ? 1 : 0);
        const double src = fmax(((double)j + 0.5) * ((double)np / (double)p.s) - 0.5, 0.0);
        const int i0 = min((int)floor(src), np - 1);
        const int i1 = min(i0 + 1, np - 1);
        const double lam = src - (double)i0;
        const double v = (1.0 - lam) * window_mean(p, x, c, full, i0, d) +
                         lam * window_mean(p, x, c, full, i1, d);
        out += v * inv;
    }
    return out;
}

// Adds layer l's map into total [B, S]. q, k, v, g: [B, S, W] (g = ∂trace(C)/∂o_l); eos [B].
// Dynamic shared memory: (W + 3·S) doubles.
extern "C" __global__ void gass_layer_map(const Gass p, const float *q, const float *k,
                                          const float *v, const float *g, const int *eos,
                                          double *total) {
    extern __shared__ double gsh[];
    const int b = blockIdx.x;
    if (b >= p.b) return;
    double *qm = gsh, *cs = qm + p.w, *rr = cs + p.s, *al = rr + p.s;
    const size_t base = (size_t)b * p.s * p.w;
    const float *qb = q + base, *kb = k + base, *vb = v + base, *gb = g + base;
    const int e = eos[b];
    for (int d = threadIdx.x; d < p.w; d += blockDim.x) qm[d] = msp(p, qb, e, d);
    __syncthreads();
    for (int j = threadIdx.x; j < p.s; j += blockDim.x) {
        double nq = 0.0, dot = 0.0, nk = 0.0, gv = 0.0, qk = 0.0;
        for (int d = 0; d < p.w; ++d) {
            const double km = msp(p, kb, j, d);
            nq += qm[d] * qm[d];
            dot += qm[d] * km;
            nk += km * km;
            gv += (double)gb[(size_t)e * p.w + d] * (double)vb[(size_t)j * p.w + d];
            qk += (double)qb[(size_t)e * p.w + d] * (double)kb[(size_t)j * p.w + d];
        }
        cs[j] = dot / (fmax(sqrt(nq), 1e-12) * fmax(sqrt(nk), 1e-12));
        rr[j] = gv;
        al[j] = qk * (1.0 / sqrt((double)p.w));
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    double lo = cs[0], hi = cs[0], top = al[0];
    for (int j = 1; j < p.s; ++j) {
        lo = fmin(lo, cs[j]);
        hi = fmax(hi, cs[j]);
    }
    for (int j = 1; j <= e; ++j) top = fmax(top, al[j]);
    double ez = 0.0;
    for (int j = 0; j <= e; ++j) {
        al[j] = exp(al[j] - top);
        ez += al[j];
    }
    for (int j = 0; j < p.s; ++j) {
        al[j] = j <= e ? al[j] / ez : 0.0;
        rr[j] *= (cs[j] - lo) / (hi - lo + 1e-8);
    }
    double z = 0.0;
    for (int j = 0; j < p.s; ++j) {
        if (p.official) z += rr[j];
        else if (j > 0 && j < e) z += al[j];
    }
    z += 1e-8;
    for (int j = 0; j < p.s; ++j) {
        total[(size_t)b * p.s + j] += (j > 0 && j < e) ? rr[j] * al[j] / z : 0.0;
    }
}

// ---- Adam (src/train/optim.rs, `adam_chunk`: the same operations in the same order) -------

struct AdamK {
    float b1, b2, eps, bc1, bc2_sqrt, lr, l2, decoupled, scale;
};

// One element of Adam's update: p, m, v at i updated from g.
__device__ __forceinline__ void adam_element(const AdamK &k, const unsigned long long i, float *p,
                                             const float *g, float *m, float *v) {
    const float gi = g[i] * k.scale + k.l2 * p[i];
    float pi = p[i];
    if (k.decoupled != 0.0f) pi *= 1.0f - k.lr * k.decoupled;
    const float mi = k.b1 * m[i] + (1.0f - k.b1) * gi;
    const float vi = k.b2 * v[i] + (1.0f - k.b2) * gi * gi;
    const float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - k.lr / k.bc1 * mi / denom;
}

// One tensor of `adam_multi` (gadms-nn's `AdamTensor`): its blocks are first_block,
// first_block + 1, ..., each updating ADAM_CHUNK elements.
struct AdamTensor {
    unsigned long long n, first_block;
    float *p;
    const float *g;
    float *m, *v;
    AdamK k;
};

#define ADAM_CHUNK 4096

// Every parameter tensor of a model in one launch: block b finds its tensor (the last with
// first_block <= b; `ts` is sorted by first_block) and updates its chunk of ADAM_CHUNK elements,
// each element with adam_element.
extern "C" __global__ void adam_multi(const AdamTensor *ts, const int count) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (ts[mid].first_block <= blockIdx.x) lo = mid;
        else hi = mid - 1;
    }
    const AdamTensor &t = ts[lo];
    const unsigned long long start = (blockIdx.x - t.first_block) * (unsigned long long)ADAM_CHUNK;
    const unsigned long long end = min(start + ADAM_CHUNK, t.n);
    for (unsigned long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        adam_element(t.k, i, t.p, t.g, t.m, t.v);
    }
}

// Σ g² of `count` tensors in f64 in one launch, SQ_BLOCKS blocks each: block b sums tensor
// b / SQ_BLOCKS (`n[t]` elements at `g[t]`) with a grid stride of SQ_BLOCKS blocks, then a block
// sum into part[b]. The grid per tensor is fixed, so the sum's order never changes.
#define SQ_BLOCKS 256
extern "C" __global__ void sum_squares_multi(const unsigned long long *n, const float *const *g,
                                             double *part) {
    __shared__ double red[256];
    const unsigned int t = blockIdx.x / SQ_BLOCKS, b = blockIdx.x % SQ_BLOCKS;
    const float *gt = g[t];
    double s = 0.0;
    for (unsigned long long i = b * (unsigned long long)blockDim.x + threadIdx.x; i < n[t];
         i += (unsigned long long)blockDim.x * SQ_BLOCKS) {
        const double x = (double)gt[i];
        s += x * x;
    }
    red[threadIdx.x] = s;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = red[0];
}
