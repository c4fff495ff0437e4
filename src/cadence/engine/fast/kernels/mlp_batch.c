/* Updates of many samples (mini-batch, full-batch) for a dense MLP, a whole run of them in one call: gather,
 * forward with bias and activation, loss, backward, the finiteness check and the optimizer rule, with every
 * matrix product in torch's own BLAS (Net.sgemm) and every buffer allocated once by the caller.
 *
 * An update's chunks (the strategy's, at most Net.max_rows rows each) go through one after another, each
 * chunk's weight gradients summed into the gradient buffers in place (sgemm's beta = 1): full-batch's exact
 * gradient in chunks of strategy.chunk_size, a mini-batch in one. The chunks are autograd's, so the sums round
 * as autograd's do (Adam magnifies any difference in tiny gradients). Consecutive rows (full-batch) are read
 * where they lie, others gathered.
 * The arithmetic follows torch's backward formulas (log_softmax + nll_loss, mse_loss, threshold_backward ...)
 * and the same single-tensor optimizer rules as the online kernel (update_row in mlp_common.h). Plain SGD on
 * one chunk takes its step inside the weight gradient's product (W -= lr d^T a, sgemm's alpha and beta): on
 * two threads the step written out after the product was a serial pass over weights the BLAS threads had
 * just split between two cores, and cost mini-batch 100 on Fashion-MNIST ~15% (issue 15: 265k -> 305k
 * samples/s).
 *
 * Work layout (floats), R = max_rows, d = dims: gathered inputs R*d[0]; each layer's output R*d[l+1]; each
 * layer's output gradient R*d[l+1]; each layer's weight and bias gradient d[l+1]*d[l] + d[l+1]; then
 * max(d[1:]) floats for a block's column sums.
 */
#include "mlp_common.h"

/* Row-major C (m x n) = op(A) op(B) + beta C through the column-major sgemm: C^T = op(B)^T op(A)^T.
 * The integers sit in 64-bit slots: a 32-bit-integer BLAS reads their low half (little-endian), a 64-bit one
 * (ILP64) all of it, so either kind computes the same (compiled.torch_sgemm checks the library with a
 * product before the kernel may use it). */
INLINE void gemm_scaled(const Net *net, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    net->sgemm(tb ? "T" : "N", ta ? "T" : "N", (const int *)&n, (const int *)&m, (const int *)&k, &alpha, b,
               (const int *)&ldb, a, (const int *)&lda, &beta, c, (const int *)&ldc);
}

INLINE void gemm(const Net *net, int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                 const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    gemm_scaled(net, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

/* Sum of squares of x, in double (no overflow for any float input; NaN or inf stay so). */
INLINE double sum_squares(const float *restrict x, int64_t n) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) s += (double)x[j] * (double)x[j];
    return s;
}

/* Half of float32's largest value, squared: a bound on a weight gradient's entries below it leaves room for
 * the rounding of its sums (as _SAFE in batch.py). */
#define SAFE_SQUARED (1.7014117e38 * 1.7014117e38)

/* Loss (sum over the block's rows) and d loss / d outputs for rows of outputs `out` (k wide), each scaled by
 * g = 1 / samples of the update, in autograd's order of operations (backward of sum / n, then of nll_loss
 * and log_softmax, or of mse_loss). */
INLINE float block_loss(const Net *net, const float *out, int64_t rows, int64_t k, const int64_t *yi,
                        const float *yf, const int64_t *idx, float g, float *delta) {
    float total = 0.0f;
    for (int64_t r = 0; r < rows; r++) {
        const float *o = out + r * k;
        float *d = delta + r * k;
        if (net->loss == LOSS_CROSS_ENTROPY) {
            float mx = o[0], s = 0.0f;
            for (int64_t c = 1; c < k; c++) mx = o[c] > mx ? o[c] : mx;
            for (int64_t c = 0; c < k; c++) s += expf(o[c] - mx);
            const float log_sum = logf(s);
            const int64_t y = yi[idx[r]];
            /* log_softmax as torch's CPU kernel rounds it, (x - max) - log(sum); then
             * _log_softmax_backward_data: grad - exp(log_p) * sum(grad), with grad = -g at the target. */
            for (int64_t c = 0; c < k; c++) d[c] = (c == y ? -g : 0.0f) - expf((o[c] - mx) - log_sum) * -g;
            total += -((o[y] - mx) - log_sum);
        } else {
            const float *t = yf + idx[r] * k;
            for (int64_t c = 0; c < k; c++) {
                const float e = o[c] - t[c];
                total += e * e;
                d[c] = 2.0f * e * g;
            }
        }
    }
    return total;
}

/* z = activation(z), one loop per activation so that each vectorizes. */
INLINE void act_forward(int64_t act, float *restrict z, int64_t n) {
    switch (act) {
    case ACT_RELU: /* NaN passes through, as in torch.relu */
#pragma omp simd
        for (int64_t j = 0; j < n; j++) z[j] = z[j] < 0.0f ? 0.0f : z[j];
        break;
    case ACT_LEAKY_RELU:
#pragma omp simd
        for (int64_t j = 0; j < n; j++) z[j] = z[j] > 0.0f ? z[j] : z[j] * 0.01f;
        break;
    default:
        for (int64_t j = 0; j < n; j++) z[j] = act_fwd(act, z[j]);
    }
}

/* The bias gradient: column sums of d (rows x out), rows added in order, into gb (first block) or added to
 * it (later blocks, through `tmp`, so that each block's sum is formed before it is added, as torch's
 * `grad += d.sum(0)` does). */
INLINE void column_sums(const float *restrict d, int64_t rows, int64_t out, float *restrict gb,
                        float *restrict tmp, int first) {
    float *restrict s = first ? gb : tmp;
    memcpy(s, d, sizeof(float) * out);
    for (int64_t r = 1; r < rows; r++)
#pragma omp simd
        for (int64_t i = 0; i < out; i++) s[i] += d[r * out + i];
    if (!first)
#pragma omp simd
        for (int64_t i = 0; i < out; i++) gb[i] += tmp[i];
}

/* below *= d(activation)/dz, from the activation's output a, as torch's backward formulas write it. */
INLINE void act_backward(int64_t act, float *restrict below, const float *restrict a, int64_t n) {
    switch (act) {
    case ACT_RELU: /* threshold_backward: exactly 0 where a <= 0, whatever below holds */
        for (int64_t j = 0; j < n; j++) below[j] = a[j] > 0.0f ? below[j] : 0.0f;
        break;
    case ACT_TANH:
        for (int64_t j = 0; j < n; j++) below[j] = below[j] * (1.0f - a[j] * a[j]);
        break;
    case ACT_SIGMOID:
        for (int64_t j = 0; j < n; j++) below[j] = below[j] * (1.0f - a[j]) * a[j];
        break;
    default:
        for (int64_t j = 0; j < n; j++) below[j] = a[j] > 0.0f ? below[j] : below[j] * 0.01f;
    }
}

/* Train `n_updates` updates; update u holds n_chunks[u] chunks, chunk c holds sizes[c] rows of X (counting
 * chunks over all updates), listed in idx (all the rows one after another). Each update's loss (mean over its
 * rows) goes to `losses`. Stops before the first update with a
 * label out of range (STATUS_BAD_TARGET) or a non-finite loss or gradient (STATUS_NONFINITE): its gradient is
 * formed and checked in the gradient buffers before any weight or optimizer state is written. Returns the
 * number of updates applied. */
CLONES int64_t cadence_mlp_batch(Net *net, const float *X, int64_t n_features, const int64_t *yi,
                                 const float *yf, const int64_t *idx, const int64_t *n_chunks,
                                 const int64_t *sizes, int64_t n_updates, float *losses) {
    const int64_t L = net->n_layers, R = net->max_rows;
    const int64_t *dims = net->dims;
    float *acts[65], *deltas[64], *gw[64], *gb[64];
    float *gathered = net->work, *p = net->work + R * dims[0];
    for (int64_t l = 1; l <= L; l++) {
        acts[l] = p;
        p += R * dims[l];
    }
    for (int64_t l = 0; l < L; l++) {
        deltas[l] = p;
        p += R * dims[l + 1];
    }
    int64_t widest = 0;
    for (int64_t l = 0; l < L; l++) {
        gw[l] = p;
        gb[l] = p + dims[l + 1] * dims[l];
        p += dims[l + 1] * dims[l] + dims[l + 1];
        widest = dims[l + 1] > widest ? dims[l + 1] : widest;
    }
    float *colsum = p; /* widest floats */
    net->status = STATUS_DONE;
    const int sparse_sgd = net->opt == OPT_SGD && net->weight_decay == 0.0f;
    int64_t u = 0, offset = 0;
    const int64_t *chunk_rows = sizes;
    for (; u < n_updates; u++) {
        const int64_t *rows_idx = idx + offset;
        int64_t n = 0;
        for (int64_t c = 0; c < n_chunks[u]; c++) n += chunk_rows[c];
        if (net->loss == LOSS_CROSS_ENTROPY)
            for (int64_t r = 0; r < n; r++)
                if (yi[rows_idx[r]] < 0 || yi[rows_idx[r]] >= dims[L]) {
                    net->status = STATUS_BAD_TARGET;
                    return u;
                }
        const float g = (float)(1.0 / (double)n);
        const int fused = sparse_sgd && n_chunks[u] == 1;
        float loss = 0.0f;
        for (int64_t c = 0, k = 0; c < n_chunks[u]; k += chunk_rows[c], c++) {
            const int64_t rows = chunk_rows[c]; /* at most R */
            const int64_t *block = rows_idx + k;
            int consecutive = 1;
            for (int64_t r = 1; r < rows && consecutive; r++) consecutive = block[r] == block[0] + r;
            if (consecutive) {
                acts[0] = (float *)(X + block[0] * n_features);
            } else {
                for (int64_t r = 0; r < rows; r++)
                    memcpy(gathered + r * n_features, X + block[r] * n_features, sizeof(float) * n_features);
                acts[0] = gathered;
            }
            for (int64_t l = 0; l < L; l++) { /* z = a W^T + b (addmm: the bias first, then beta = 1) */
                const int64_t in = dims[l], out = dims[l + 1];
                float *z = acts[l + 1];
                for (int64_t r = 0; r < rows; r++) memcpy(z + r * out, net->b[l], sizeof(float) * out);
                gemm(net, 0, 1, rows, out, in, acts[l], in, net->w[l], in, 1.0f, z, out);
                if (l < L - 1) act_forward(net->act, z, rows * out);
            }
            loss += block_loss(net, acts[L], rows, dims[L], yi, yf, block, g, deltas[L - 1]) / (float)n;
            /* Every layer's output gradient, through the old weights; then the weight and bias gradients. */
            for (int64_t l = L - 1; l > 0; l--) {
                const int64_t in = dims[l], out = dims[l + 1];
                gemm(net, 0, 0, rows, in, out, deltas[l], out, net->w[l], in, 0.0f, deltas[l - 1], in);
                act_backward(net->act, deltas[l - 1], acts[l], rows * in);
            }
            for (int64_t l = L - 1; l >= 0; l--) column_sums(deltas[l], rows, dims[l + 1], gb[l], colsum, k == 0);
            if (fused) {
                /* Plain SGD, one chunk: W -= lr * d^T a in the product itself (beta = 1), on the BLAS's threads,
                 * never formed as a gradient, once every weight gradient is known to be finite: its entries
                 * are bounded by |d|_F |a|_F (Cauchy-Schwarz), and the bias gradients are formed. Near
                 * float32's range (or NaN) the update takes the path below, which forms and checks them. */
                int safe = isfinite(loss);
                for (int64_t l = 0; l < L && safe; l++)
                    safe = isfinite(absmax(gb[l], dims[l + 1])) &&
                           sum_squares(deltas[l], rows * dims[l + 1]) * sum_squares(acts[l], rows * dims[l]) <
                               SAFE_SQUARED; /* false for NaN too */
                if (safe) {
                    losses[u] = loss;
                    for (int64_t l = 0; l < L; l++) {
                        const int64_t in = dims[l], out = dims[l + 1];
                        gemm_scaled(net, 1, 0, out, in, rows, -net->lr, deltas[l], out, acts[l], in, 1.0f,
                                    net->w[l], in);
                        update_row(net, net->b[l], NULL, NULL, 1.0f, gb[l], out, 0.0f, 1.0f);
                    }
                    goto next_update;
                }
            }
            for (int64_t l = L - 1; l >= 0; l--)
                gemm(net, 1, 0, dims[l + 1], dims[l], rows, deltas[l], dims[l + 1], acts[l], dims[l],
                     k == 0 ? 0.0f : 1.0f, gw[l], dims[l]);
        }
        int finite = isfinite(loss);
        for (int64_t l = 0; l < L && finite; l++)
            finite = isfinite(absmax(gw[l], dims[l + 1] * dims[l])) && isfinite(absmax(gb[l], dims[l + 1]));
        if (!finite) {
            net->status = STATUS_NONFINITE;
            return u;
        }
        losses[u] = loss;
        offset += n;
        chunk_rows += n_chunks[u];
        float step_size = 0.0f, bc2_sqrt = 1.0f;
        if (net->opt >= OPT_ADAM) {
            net->step += 1.0;
            step_size = (float)((double)net->lr / (1.0 - pow((double)net->beta1, net->step)));
            bc2_sqrt = (float)sqrt(1.0 - pow((double)net->beta2, net->step));
        }
        FLUSH_DENORMALS(); /* the optimizer rule only: the products run on BLAS threads of their own */
        for (int64_t l = 0; l < L; l++) {
            const int64_t nw = dims[l + 1] * dims[l];
            update_row(net, net->w[l], net->s1w ? net->s1w[l] : NULL, net->s2w ? net->s2w[l] : NULL, 1.0f, gw[l],
                       nw, step_size, bc2_sqrt);
            update_row(net, net->b[l], net->s1b ? net->s1b[l] : NULL, net->s2b ? net->s2b[l] : NULL, 1.0f, gb[l],
                       dims[l + 1], step_size, bc2_sqrt);
        }
        RESTORE_DENORMALS();
        continue;
    next_update:
        offset += n;
        chunk_rows += n_chunks[u];
    }
    return u;
}
