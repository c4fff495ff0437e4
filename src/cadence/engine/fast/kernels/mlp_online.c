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
 *
 * Where the time goes (issue 15): the first layer's weights (784 x 128 floats, 401 KB: 92% of the model) sit
 * in L2, and an update must read them for the forward pass and read and write them for the update. So
 * (1) the first layer's update of sample t is fused with its forward pass of sample t+1: each block of rows is
 * updated, then dotted with the next input while still in L1, one trip through L2 instead of two; (2) the
 * products run four rows at a time, four independent sums (one sum's chain of dependent FMAs is
 * latency-bound: 4 cycles per vector); (3) denormals are flushed for the call (FTZ/DAZ, restored after): an
 * Adam or momentum buffer decaying toward zero on a dead unit otherwise takes a microcode assist per entry,
 * 100x slower. A flushed value is below 1.2e-38, and no weight changes by it.
 */
#include "mlp_common.h"

int64_t cadence_mlp_online_abi(void) { return CADENCE_KERNEL_ABI; }

INLINE float dot(const float *restrict w, const float *restrict a, int64_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) s = fmaf(w[j], a[j], s);
    return s;
}

/* z[i] = w_i . a + b[i] for rows [lo, hi): four rows at a time, each row summed exactly as `dot` sums it
 * (four reductions in one loop are four independent chains of FMAs sharing each load of a). */
INLINE void rows_dot(const float *restrict w, const float *restrict b, const float *restrict a, int64_t in,
                     int64_t lo, int64_t hi, float *restrict z) {
    int64_t i = lo;
    for (; i + 4 <= hi; i += 4) {
        const float *w0 = w + i * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int64_t j = 0; j < in; j++) {
            s0 = fmaf(w0[j], a[j], s0);
            s1 = fmaf(w1[j], a[j], s1);
            s2 = fmaf(w2[j], a[j], s2);
            s3 = fmaf(w3[j], a[j], s3);
        }
        z[i] = s0 + b[i];
        z[i + 1] = s1 + b[i + 1];
        z[i + 2] = s2 + b[i + 2];
        z[i + 3] = s3 + b[i + 3];
    }
    for (; i < hi; i++) z[i] = dot(w + i * in, a, in) + b[i];
}

/* Exported for bench/ceiling.py: `reps` products of the kernel's own forward (z = W a + b, W out x in), so
 * the bench's ceiling counts the kernel's inner products among the machine's best measured rates. */
CLONES void cadence_mlp_rows_dot(const float *w, const float *b, const float *a, int64_t out, int64_t in,
                                 float *z, int64_t reps) {
    for (int64_t r = 0; r < reps; r++) rows_dot(w, b, a, in, 0, out, z);
}

/* Whether every entry of a layer's gradient is finite: the weight gradient's entries are the products
 * d[i] * a[j], and the bias gradient is d. Rounding is monotone, so the largest product is
 * max|d| * max|a| rounded, and it is finite exactly when all of them are. */
INLINE int gradient_finite(const float *d, int64_t n_out, const float *a, int64_t n_in) {
    const float md = absmax(d, n_out), ma = absmax(a, n_in);
    return isfinite(md) && isfinite(ma) && isfinite(md * ma);
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

/* Update rows [lo, hi) of layer l (and their biases) with output gradient `delta` and input `a`. */
INLINE void update_rows(const Net *net, int64_t l, const float *restrict delta, const float *restrict a,
                        int64_t lo, int64_t hi, int sparse, float step_size, float bc2_sqrt) {
    const int64_t in = net->dims[l];
    for (int64_t i = lo; i < hi; i++) {
        const float d = delta[i];
        /* Plain SGD: a zero gradient row changes nothing (w + (-lr) * 0 == w), so skip it. */
        if (sparse && d == 0.0f) continue;
        float *s1 = net->s1w ? net->s1w[l] + i * in : NULL, *s2 = net->s2w ? net->s2w[l] + i * in : NULL;
        update_row(net, net->w[l] + i * in, s1, s2, d, a, in, step_size, bc2_sqrt);
    }
    /* Biases: the gradient row is delta itself (a == 1). */
    const float one = 1.0f;
    for (int64_t i = lo; i < hi; i++) {
        float *s1 = net->s1b ? net->s1b[l] + i : NULL, *s2 = net->s2b ? net->s2b[l] + i : NULL;
        update_row(net, net->b[l] + i, s1, s2, delta[i], &one, 1, step_size, bc2_sqrt);
    }
}

/* Train `n_updates` updates of one sample each, rows idx[0..n_updates) of X. Writes each loss to `losses`.
 * Stops before the first update whose target is out of range (STATUS_BAD_TARGET) or whose loss or gradient
 * is not finite (STATUS_NONFINITE), leaving weights and optimizer state exactly as they were: every layer's
 * gradient is known, and checked, before the first write. Returns the number of updates applied.
 *
 * The first layer's update of sample u is fused with its forward pass of sample u + 1 (which only reads that
 * layer's new weights and the next input row): the next pre-activation is left in acts[1]. Rows are updated
 * and dotted in the same blocks of four as an unfused forward pass, so the sums do not depend on where a
 * call begins or ends. */
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
    FLUSH_DENORMALS();
    net->status = STATUS_DONE;
    const int sparse = net->opt == OPT_SGD && net->weight_decay == 0.0f;
    int64_t u = 0;
    int have_next = 0; /* acts[1] already holds this update's first-layer pre-activation */
    for (; u < n_updates; u++) {
        const int64_t row = idx[u];
        if (net->loss == LOSS_CROSS_ENTROPY && (yi[row] < 0 || yi[row] >= dims[L])) {
            net->status = STATUS_BAD_TARGET;
            break;
        }
        acts[0] = (float *)(X + row * n_features);
        for (int64_t l = 0; l < L; l++) {
            const int64_t in = dims[l], out = dims[l + 1];
            float *z = acts[l + 1];
            if (l > 0 || !have_next) rows_dot(net->w[l], net->b[l], acts[l], in, 0, out, z);
            if (l < L - 1)
                for (int64_t i = 0; i < out; i++) z[i] = act_fwd(net->act, z[i]);
        }
        have_next = 0;
        const float loss = loss_and_delta(net, acts[L], dims[L], yi, yf, row, deltas[L - 1]);
        if (!isfinite(loss)) {
            net->status = STATUS_NONFINITE;
            break;
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
        int finite = 1;
        for (int64_t l = 0; l < L && finite; l++) finite = gradient_finite(deltas[l], dims[l + 1], acts[l], dims[l]);
        if (!finite) {
            net->status = STATUS_NONFINITE;
            break;
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
        for (int64_t l = L - 1; l > 0; l--)
            update_rows(net, l, deltas[l], acts[l], 0, dims[l + 1], sparse, step_size, bc2_sqrt);
        /* The first layer: its rows updated, then (while they are in L1) dotted with the next input. acts[1]
         * (this sample's hidden output) is no longer read: the layers above are updated. */
        const int64_t in = dims[0], out = dims[1];
        const float *next = u + 1 < n_updates ? X + idx[u + 1] * n_features : NULL;
        for (int64_t lo = 0; lo < out; lo += 4) {
            const int64_t hi = lo + 4 < out ? lo + 4 : out;
            update_rows(net, 0, deltas[0], acts[0], lo, hi, sparse, step_size, bc2_sqrt);
            if (next) rows_dot(net->w[0], net->b[0], next, in, lo, hi, acts[1]);
        }
        have_next = next != NULL;
    }
    RESTORE_DENORMALS();
    return u;
}
