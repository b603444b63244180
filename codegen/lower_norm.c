/* lower_norm.c — softmax, layer_norm, batch_norm, cross_entropy and its gradient: one work
 * item per row (per channel for batch_norm), sequential loops along the row.
 *
 * Numerics: row maxima in f32 (exact); exponentials in f32; sums, means, variances and the
 * cross-entropy total in double, so statistics over long rows (vocabulary-sized logits, a
 * whole batch of a channel) stay within the kernel tests' 1e-5 of the float64 reference.
 * cross_entropy is one work item (its mean couples every row); ids outside [0, V) make the
 * loss NaN instead of reading out of bounds. */
#include <math.h>

#include "lower.h"

static const KExpr *i64(KernelDesc *kd, int64_t v) { return ke_int(kd, v); }

/* acc = max over j < n of buf[base + j*stride] (a fresh f32 variable). */
static const KExpr *row_max(KernelDesc *kd, int buf, const KExpr *base, int64_t n,
                            int64_t stride) {
    int m = kd_var(kd, "mx", KT_F32), j = kd_var(kd, "j", KT_I64);
    ks_decl(kd, m, ke_f32(kd, -INFINITY));
    ks_for_n(kd, j, n);
    const KExpr *v = kd_let(kd, "v", ke_load(kd, buf, KADD(kd, base, KMUL(kd, ke_var(kd, j), i64(kd, stride)))));
    ks_assign(kd, m, ke_select(kd, ke_bin(kd, KB_GT, v, ke_var(kd, m)), v, ke_var(kd, m)));
    ks_end(kd);
    return ke_var(kd, m);
}

/* sum over j < n of exp(buf[base + j*stride] - mx), in double. */
static const KExpr *row_expsum(KernelDesc *kd, int buf, const KExpr *base, int64_t n,
                               int64_t stride, const KExpr *mx) {
    int s = kd_var(kd, "sum", KT_F64), j = kd_var(kd, "j", KT_I64);
    ks_decl(kd, s, ke_f64(kd, 0));
    ks_for_n(kd, j, n);
    const KExpr *x = ke_load(kd, buf, KADD(kd, base, KMUL(kd, ke_var(kd, j), i64(kd, stride))));
    ks_assign(kd, s, KADD(kd, ke_var(kd, s), ke_call(kd, KF_EXP, KSUB(kd, x, mx))));
    ks_end(kd);
    return ke_var(kd, s);
}

static void softmax(KernelDesc *kd, const Op *op) {
    const Shape *s = &op->inputs[0]->shape;
    int axis = axis_normalize(op_int(op, "axis"), s->rank);
    int64_t outer = dims_product(s, 0, axis), n = s->dims[axis], inner = dims_product(s, axis + 1, s->rank);
    int w = kd_var(kd, "w", KT_I64), j = kd_var(kd, "j", KT_I64);
    ks_parfor(kd, w, outer * inner);
    const KExpr *wv = ke_var(kd, w);
    const KExpr *base = kd_let(kd, "base", KADD(kd, KMUL(kd, KDIV(kd, wv, i64(kd, inner)), i64(kd, n * inner)),
                                               KMOD(kd, wv, i64(kd, inner))));
    const KExpr *mx = row_max(kd, 1, base, n, inner);
    const KExpr *sum = row_expsum(kd, 1, base, n, inner, mx);
    ks_for_n(kd, j, n);
    const KExpr *at = kd_let(kd, "at", KADD(kd, base, KMUL(kd, ke_var(kd, j), i64(kd, inner))));
    ks_store(kd, 0, at, KDIV(kd, ke_call(kd, KF_EXP, KSUB(kd, ke_load(kd, 1, at), mx)), sum));
    ks_end(kd);
    ks_end(kd);
}

static void layer_norm(KernelDesc *kd, const Op *op) {
    const Shape *s = &op->inputs[0]->shape;
    int64_t d = s->dims[s->rank - 1], rows = shape_numel(s) / d;
    int r = kd_var(kd, "r", KT_I64), j = kd_var(kd, "j", KT_I64);
    int mean = kd_var(kd, "mean", KT_F64), var = kd_var(kd, "var", KT_F64);
    ks_parfor(kd, r, rows);
    const KExpr *base = kd_let(kd, "base", KMUL(kd, ke_var(kd, r), i64(kd, d)));
    const KExpr *x = ke_cast(kd, KT_F64, ke_load(kd, 1, KADD(kd, base, ke_var(kd, j))));
    ks_decl(kd, mean, ke_f64(kd, 0));
    ks_for_n(kd, j, d);
    ks_assign(kd, mean, KADD(kd, ke_var(kd, mean), x));
    ks_end(kd);
    ks_assign(kd, mean, KDIV(kd, ke_var(kd, mean), ke_f64(kd, (double)d)));
    ks_decl(kd, var, ke_f64(kd, 0));
    ks_for_n(kd, j, d);
    const KExpr *dv = kd_let(kd, "dv", KSUB(kd, x, ke_var(kd, mean)));
    ks_assign(kd, var, KADD(kd, ke_var(kd, var), KMUL(kd, dv, dv)));
    ks_end(kd);
    const KExpr *inv = kd_let(kd, "inv", KDIV(kd, ke_f64(kd, 1), ke_call(kd, KF_SQRT,
                              KADD(kd, KDIV(kd, ke_var(kd, var), ke_f64(kd, (double)d)),
                                   ke_f64(kd, op_float(op, "eps"))))));
    ks_for_n(kd, j, d);
    const KExpr *norm = KMUL(kd, KSUB(kd, x, ke_var(kd, mean)), inv);
    ks_store(kd, 0, KADD(kd, base, ke_var(kd, j)),
             KADD(kd, KMUL(kd, norm, ke_load(kd, 2, ke_var(kd, j))), ke_load(kd, 3, ke_var(kd, j))));
    ks_end(kd);
    ks_end(kd);
}

/* One work item per channel; training mode computes the batch statistics (biased variance). */
static void batch_norm(KernelDesc *kd, const Op *op) {
    const Shape *s = &op->inputs[0]->shape;
    int64_t n = s->dims[0], c = s->dims[1], inner = dims_product(s, 2, s->rank);
    int ch = kd_var(kd, "ch", KT_I64), b = kd_var(kd, "b", KT_I64), k = kd_var(kd, "k", KT_I64);
    int mean = kd_var(kd, "mean", KT_F64), var = kd_var(kd, "var", KT_F64);
    ks_parfor(kd, ch, c);
    const KExpr *chv = ke_var(kd, ch);
    const KExpr *at = KADD(kd, KMUL(kd, KADD(kd, KMUL(kd, ke_var(kd, b), i64(kd, c)), chv), i64(kd, inner)),
                           ke_var(kd, k));
    const KExpr *x = ke_cast(kd, KT_F64, ke_load(kd, 1, at));
    if (op_bool(op, "training")) {
        double count = (double)(n * inner);
        ks_decl(kd, mean, ke_f64(kd, 0));
        ks_for_n(kd, b, n);
        ks_for_n(kd, k, inner);
        ks_assign(kd, mean, KADD(kd, ke_var(kd, mean), x));
        ks_end(kd);
        ks_end(kd);
        ks_assign(kd, mean, KDIV(kd, ke_var(kd, mean), ke_f64(kd, count)));
        ks_decl(kd, var, ke_f64(kd, 0));
        ks_for_n(kd, b, n);
        ks_for_n(kd, k, inner);
        const KExpr *dv = kd_let(kd, "dv", KSUB(kd, x, ke_var(kd, mean)));
        ks_assign(kd, var, KADD(kd, ke_var(kd, var), KMUL(kd, dv, dv)));
        ks_end(kd);
        ks_end(kd);
        ks_assign(kd, var, KDIV(kd, ke_var(kd, var), ke_f64(kd, count)));
    } else {
        ks_decl(kd, mean, ke_load(kd, 4, chv));
        ks_decl(kd, var, ke_load(kd, 5, chv));
    }
    const KExpr *inv = kd_let(kd, "inv", KDIV(kd, ke_f64(kd, 1), ke_call(kd, KF_SQRT,
                              KADD(kd, ke_var(kd, var), ke_f64(kd, op_float(op, "eps"))))));
    const KExpr *scale = kd_let(kd, "scale", KMUL(kd, inv, ke_load(kd, 2, chv)));
    const KExpr *shift = kd_let(kd, "shift", ke_cast(kd, KT_F64, ke_load(kd, 3, chv)));
    ks_for_n(kd, b, n);
    ks_for_n(kd, k, inner);
    ks_store(kd, 0, at, KADD(kd, KMUL(kd, KSUB(kd, x, ke_var(kd, mean)), scale), shift));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
}

static void cross_entropy(KernelDesc *kd, const Op *op) {
    int64_t n = op->inputs[0]->shape.dims[0], v = op->inputs[0]->shape.dims[1];
    int64_t ignore = op_int(op, "ignore_index");
    int w = kd_var(kd, "w", KT_I64), r = kd_var(kd, "r", KT_I64);
    int total = kd_var(kd, "total", KT_F64), count = kd_var(kd, "count", KT_I64);
    ks_parfor(kd, w, 1);
    ks_decl(kd, total, ke_f64(kd, 0));
    ks_decl(kd, count, i64(kd, 0));
    ks_for_n(kd, r, n);
    const KExpr *t = kd_let(kd, "t", ke_cast(kd, KT_I64, ke_load(kd, 2, ke_var(kd, r))));
    ks_if(kd, ke_bin(kd, KB_NE, t, i64(kd, ignore)));
    ks_assign(kd, count, KADD(kd, ke_var(kd, count), i64(kd, 1)));
    ks_if(kd, ke_bin(kd, KB_AND, ke_bin(kd, KB_GE, t, i64(kd, 0)), ke_bin(kd, KB_LT, t, i64(kd, v))));
    const KExpr *base = kd_let(kd, "base", KMUL(kd, ke_var(kd, r), i64(kd, v)));
    const KExpr *mx = row_max(kd, 1, base, v, 1);
    const KExpr *sum = row_expsum(kd, 1, base, v, 1, mx);
    /* -log_softmax at the target = max + log(sum) - logit */
    ks_assign(kd, total, KADD(kd, ke_var(kd, total),
                              KSUB(kd, KADD(kd, ke_cast(kd, KT_F64, mx), ke_call(kd, KF_LOG, sum)),
                                   ke_load(kd, 1, KADD(kd, base, t)))));
    ks_else(kd);
    ks_assign(kd, total, ke_f64(kd, NAN));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    ks_store(kd, 0, i64(kd, 0),
             ke_select(kd, ke_bin(kd, KB_GT, ke_var(kd, count), i64(kd, 0)),
                       KDIV(kd, ke_var(kd, total), ke_cast(kd, KT_F64, ke_var(kd, count))),
                       ke_f64(kd, NAN)));
    ks_end(kd);
}

/* Row r: (softmax - onehot(target)) * dy / count, zero where target == ignore_index. Each
 * item counts the counted rows itself (N is small next to N*V). */
static void cross_entropy_grad(KernelDesc *kd, const Op *op) {
    int64_t n = op->inputs[1]->shape.dims[0], v = op->inputs[1]->shape.dims[1];
    int64_t ignore = op_int(op, "ignore_index");
    int r = kd_var(kd, "r", KT_I64), q = kd_var(kd, "q", KT_I64), j = kd_var(kd, "j", KT_I64);
    int count = kd_var(kd, "count", KT_I64);
    ks_parfor(kd, r, n);
    ks_decl(kd, count, i64(kd, 0));
    ks_for_n(kd, q, n);
    ks_if(kd, ke_bin(kd, KB_NE, ke_load(kd, 3, ke_var(kd, q)), ke_i32(kd, ignore)));
    ks_assign(kd, count, KADD(kd, ke_var(kd, count), i64(kd, 1)));
    ks_end(kd);
    ks_end(kd);
    const KExpr *scale = kd_let(kd, "scale", ke_select(kd, ke_bin(kd, KB_GT, ke_var(kd, count), i64(kd, 0)),
                                KDIV(kd, ke_cast(kd, KT_F64, ke_load(kd, 1, i64(kd, 0))),
                                     ke_cast(kd, KT_F64, ke_var(kd, count))),
                                ke_f64(kd, NAN)));
    const KExpr *t = kd_let(kd, "t", ke_cast(kd, KT_I64, ke_load(kd, 3, ke_var(kd, r))));
    const KExpr *base = kd_let(kd, "base", KMUL(kd, ke_var(kd, r), i64(kd, v)));
    const KExpr *at = KADD(kd, base, ke_var(kd, j));
    ks_if(kd, ke_bin(kd, KB_EQ, t, i64(kd, ignore)));
    ks_for_n(kd, j, v);
    ks_store(kd, 0, at, ke_f32(kd, 0));
    ks_end(kd);
    ks_else(kd);
    const KExpr *mx = row_max(kd, 2, base, v, 1);
    const KExpr *sum = row_expsum(kd, 2, base, v, 1, mx);
    ks_for_n(kd, j, v);
    const KExpr *p = KDIV(kd, ke_call(kd, KF_EXP, KSUB(kd, ke_load(kd, 2, at), mx)), sum);
    const KExpr *hot = ke_select(kd, ke_bin(kd, KB_EQ, ke_var(kd, j), t), ke_f64(kd, 1), ke_f64(kd, 0));
    ks_store(kd, 0, at, KMUL(kd, KSUB(kd, p, hot), scale));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
}

int lower_norm(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n) {
    switch (op->kind) {
    case OP_SOFTMAX: softmax(kd, op); return 0;
    case OP_LAYER_NORM: layer_norm(kd, op); return 0;
    case OP_BATCH_NORM: batch_norm(kd, op); return 0;
    case OP_CROSS_ENTROPY: cross_entropy(kd, op); return 0;
    case OP_CROSS_ENTROPY_GRAD: cross_entropy_grad(kd, op); return 0;
    default: snprintf(err, n, "not a normalization"); return -1;
    }
}
