/* lower_pool.c — max_pool2d, adaptive_avg_pool2d and their gradients on NCHW planes.
 *
 * Forward: max_pool2d one work item per output row, adaptive_avg_pool2d per output element, a
 * loop over the window (padding never wins a max; PyTorch's adaptive bins start =
 * floor(i*in/out), end = ceil((i+1)*in/out)).
 * max_pool2d_grad: one work item per (n, c) plane, which zeroes its plane and adds each
 * window's dy at the window's first maximum, as the reference picks it; planes are disjoint,
 * so no atomics are needed. adaptive_avg_pool2d_grad: one work item per input element, which
 * sums the shares of the (few) bins that contain it. */
#include <math.h>

#include "lower.h"

static const KExpr *i64(KernelDesc *kd, int64_t v) { return ke_int(kd, v); }
static const KExpr *lt(KernelDesc *kd, const KExpr *a, const KExpr *b) { return ke_bin(kd, KB_LT, a, b); }
static const KExpr *ge(KernelDesc *kd, const KExpr *a, const KExpr *b) { return ke_bin(kd, KB_GE, a, b); }
static const KExpr *and_(KernelDesc *kd, const KExpr *a, const KExpr *b) { return ke_bin(kd, KB_AND, a, b); }

/* 0 <= y < h && 0 <= x < w */
static const KExpr *inside(KernelDesc *kd, const KExpr *y, const KExpr *x, int64_t h, int64_t w) {
    return and_(kd, and_(kd, ge(kd, y, i64(kd, 0)), lt(kd, y, i64(kd, h))),
                and_(kd, ge(kd, x, i64(kd, 0)), lt(kd, x, i64(kd, w))));
}

typedef struct Pool {
    int64_t h, w, ho, wo;
    const int64_t *k, *st, *pad;
} Pool;

static Pool pool_of(const Op *op, const Shape *x, const Shape *y) {
    int n = 0;
    Pool p = {x->dims[2], x->dims[3], y->dims[2], y->dims[3], NULL, NULL, NULL};
    if (op_attr_index(op->kind, "kernel") >= 0) {
        p.k = op_ints(op, "kernel", &n);
        p.st = op_ints(op, "stride", &n);
        p.pad = op_ints(op, "padding", &n);
    }
    return p;
}

/* Loops over window (oy, ox) of plane `base`: sets *m to the first maximum's value and *at to
 * its flat index within the plane (-1 if none). Opens and closes its own loops. */
static void window_argmax(KernelDesc *kd, const Pool *p, int buf, const KExpr *base,
                          const KExpr *oy, const KExpr *ox, int m, int at) {
    int ky = kd_var(kd, "ky", KT_I64), kx = kd_var(kd, "kx", KT_I64);
    ks_decl(kd, m, ke_f32(kd, -INFINITY));
    ks_decl(kd, at, i64(kd, -1));
    ks_for_n(kd, ky, p->k[0]);
    ks_for_n(kd, kx, p->k[1]);
    const KExpr *y = kd_let(kd, "y", KADD(kd, KSUB(kd, KMUL(kd, oy, i64(kd, p->st[0])), i64(kd, p->pad[0])), ke_var(kd, ky)));
    const KExpr *x = kd_let(kd, "x", KADD(kd, KSUB(kd, KMUL(kd, ox, i64(kd, p->st[1])), i64(kd, p->pad[1])), ke_var(kd, kx)));
    ks_if(kd, inside(kd, y, x, p->h, p->w));
    const KExpr *pos = kd_let(kd, "pos", KADD(kd, KMUL(kd, y, i64(kd, p->w)), x));
    const KExpr *v = kd_let(kd, "v", ke_load(kd, buf, KADD(kd, base, pos)));
    const KExpr *mv = ke_var(kd, m);
    /* the first maximum wins, but any NaN beats it: the window's last NaN, as PyTorch's CPU
     * kernel (and the reference) pick it */
    const KExpr *better = ke_bin(kd, KB_OR, ke_bin(kd, KB_OR, lt(kd, ke_var(kd, at), i64(kd, 0)), ke_bin(kd, KB_GT, v, mv)),
                                 ke_call(kd, KF_ISNAN, v));
    ks_if(kd, better);
    ks_assign(kd, m, v);
    ks_assign(kd, at, pos);
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
}

/* One work item per output row (plane, oy); the window's rows outside the input are skipped
 * once per row, its columns per element. Only the value is needed, so the maximum is a
 * NaN-propagating max (a NaN wins, as in the reference; among equal values which one is
 * first does not matter to the value). */
static void max_pool(KernelDesc *kd, const Op *op, const OpBufs *bf) {
    Pool p = pool_of(op, &op->inputs[0]->shape, &op->result->shape);
    int r = kd_var(kd, "r", KT_I64), ox = kd_var(kd, "ox", KT_I64), ky = kd_var(kd, "ky", KT_I64),
        kx = kd_var(kd, "kx", KT_I64), m = kd_var(kd, "m", KT_F32);
    const Shape *xs = &op->inputs[0]->shape;
    ks_parfor(kd, r, xs->dims[0] * xs->dims[1] * p.ho);
    const KExpr *rv = ke_var(kd, r);
    const KExpr *base = kd_let(kd, "base", KMUL(kd, KDIV(kd, rv, i64(kd, p.ho)), i64(kd, p.h * p.w)));
    const KExpr *oy = kd_let(kd, "oy", KMOD(kd, rv, i64(kd, p.ho)));
    ks_for_n(kd, ox, p.wo);
    ks_decl(kd, m, ke_f32(kd, -INFINITY));
    ks_for_n(kd, ky, p.k[0]);
    const KExpr *y = kd_let(kd, "y", KADD(kd, KSUB(kd, KMUL(kd, oy, i64(kd, p.st[0])), i64(kd, p.pad[0])), ke_var(kd, ky)));
    ks_if(kd, and_(kd, ge(kd, y, i64(kd, 0)), lt(kd, y, i64(kd, p.h))));
    const KExpr *rowat = kd_let(kd, "at", KADD(kd, base, KMUL(kd, y, i64(kd, p.w))));
    ks_for_n(kd, kx, p.k[1]);
    const KExpr *x = kd_let(kd, "x", KADD(kd, KSUB(kd, KMUL(kd, ke_var(kd, ox), i64(kd, p.st[1])), i64(kd, p.pad[1])), ke_var(kd, kx)));
    ks_if(kd, and_(kd, ge(kd, x, i64(kd, 0)), lt(kd, x, i64(kd, p.w))));
    ks_assign(kd, m, ke_call2(kd, KF_MAXNAN, ke_var(kd, m), ke_load(kd, bf->in[0], KADD(kd, rowat, x))));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    ks_store(kd, bf->out, KADD(kd, KMUL(kd, rv, i64(kd, p.wo)), ke_var(kd, ox)), ke_var(kd, m));
    ks_end(kd);
    ks_end(kd);
}

static void max_pool_grad(KernelDesc *kd, const Op *op, const OpBufs *bf) {
    Pool p = pool_of(op, &op->inputs[1]->shape, &op->inputs[0]->shape);
    const Shape *x = &op->inputs[1]->shape;
    int pl = kd_var(kd, "pl", KT_I64), e = kd_var(kd, "e", KT_I64), oy = kd_var(kd, "oy", KT_I64),
        ox = kd_var(kd, "ox", KT_I64), m = kd_var(kd, "m", KT_F32), at = kd_var(kd, "at", KT_I64);
    ks_parfor(kd, pl, x->dims[0] * x->dims[1]);
    const KExpr *base = kd_let(kd, "base", KMUL(kd, ke_var(kd, pl), i64(kd, p.h * p.w)));
    ks_for_n(kd, e, p.h * p.w);
    ks_store(kd, bf->out, KADD(kd, base, ke_var(kd, e)), ke_f32(kd, 0));
    ks_end(kd);
    ks_for_n(kd, oy, p.ho);
    ks_for_n(kd, ox, p.wo);
    window_argmax(kd, &p, bf->in[1], base, ke_var(kd, oy), ke_var(kd, ox), m, at);
    ks_if(kd, ge(kd, ke_var(kd, at), i64(kd, 0)));
    const KExpr *dst = KADD(kd, base, ke_var(kd, at));
    const KExpr *dy = ke_load(kd, bf->in[0], KADD(kd, KMUL(kd, ke_var(kd, pl), i64(kd, p.ho * p.wo)),
                                          KADD(kd, KMUL(kd, ke_var(kd, oy), i64(kd, p.wo)), ke_var(kd, ox))));
    ks_store(kd, bf->out, dst, KADD(kd, ke_load(kd, bf->out, dst), dy));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
}

/* PyTorch's adaptive bin of output index i: [floor(i*in/out), ceil((i+1)*in/out)). */
static const KExpr *bin_start(KernelDesc *kd, const KExpr *i, int64_t in, int64_t out) {
    return KDIV(kd, KMUL(kd, i, i64(kd, in)), i64(kd, out));
}
static const KExpr *bin_end(KernelDesc *kd, const KExpr *i, int64_t in, int64_t out) {
    return KDIV(kd, KADD(kd, KMUL(kd, KADD(kd, i, i64(kd, 1)), i64(kd, in)), i64(kd, out - 1)), i64(kd, out));
}

static void adaptive_avg(KernelDesc *kd, const Op *op, const OpBufs *bf) {
    Pool p = pool_of(op, &op->inputs[0]->shape, &op->result->shape);
    int o = kd_var(kd, "o", KT_I64), y = kd_var(kd, "y", KT_I64), x = kd_var(kd, "x", KT_I64);
    int sum = kd_var(kd, "sum", KT_F64);
    ks_parfor(kd, o, numel_of(op->result));
    const KExpr *ov = ke_var(kd, o);
    const KExpr *base = kd_let(kd, "base", KMUL(kd, KDIV(kd, ov, i64(kd, p.ho * p.wo)), i64(kd, p.h * p.w)));
    const KExpr *oy = KMOD(kd, KDIV(kd, ov, i64(kd, p.wo)), i64(kd, p.ho)), *ox = KMOD(kd, ov, i64(kd, p.wo));
    const KExpr *y0 = kd_let(kd, "y0", bin_start(kd, oy, p.h, p.ho)), *y1 = kd_let(kd, "y1", bin_end(kd, oy, p.h, p.ho));
    const KExpr *x0 = kd_let(kd, "x0", bin_start(kd, ox, p.w, p.wo)), *x1 = kd_let(kd, "x1", bin_end(kd, ox, p.w, p.wo));
    ks_decl(kd, sum, ke_f64(kd, 0));
    ks_for(kd, y, y0, y1);
    ks_for(kd, x, x0, x1);
    ks_assign(kd, sum, KADD(kd, ke_var(kd, sum), ke_load(kd, bf->in[0], KADD(kd, base, KADD(kd, KMUL(kd, ke_var(kd, y), i64(kd, p.w)), ke_var(kd, x))))));
    ks_end(kd);
    ks_end(kd);
    const KExpr *cnt = ke_cast(kd, KT_F64, KMUL(kd, KSUB(kd, y1, y0), KSUB(kd, x1, x0)));
    ks_store(kd, bf->out, ov, KDIV(kd, ke_var(kd, sum), cnt));
    ks_end(kd);
}

static void adaptive_avg_grad(KernelDesc *kd, const Op *op, const OpBufs *bf) {
    Pool p = pool_of(op, &op->result->shape, &op->inputs[0]->shape);
    int e = kd_var(kd, "e", KT_I64), oy = kd_var(kd, "oy", KT_I64), ox = kd_var(kd, "ox", KT_I64);
    int sum = kd_var(kd, "sum", KT_F64);
    ks_parfor(kd, e, numel_of(op->result));
    const KExpr *ev = ke_var(kd, e);
    const KExpr *dbase = kd_let(kd, "dbase", KMUL(kd, KDIV(kd, ev, i64(kd, p.h * p.w)), i64(kd, p.ho * p.wo)));
    const KExpr *y = kd_let(kd, "y", KMOD(kd, KDIV(kd, ev, i64(kd, p.w)), i64(kd, p.h)));
    const KExpr *x = kd_let(kd, "x", KMOD(kd, ev, i64(kd, p.w)));
    ks_decl(kd, sum, ke_f64(kd, 0));
    ks_for_n(kd, oy, p.ho);
    const KExpr *y0 = kd_let(kd, "y0", bin_start(kd, ke_var(kd, oy), p.h, p.ho));
    const KExpr *y1 = kd_let(kd, "y1", bin_end(kd, ke_var(kd, oy), p.h, p.ho));
    ks_if(kd, and_(kd, ge(kd, y, y0), lt(kd, y, y1)));
    ks_for_n(kd, ox, p.wo);
    const KExpr *x0 = kd_let(kd, "x0", bin_start(kd, ke_var(kd, ox), p.w, p.wo));
    const KExpr *x1 = kd_let(kd, "x1", bin_end(kd, ke_var(kd, ox), p.w, p.wo));
    ks_if(kd, and_(kd, ge(kd, x, x0), lt(kd, x, x1)));
    const KExpr *dy = ke_load(kd, bf->in[0], KADD(kd, dbase, KADD(kd, KMUL(kd, ke_var(kd, oy), i64(kd, p.wo)), ke_var(kd, ox))));
    const KExpr *cnt = ke_cast(kd, KT_F64, KMUL(kd, KSUB(kd, y1, y0), KSUB(kd, x1, x0)));
    ks_assign(kd, sum, KADD(kd, ke_var(kd, sum), KDIV(kd, dy, cnt)));
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    ks_end(kd);
    ks_store(kd, bf->out, ev, ke_var(kd, sum));
    ks_end(kd);
}

int lower_pool_op(KernelDesc *kd, const Op *op, const OpBufs *b, char *err, size_t n) {
    switch (op->kind) {
    case OP_MAX_POOL2D: max_pool(kd, op, b); return 0;
    case OP_MAX_POOL2D_GRAD: max_pool_grad(kd, op, b); return 0;
    case OP_ADAPTIVE_AVG_POOL2D: adaptive_avg(kd, op, b); return 0;
    case OP_ADAPTIVE_AVG_POOL2D_GRAD: adaptive_avg_grad(kd, op, b); return 0;
    default: snprintf(err, n, "not a pooling op"); return -1;
    }
}
