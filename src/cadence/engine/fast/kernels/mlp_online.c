/* Online (one sample per update) training of a dense MLP: forward, loss, hand-derived backward and the
 * optimizer update fused row by row, for a run of consecutive updates in one call.
 *
 * Plain C with no Python headers: cadence.engine.fast.compiled loads it with ctypes, so it builds wherever gcc
 * does. The arithmetic follows torch's definitions (nn.Linear, F.cross_entropy / F.mse_loss with reduction
 * "sum", torch.optim.SGD / Adam / AdamW single-tensor updates) so weights match autograd to rounding.
 * Compiled with -ffp-contract=off: every fused multiply-add below is written out as fmaf on purpose.
 *
 * Portable build: no -march=native. On x86-64 the entry point is cloned for x86-64-v4 (AVX-512), v3 (AVX2 +
 * FMA) and the baseline, and the loader picks the clone for the CPU it runs on (GCC target_clones, an ifunc).
 * fmaf is exactly rounded in every clone (an instruction in v3/v4, libm's in the baseline), so the clones
 * differ only in how many lanes the dot products sum at once.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { ACT_RELU = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_LEAKY_RELU = 3 };
enum { LOSS_CROSS_ENTROPY = 0, LOSS_MSE = 1 };
enum { OPT_SGD = 0, OPT_MOMENTUM = 1, OPT_NESTEROV = 2, OPT_ADAM = 3, OPT_ADAMW = 4 };

/* Bumped whenever Net or the entry point changes: the loader refuses a kernel built from other source. */
#define CADENCE_KERNEL_ABI 2

/* Why a call returned before its last update (Net.status). */
enum { STATUS_DONE = 0, STATUS_NONFINITE = 1, STATUS_BAD_TARGET = 2 };

#ifdef CLONES /* -DCLONES= builds for the compiler's target alone (to try one instruction set) */
#elif defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif
/* Helpers are inlined into each clone, so they are compiled for its instruction set too. */
#define INLINE static inline __attribute__((always_inline))

int64_t cadence_mlp_online_abi(void) { return CADENCE_KERNEL_ABI; }

typedef struct {
    int64_t n_layers;         /* Linear layers; hidden activations sit between them */
    const int64_t *dims;      /* n_layers + 1 widths: inputs, hidden..., outputs */
    float **w, **b;           /* layer l: w[l] is dims[l+1] x dims[l] row-major (nn.Linear.weight), b[l] */
    float **s1w, **s1b;       /* momentum buffer, or Adam's exp_avg (NULL for plain SGD) */
    float **s2w, **s2b;       /* Adam's exp_avg_sq */
    int64_t act, loss, opt;
    float lr, momentum, weight_decay, beta1, beta2, eps;
    double step;              /* Adam: updates already taken (torch's state["step"]) */
    float *work;              /* 3 * sum(dims) floats of scratch */
    int64_t status;           /* out: STATUS_* of the last call */
} Net;

INLINE float act_fwd(int64_t act, float z) {
    switch (act) {
    case ACT_RELU: return z < 0.0f ? 0.0f : z; /* NaN passes through, as in torch.relu */
    case ACT_TANH: return tanhf(z);
    case ACT_SIGMOID: return 1.0f / (1.0f + expf(-z));
    default: return z > 0.0f ? z : z * 0.01f;
    }
}

/* d(activation)/dz written through the output a, as torch's backward formulas do. */
INLINE float act_grad(int64_t act, float a) {
    switch (act) {
    case ACT_RELU: return a > 0.0f ? 1.0f : 0.0f;
    case ACT_TANH: return 1.0f - a * a;
    case ACT_SIGMOID: return (1.0f - a) * a;
    default: return a > 0.0f ? 1.0f : 0.01f;
    }
}

INLINE float dot(const float *restrict w, const float *restrict a, int64_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) s = fmaf(w[j], a[j], s);
    return s;
}

/* Largest |x[j]|, or NaN when any entry is not finite (x - x is NaN exactly for inf and NaN). */
INLINE float absmax(const float *restrict x, int64_t n) {
    float m = 0.0f, bad = 0.0f;
#pragma omp simd reduction(max : m) reduction(+ : bad)
    for (int64_t j = 0; j < n; j++) {
        const float v = fabsf(x[j]);
        m = v > m ? v : m;
        bad += x[j] - x[j];
    }
    return m + bad;
}

/* Whether every entry of a layer's gradient is finite: the weight gradient's entries are the products
 * d[i] * a[j], and the bias gradient is d. Rounding is monotone, so the largest product is
 * max|d| * max|a| rounded, and it is finite exactly when all of them are. */
INLINE int gradient_finite(const float *d, int64_t n_out, const float *a, int64_t n_in) {
    const float md = absmax(d, n_out), ma = absmax(a, n_in);
    return isfinite(md) && isfinite(ma) && isfinite(md * ma);
}

/* One row of one layer: gradient row g = d * a (+ weight decay), optimizer update in place. */
INLINE void update_row(const Net *net, float *restrict w, float *restrict s1, float *restrict s2, float d,
                       const float *restrict a, int64_t n, float step_size, float bc2_sqrt) {
    const float nlr = -net->lr, wd = net->weight_decay, m = net->momentum;
    switch (net->opt) {
    case OPT_SGD:
        if (wd == 0.0f) {
#pragma omp simd
            for (int64_t j = 0; j < n; j++) w[j] = fmaf(d * a[j], nlr, w[j]);
        } else {
#pragma omp simd
            for (int64_t j = 0; j < n; j++) w[j] = fmaf(fmaf(w[j], wd, d * a[j]), nlr, w[j]);
        }
        break;
    case OPT_MOMENTUM:
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            float g = fmaf(w[j], wd, d * a[j]);
            float v = s1[j] * m + g;
            s1[j] = v;
            w[j] = fmaf(v, nlr, w[j]);
        }
        break;
    case OPT_NESTEROV:
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            float g = fmaf(w[j], wd, d * a[j]);
            float v = s1[j] * m + g;
            s1[j] = v;
            w[j] = fmaf(fmaf(v, m, g), nlr, w[j]);
        }
        break;
    default: { /* Adam, AdamW */
        const float b1w = 1.0f - net->beta1, b2 = net->beta2, b2w = 1.0f - net->beta2, eps = net->eps;
        const float adam_wd = net->opt == OPT_ADAM ? wd : 0.0f;
        const float decay = net->opt == OPT_ADAMW ? 1.0f - net->lr * wd : 1.0f;
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            float p = w[j] * decay;
            float g = fmaf(p, adam_wd, d * a[j]);
            float mm = s1[j] + b1w * (g - s1[j]);
            float vv = s2[j] * b2 + b2w * g * g;
            s1[j] = mm;
            s2[j] = vv;
            w[j] = p + (-step_size) * (mm / (sqrtf(vv) / bc2_sqrt + eps));
        }
    }
    }
}

/* Loss of one sample (reduction "sum" over outputs) and its gradient wrt the outputs, into `delta`. */
INLINE float loss_and_delta(const Net *net, const float *out, int64_t k, const int64_t *yi, const float *yf,
                            int64_t row, float *delta) {
    if (net->loss == LOSS_CROSS_ENTROPY) {
        float mx = out[0], s = 0.0f;
        for (int64_t c = 1; c < k; c++) mx = out[c] > mx ? out[c] : mx;
        for (int64_t c = 0; c < k; c++) s += expf(out[c] - mx);
        /* As torch's log_softmax: log p = x - (max + log(sum exp(x - max))). */
        const float shift = mx + logf(s);
        const int64_t y = yi[row];
        for (int64_t c = 0; c < k; c++) delta[c] = expf(out[c] - shift);
        delta[y] -= 1.0f;
        return -(out[y] - shift);
    }
    float total = 0.0f;
    for (int64_t c = 0; c < k; c++) {
        const float e = out[c] - yf[row * k + c];
        total += e * e;
        delta[c] = 2.0f * e;
    }
    return total;
}

/* Train `n_updates` updates of one sample each, rows idx[0..n_updates) of X. Writes each loss to `losses`.
 * Stops before the first update whose target is out of range (STATUS_BAD_TARGET) or whose loss or gradient
 * is not finite (STATUS_NONFINITE), leaving weights and optimizer state exactly as they were: every layer's
 * gradient is known, and checked, before the first write. Returns the number of updates applied. */
CLONES int64_t cadence_mlp_online(Net *net, const float *X, int64_t n_features, const int64_t *yi,
                                  const float *yf, const int64_t *idx, int64_t n_updates, float *losses) {
    const int64_t L = net->n_layers;
    const int64_t *dims = net->dims;
    int64_t total = 0;
    for (int64_t l = 0; l <= L; l++) total += dims[l];
    /* acts[l] for l >= 1 live in work; acts[0] is the input row itself. deltas[l] is the gradient wrt
     * layer l's output (dims[l + 1] floats). */
    float *acts[64], *deltas[64];
    {
        float *p = net->work, *q = net->work + total;
        for (int64_t l = 0; l <= L; l++) {
            acts[l] = p;
            p += dims[l];
        }
        for (int64_t l = 0; l < L; l++) {
            deltas[l] = q;
            q += dims[l + 1];
        }
    }
    net->status = STATUS_DONE;
    const int sparse = net->opt == OPT_SGD && net->weight_decay == 0.0f;
    for (int64_t u = 0; u < n_updates; u++) {
        const int64_t row = idx[u];
        if (net->loss == LOSS_CROSS_ENTROPY && (yi[row] < 0 || yi[row] >= dims[L])) {
            net->status = STATUS_BAD_TARGET;
            return u;
        }
        acts[0] = (float *)(X + row * n_features);
        for (int64_t l = 0; l < L; l++) {
            const int64_t in = dims[l], out = dims[l + 1];
            const float *w = net->w[l], *b = net->b[l], *a = acts[l];
            float *z = acts[l + 1];
            for (int64_t i = 0; i < out; i++) z[i] = dot(w + i * in, a, in) + b[i];
            if (l < L - 1)
                for (int64_t i = 0; i < out; i++) z[i] = act_fwd(net->act, z[i]);
        }
        const float loss = loss_and_delta(net, acts[L], dims[L], yi, yf, row, deltas[L - 1]);
        if (!isfinite(loss)) {
            net->status = STATUS_NONFINITE;
            return u;
        }

        /* Backward through the old weights: the input gradient of layer l, times the activation's
         * derivative, is the output gradient of layer l - 1. */
        for (int64_t l = L - 1; l > 0; l--) {
            const int64_t in = dims[l], out = dims[l + 1];
            float *restrict below = deltas[l - 1];
            memset(below, 0, sizeof(float) * in);
            for (int64_t i = 0; i < out; i++) {
                const float d = deltas[l][i];
                /* Plain SGD skips zero gradient rows below; their share of `below` is zero too. */
                if (sparse && d == 0.0f) continue;
                const float *restrict w = net->w[l] + i * in;
#pragma omp simd
                for (int64_t j = 0; j < in; j++) below[j] = fmaf(d, w[j], below[j]);
            }
            for (int64_t j = 0; j < in; j++) below[j] *= act_grad(net->act, acts[l][j]);
        }
        for (int64_t l = 0; l < L; l++) {
            if (!gradient_finite(deltas[l], dims[l + 1], acts[l], dims[l])) {
                net->status = STATUS_NONFINITE;
                return u;
            }
        }
        losses[u] = loss;

        float step_size = 0.0f, bc2_sqrt = 1.0f;
        if (net->opt >= OPT_ADAM) {
            net->step += 1.0;
            const double bc1 = 1.0 - pow((double)net->beta1, net->step);
            const double bc2 = 1.0 - pow((double)net->beta2, net->step);
            step_size = (float)((double)net->lr / bc1);
            bc2_sqrt = (float)sqrt(bc2);
        }
        for (int64_t l = L - 1; l >= 0; l--) {
            const int64_t in = dims[l], out = dims[l + 1];
            const float *delta = deltas[l];
            for (int64_t i = 0; i < out; i++) {
                const float d = delta[i];
                /* Plain SGD: a zero gradient row changes nothing (w + (-lr) * 0 == w), so skip it. */
                if (sparse && d == 0.0f) continue;
                float *s1 = net->s1w ? net->s1w[l] + i * in : NULL, *s2 = net->s2w ? net->s2w[l] + i * in : NULL;
                update_row(net, net->w[l] + i * in, s1, s2, d, acts[l], in, step_size, bc2_sqrt);
            }
            /* Biases: the gradient row is delta itself (a == 1). */
            const float one = 1.0f;
            for (int64_t i = 0; i < out; i++) {
                float *s1 = net->s1b ? net->s1b[l] + i : NULL, *s2 = net->s2b ? net->s2b[l] + i : NULL;
                update_row(net, net->b[l] + i, s1, s2, delta[i], &one, 1, step_size, bc2_sqrt);
            }
        }
    }
    return n_updates;
}
