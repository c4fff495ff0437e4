/* What both kernels share: the network as the Python side binds it (Net), the activation, optimizer and
 * finiteness helpers, and the build's clones. Included by mlp_online.c and mlp_batch.c only. */
#ifndef CADENCE_MLP_COMMON_H
#define CADENCE_MLP_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define HAVE_MXCSR 1
#endif

enum { ACT_RELU = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_LEAKY_RELU = 3 };
enum { LOSS_CROSS_ENTROPY = 0, LOSS_MSE = 1 };
enum { OPT_SGD = 0, OPT_MOMENTUM = 1, OPT_NESTEROV = 2, OPT_ADAM = 3, OPT_ADAMW = 4 };

/* Bumped whenever Net or the entry point changes: the loader refuses a kernel built from other source. */
#define CADENCE_KERNEL_ABI 3

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

/* The Fortran BLAS sgemm (column-major, 32-bit integers) of the library torch links: the batch kernel gets
 * its address from the Python side (the symbol torch's own library exports), so this source needs no BLAS
 * headers or link flags, and the products run in the very library, and on the threads, torch's do. */
typedef void (*sgemm_fn)(const char *transa, const char *transb, const int *m, const int *n, const int *k,
                         const float *alpha, const float *a, const int *lda, const float *b, const int *ldb,
                         const float *beta, float *c, const int *ldc);

typedef struct {
    int64_t n_layers;         /* Linear layers; hidden activations sit between them */
    const int64_t *dims;      /* n_layers + 1 widths: inputs, hidden..., outputs */
    float **w, **b;           /* layer l: w[l] is dims[l+1] x dims[l] row-major (nn.Linear.weight), b[l] */
    float **s1w, **s1b;       /* momentum buffer, or Adam's exp_avg (NULL for plain SGD) */
    float **s2w, **s2b;       /* Adam's exp_avg_sq */
    int64_t act, loss, opt;
    float lr, momentum, weight_decay, beta1, beta2, eps;
    double step;              /* Adam: updates already taken (torch's state["step"]) */
    float *work;              /* scratch: 3 * sum(dims) floats (online); batch: see mlp_batch.c */
    int64_t status;           /* out: STATUS_* of the last call */
    sgemm_fn sgemm;           /* batch kernel only */
    int64_t max_rows;         /* batch kernel only: rows per product (work is sized for them) */
} Net;

#ifdef HAVE_MXCSR /* flush to zero (bit 15), denormals are zero (bit 6), for this thread, restored after */
#define FLUSH_DENORMALS() const unsigned int saved_mxcsr = _mm_getcsr(); _mm_setcsr(saved_mxcsr | 0x8040)
#define RESTORE_DENORMALS() _mm_setcsr(saved_mxcsr)
#else
#define FLUSH_DENORMALS()
#define RESTORE_DENORMALS()
#endif

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

#endif
