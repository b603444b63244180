/* lower_attention.c — the attention pattern (passes/attention.h) as one kernel forward and one
 * backward, in two forms: loops for CUDA, products for the CPU.
 *
 * CUDA forward: one work item per query row (batch element, head, query i). It computes the
 * row of scores q_i . k_j for every key j through the group's pre ops (scale, mask: the
 * evaluator computes them from the score pinned as the value of the scores matmul), keeps the
 * row in a local array of Tk numbers, takes its softmax exactly as the softmax kernel does
 * (f32 maximum, double sum of exponentials) and accumulates P'_ij v_j (through the post ops:
 * dropout) into a local context row, which it stores through the group's output transpose.
 * A two-pass softmax over a row held in registers rather than an online one: it computes
 * exactly what the unfused program does, and rows are short (the captioner's are at most a
 * few hundred keys).
 *
 * CUDA backward: one work item per batch element and head, which owns its rows of dK and dV
 * (local arrays, stored at the end: no atomics). For each query row it recomputes the scores
 * and P (the fusion pass put copies of the forward ops in this group for that), computes
 * dP_ij = dO_i . v_j, the row's sums of the backward chain (softmax's sum of dP * P), then
 * G_ij from the chain, and accumulates dV_j += P'_ij dO_i, dK_j += G_ij q_i, dQ_i = sum_j
 * G_ij k_j. What is recomputed: the scores and P (a second Q.K), instead of storing
 * [..., Tq, Tk] in the forward and reading it back.
 *
 * C (below, "one work item per (batch, head)"): the same steps with the products as sgemms on
 * copies of Q, K, V, dO in the thread's workspace; the row-wise parts run over [Tq, Tk]
 * matrices there. The scalar dot products of the CUDA form were a quarter of the ResNet-50
 * captioner's CPU step. In both forms the [..., Tq, Tk] tensors never reach memory. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "lower.h"

typedef struct Attn {
    LowerCtx *c;
    KernelDesc *kd;
    Eval *ev;
    AttnMatch m;
    const Shape *s;   /* scores [..., Tq, Tk] */
    int64_t batch, tq, tk, dh, dv;
    const KExpr *bax[IR_MAX_RANK]; /* the work item's batch axes */
} Attn;

static const KExpr *i64(Attn *a, int64_t v) { return ke_int(a->kd, v); }

/* The batch axes of batch element bi (once per work item). */
static void batch_axes(Attn *a, const KExpr *bi) {
    Shape b = shape_make(a->s->rank - 2, a->s->dims);
    const KExpr *axes[IR_MAX_RANK];
    ix_unravel(a->kd, bi, &b, axes);
    for (int d = 0; d < b.rank; d++) a->bax[d] = kd_let(a->kd, "b", axes[d]);
}

/* Element [batch, r, col] of a value [..., R, C] with the scores' batch axes. */
static Ix at(Attn *a, const Value *v, const KExpr *r, const KExpr *col) {
    const KExpr *axes[IR_MAX_RANK];
    int rank = v->shape.rank;
    for (int d = 0; d < rank - 2; d++) axes[d] = a->bax[d];
    axes[rank - 2] = r;
    axes[rank - 1] = col;
    return ix_axes(a->kd, &v->shape, axes);
}

static const KExpr *value_at(Attn *a, const Value *v, const KExpr *r, const KExpr *col) {
    Ix ix = at(a, v, r, col);
    return ev_value(a->ev, v, &ix);
}

/* The element of `w` (a value defined from `from` by transposes) that holds the element *ix
 * of `from`; false when w is not such a value. */
static bool carried_ix(Attn *a, const Value *w, const Value *from, Ix *ix, Ix *out) {
    if (w == from) {
        *out = *ix;
        return true;
    }
    const Op *op = w->def;
    Ix in;
    if (op == NULL || !ev_member(a->ev, w) || op->kind != OP_TRANSPOSE ||
        !carried_ix(a, op->inputs[0], from, ix, &in))
        return false;
    const Shape *is = &op->inputs[0]->shape;
    const KExpr *axes[IR_MAX_RANK];
    int n = 0;
    const int64_t *perm = op_ints(op, "perm", &n);
    for (int d = 0; d < is->rank; d++) axes[d] = ix_axis(a->kd, &in, axis_normalize(perm[d], is->rank));
    *out = ix_axes(a->kd, &w->shape, axes);
    return true;
}

/* Stores every write of the step that `v` carries (v itself, or a transpose of it), for v's
 * element [batch, r, col] whose value is `x`. */
static void store_carried(Attn *a, const Value *v, const KExpr *r, const KExpr *col,
                          const KExpr *x) {
    const Step *st = &a->c->s->steps[a->c->step];
    ev_scope_push(a->ev);
    ev_pin(a->ev, v, x);
    Ix ix = at(a, v, r, col), out;
    for (int w = 0; w < st->n_writes; w++) {
        if (!carried_ix(a, st->writes[w], v, &ix, &out)) continue;
        const Value *vals[1] = {st->writes[w]};
        ev_store(a->ev, vals, 1, out.flat);
    }
    ev_scope_pop(a->ev);
}

/* Every write must be carried from one of these values. */
static int check_writes(Attn *a, const Value *const *from, int n) {
    const Step *st = &a->c->s->steps[a->c->step];
    for (int w = 0; w < st->n_writes; w++) {
        bool ok = false;
        for (int i = 0; i < n && !ok; i++) {
            const KExpr *zero[IR_MAX_RANK];
            for (int d = 0; d < from[i]->shape.rank; d++) zero[d] = i64(a, 0);
            Ix ix = ix_axes(a->kd, &from[i]->shape, zero), out;
            ok = carried_ix(a, st->writes[w], from[i], &ix, &out);
        }
        if (!ok) {
            snprintf(a->c->err, a->c->err_size, "%%%s is written by the attention kernel but "
                     "is none of its results", st->writes[w]->name);
            return -1;
        }
    }
    return 0;
}

/* ---- the row of scores and its softmax ------------------------------------------------------ */

/* dot = sum over d < n of x[batch, r1, d] * y[batch, r2, d] (f32) */
static const KExpr *dot(Attn *a, const Value *x, const KExpr *r1, const Value *y,
                        const KExpr *r2, int64_t n) {
    KernelDesc *kd = a->kd;
    int acc = kd_var(kd, "dot", KT_F32), d = kd_var(kd, "d", KT_I64);
    ks_decl(kd, acc, ke_f32(kd, 0));
    ks_for_n(kd, d, n);
    ev_scope_push(a->ev);
    const KExpr *xv = value_at(a, x, r1, ke_var(kd, d));
    const KExpr *yv = value_at(a, y, r2, ke_var(kd, d));
    ks_assign(kd, acc, KADD(kd, ke_var(kd, acc), KMUL(kd, xv, yv)));
    ev_scope_pop(a->ev);
    ks_end(kd);
    return ke_var(kd, acc);
}

typedef struct Row {
    int s;              /* local array: the softmax's input along the row */
    const KExpr *mx, *sum;
} Row;

/* The row i of softmax inputs (scores through the pre ops), its maximum and sum of
 * exponentials, as the softmax kernel computes them. */
static Row score_row(Attn *a, const KExpr *i) {
    KernelDesc *kd = a->kd;
    const AttnMatch *m = &a->m;
    Row r = {kd_local(kd, KT_F32, a->tk), NULL, NULL};
    int mx = kd_var(kd, "mx", KT_F32), sum = kd_var(kd, "sum", KT_F64), j = kd_var(kd, "j", KT_I64);
    ks_decl(kd, mx, ke_f32(kd, -INFINITY));
    ks_for_n(kd, j, a->tk);
    ev_scope_push(a->ev);
    const KExpr *jv = ke_var(kd, j);
    const KExpr *qk = dot(a, m->q, i, m->k, jv, a->dh);
    ev_pin(a->ev, m->scores->result, qk);
    const KExpr *x = value_at(a, m->softmax->inputs[0], i, jv);
    ks_store(kd, r.s, jv, x);
    ks_assign(kd, mx, ke_select(kd, ke_bin(kd, KB_GT, x, ke_var(kd, mx)), x, ke_var(kd, mx)));
    ev_scope_pop(a->ev);
    ks_end(kd);
    ks_decl(kd, sum, ke_f64(kd, 0));
    ks_for_n(kd, j, a->tk);
    const KExpr *e = ke_call(kd, KF_EXP, KSUB(kd, ke_load(kd, r.s, ke_var(kd, j)), ke_var(kd, mx)));
    ks_assign(kd, sum, KADD(kd, ke_var(kd, sum), e));
    ks_end(kd);
    r.mx = ke_var(kd, mx);
    r.sum = ke_var(kd, sum);
    return r;
}

/* P_ij, rounded to f32 as the softmax kernel stores it. */
static const KExpr *prob(Attn *a, const Row *r, const KExpr *j) {
    KernelDesc *kd = a->kd;
    const KExpr *e = ke_call(kd, KF_EXP, KSUB(kd, ke_load(kd, r->s, j), r->mx));
    return kd_let(kd, "p", ke_cast(kd, KT_F32, KDIV(kd, e, r->sum)));
}

/* ---- forward ------------------------------------------------------------------------------ */

static void forward(Attn *a) {
    KernelDesc *kd = a->kd;
    const AttnMatch *m = &a->m;
    const Step *st = &a->c->s->steps[a->c->step];
    bool store_p = false;
    for (int w = 0; w < st->n_writes; w++) store_p |= st->writes[w] == m->softmax->result;
    int item = kd_var(kd, "w", KT_I64), j = kd_var(kd, "j", KT_I64), d = kd_var(kd, "d", KT_I64);
    ks_parfor(kd, item, a->batch * a->tq);
    ev_scope_push(a->ev);
    batch_axes(a, kd_let(kd, "bi", KDIV(kd, ke_var(kd, item), i64(a, a->tq))));
    const KExpr *i = kd_let(kd, "i", KMOD(kd, ke_var(kd, item), i64(a, a->tq)));
    Row r = score_row(a, i);
    int acc = kd_local(kd, KT_F32, a->dv);
    ks_for_n(kd, d, a->dv);
    ks_store(kd, acc, ke_var(kd, d), ke_f32(kd, 0));
    ks_end(kd);
    ks_for_n(kd, j, a->tk);
    ev_scope_push(a->ev);
    const KExpr *jv = ke_var(kd, j);
    const KExpr *p = prob(a, &r, jv);
    ev_pin(a->ev, m->softmax->result, p);
    if (store_p) {
        const Value *vals[1] = {m->softmax->result};
        ev_store(a->ev, vals, 1, at(a, m->softmax->result, i, jv).flat);
    }
    const KExpr *pp = value_at(a, m->pp, i, jv);
    ks_for_n(kd, d, a->dv);
    ev_scope_push(a->ev);
    const KExpr *vv = value_at(a, m->v, jv, ke_var(kd, d));
    ks_store(kd, acc, ke_var(kd, d), KADD(kd, ke_load(kd, acc, ke_var(kd, d)), KMUL(kd, pp, vv)));
    ev_scope_pop(a->ev);
    ks_end(kd);
    ev_scope_pop(a->ev);
    ks_end(kd);
    ks_for_n(kd, d, a->dv);
    store_carried(a, m->context->result, i, ke_var(kd, d), ke_load(kd, acc, ke_var(kd, d)));
    ks_end(kd);
    ev_scope_pop(a->ev);
    ks_end(kd);
}

/* ---- backward ----------------------------------------------------------------------------- */

static void zero(Attn *a, int buf, int64_t n) {
    int k = kd_var(a->kd, "k", KT_I64);
    ks_for_n(a->kd, k, n);
    ks_store(a->kd, buf, ke_var(a->kd, k), ke_f32(a->kd, 0));
    ks_end(a->kd);
}

/* Where the current row's P and dP are: element j at buf[base + j]. */
typedef struct RowAt {
    int p, dp;                       /* buffers */
    const KExpr *p_base, *dp_base;
} RowAt;

/* Pins P and dP at element j of the current row for the chain's ops. */
static void pin_row(Attn *a, const RowAt *r, const KExpr *j) {
    ev_pin(a->ev, a->m.softmax->result, ke_load(a->kd, r->p, KADD(a->kd, r->p_base, j)));
    ev_pin(a->ev, a->m.d_p->result, ke_load(a->kd, r->dp, KADD(a->kd, r->dp_base, j)));
}

/* The chain's sums along the row (one round: softmax's backward), pinned for the row. */
static void chain_sums(Attn *a, const KExpr *i, const RowAt *r) {
    KernelDesc *kd = a->kd;
    const AttnMatch *m = &a->m;
    int acc[ATTN_MAX_BACKWARD], j = kd_var(kd, "j", KT_I64);
    int n = 0;
    for (int k = 0; k < m->n_bwd; k++) {
        bool reduced[IR_MAX_RANK];
        acc[k] = -1;
        if (!op_reduced_axes(m->bwd[k], reduced)) continue;
        acc[k] = kd_var(kd, "acc", KT_F64);
        ks_decl(kd, acc[k], ke_f64(kd, 0));
        n++;
    }
    if (n == 0) return;
    ks_for_n(kd, j, a->tk);
    ev_scope_push(a->ev);
    const KExpr *jv = ke_var(kd, j);
    pin_row(a, r, jv);
    for (int k = 0; k < m->n_bwd; k++)
        if (acc[k] >= 0)
            ks_assign(kd, acc[k], KADD(kd, ke_var(kd, acc[k]), value_at(a, m->bwd[k]->inputs[0], i, jv)));
    ev_scope_pop(a->ev);
    ks_end(kd);
    for (int k = 0; k < m->n_bwd; k++) {
        if (acc[k] < 0) continue;
        const KExpr *v = ke_var(kd, acc[k]);
        if (m->bwd[k]->kind == OP_MEAN) v = KDIV(kd, v, ke_f64(kd, (double)a->tk));
        ev_pin(a->ev, m->bwd[k]->result, kd_let(kd, "rs", ke_cast(kd, KT_F32, v)));
    }
}

/* One query row of the backward. */
static void backward_row(Attn *a, const KExpr *i, int dk, int dvb) {
    KernelDesc *kd = a->kd;
    const AttnMatch *m = &a->m;
    int j = kd_var(kd, "j", KT_I64), d = kd_var(kd, "d", KT_I64);
    Row r = score_row(a, i);
    int p = kd_local(kd, KT_F32, a->tk), dp = kd_local(kd, KT_F32, a->tk), g = kd_local(kd, KT_F32, a->tk);
    ks_for_n(kd, j, a->tk);
    ev_scope_push(a->ev);
    ks_store(kd, p, ke_var(kd, j), prob(a, &r, ke_var(kd, j)));
    ks_store(kd, dp, ke_var(kd, j), dot(a, m->d_o, i, m->v, ke_var(kd, j), a->dv));
    ev_scope_pop(a->ev);
    ks_end(kd);
    RowAt at_row = {p, dp, i64(a, 0), i64(a, 0)};
    chain_sums(a, i, &at_row);
    ks_for_n(kd, j, a->tk);
    ev_scope_push(a->ev);
    const KExpr *jv = ke_var(kd, j);
    pin_row(a, &at_row, jv);
    const KExpr *gv = value_at(a, m->g, i, jv), *pp = value_at(a, m->pp, i, jv);
    ks_store(kd, g, jv, gv);
    ks_for_n(kd, d, a->dv);
    ev_scope_push(a->ev);
    const KExpr *o = value_at(a, m->d_o, i, ke_var(kd, d));
    const KExpr *slot = KADD(kd, KMUL(kd, jv, i64(a, a->dv)), ke_var(kd, d));
    ks_store(kd, dvb, slot, KADD(kd, ke_load(kd, dvb, slot), KMUL(kd, pp, o)));
    ev_scope_pop(a->ev);
    ks_end(kd);
    ks_for_n(kd, d, a->dh);
    ev_scope_push(a->ev);
    const KExpr *q = value_at(a, m->q, i, ke_var(kd, d));
    const KExpr *slot2 = KADD(kd, KMUL(kd, jv, i64(a, a->dh)), ke_var(kd, d));
    ks_store(kd, dk, slot2, KADD(kd, ke_load(kd, dk, slot2), KMUL(kd, ke_load(kd, g, jv), q)));
    ev_scope_pop(a->ev);
    ks_end(kd);
    ev_scope_pop(a->ev);
    ks_end(kd);
    /* dQ_i = sum_j G_ij k_j */
    ks_for_n(kd, d, a->dh);
    int acc = kd_var(kd, "dq", KT_F32);
    ks_decl(kd, acc, ke_f32(kd, 0));
    ks_for_n(kd, j, a->tk);
    ev_scope_push(a->ev);
    const KExpr *kv = value_at(a, m->k, ke_var(kd, j), ke_var(kd, d));
    ks_assign(kd, acc, KADD(kd, ke_var(kd, acc), KMUL(kd, ke_load(kd, g, ke_var(kd, j)), kv)));
    ev_scope_pop(a->ev);
    ks_end(kd);
    store_carried(a, m->d_q->result, i, ke_var(kd, d), ke_var(kd, acc));
    ks_end(kd);
}

static void backward(Attn *a) {
    KernelDesc *kd = a->kd;
    const AttnMatch *m = &a->m;
    int item = kd_var(kd, "w", KT_I64), i = kd_var(kd, "i", KT_I64), k = kd_var(kd, "k", KT_I64);
    ks_parfor(kd, item, a->batch);
    ev_scope_push(a->ev);
    batch_axes(a, ke_var(kd, item));
    int dk = kd_local(kd, KT_F32, a->tk * a->dh), dv = kd_local(kd, KT_F32, a->tk * a->dv);
    zero(a, dk, a->tk * a->dh);
    zero(a, dv, a->tk * a->dv);
    ks_for_n(kd, i, a->tq);
    ev_scope_push(a->ev);
    backward_row(a, ke_var(kd, i), dk, dv);
    ev_scope_pop(a->ev);
    ks_end(kd);
    ks_for_n(kd, k, a->tk * a->dh);
    const KExpr *row = KDIV(kd, ke_var(kd, k), i64(a, a->dh)), *col = KMOD(kd, ke_var(kd, k), i64(a, a->dh));
    store_carried(a, m->d_k->result, row, col, ke_load(kd, dk, ke_var(kd, k)));
    ks_end(kd);
    ks_for_n(kd, k, a->tk * a->dv);
    row = KDIV(kd, ke_var(kd, k), i64(a, a->dv));
    col = KMOD(kd, ke_var(kd, k), i64(a, a->dv));
    store_carried(a, m->d_v->result, row, col, ke_load(kd, dv, ke_var(kd, k)));
    ks_end(kd);
    ev_scope_pop(a->ev);
    ks_end(kd);
}

/* ---- C: one work item per (batch, head), the products as sgemms -------------------------- */

/* On the CPU the per-row loops above are scalar dot products; here each work item copies its
 * Q, K, V (and dO) into contiguous matrices of its thread's workspace (through the group's
 * transposes, by the evaluator: O(T d), against the products' O(Tq Tk d)), multiplies them
 * with single-threaded sgemms, and runs the row-wise parts (pre ops, softmax, post ops, the
 * backward chain) over the [Tq, Tk] matrices in between. The [..., Tq, Tk] tensors still
 * never reach memory outside the work item. The products are the unfused program's: the
 * same sgemm shapes over the same contiguous operands. */

typedef struct Ws {
    int buf;                       /* the work item's scratch */
    int64_t q, k, v, o, s, p, dp, dq, dk, dv; /* offsets (elements) of its matrices */
} Ws;

static Ws workspace(Attn *a, bool backward) {
    Ws w = {0};
    int64_t end = 0;
#define TAKE(field, n) (w.field = end, end += (n))
    TAKE(q, a->tq * a->dh);
    TAKE(k, a->tk * a->dh);
    TAKE(v, a->tk * a->dv);
    TAKE(s, a->tq * a->tk);
    TAKE(p, a->tq * a->tk);
    TAKE(o, a->tq * a->dv); /* O forward, dO backward */
    if (backward) {
        TAKE(dp, a->tq * a->tk);
        TAKE(dq, a->tq * a->dh);
        TAKE(dk, a->tk * a->dh);
        TAKE(dv, a->tk * a->dv);
    }
#undef TAKE
    w.buf = kd_scratch(a->kd, KT_F32, end);
    return w;
}

/* Between ws[off] (rows x cols, row-major) and value v's elements [batch, r, col]: copied in
 * (through the evaluator), or stored out as v (and every write that carries v). */
static void copy_matrix(Attn *a, const Ws *w, int64_t off, const Value *v, int64_t rows,
                        int64_t cols, bool in) {
    KernelDesc *kd = a->kd;
    int r = kd_var(kd, "r", KT_I64), col = kd_var(kd, "c", KT_I64);
    ks_for_n(kd, r, rows);
    ks_for_n(kd, col, cols);
    const KExpr *el = KADD(kd, i64(a, off), KADD(kd, KMUL(kd, ke_var(kd, r), i64(a, cols)), ke_var(kd, col)));
    if (in) {
        ev_scope_push(a->ev);
        ks_store(kd, w->buf, el, value_at(a, v, ke_var(kd, r), ke_var(kd, col)));
        ev_scope_pop(a->ev);
    } else {
        store_carried(a, v, ke_var(kd, r), ke_var(kd, col), ke_load(kd, w->buf, el));
    }
    ks_end(kd);
    ks_end(kd);
}

/* ws[c] = ws[a] (m x k, or k x m transposed) @ ws[b] (k x n, or n x k transposed) */
static void ws_gemm(Attn *a, const Ws *w, int64_t m, int64_t n, int64_t k, int64_t ao, bool ta,
                    int64_t bo, bool bt, int64_t co) {
    KernelDesc *kd = a->kd;
    KGemm g = {0};
    g.batch_var = kd_var(kd, "bt", KT_I64);
    g.batch = 1;
    g.m = m, g.n = n, g.k = k;
    g.alpha = 1.0f;
    g.bias_buf = -1;
    g.a = (KMat){w->buf, i64(a, ao), ta ? m : k, ta};
    g.b = (KMat){w->buf, i64(a, bo), bt ? k : n, bt};
    g.c = (KMat){w->buf, i64(a, co), n, false};
    ks_gemm(kd, &g);
}

/* Row i of the scores in ws[s] through the pre ops into the softmax's input (in place), its
 * maximum and sum of exponentials, as the softmax kernel computes them. */
static Row ws_score_row(Attn *a, const Ws *w, const KExpr *i) {
    KernelDesc *kd = a->kd;
    int mx = kd_var(kd, "mx", KT_F32), sum = kd_var(kd, "sum", KT_F64), j = kd_var(kd, "j", KT_I64);
    const KExpr *row = kd_let(kd, "row", KADD(kd, i64(a, w->s), KMUL(kd, i, i64(a, a->tk))));
    ks_decl(kd, mx, ke_f32(kd, -INFINITY));
    ks_for_n(kd, j, a->tk);
    ev_scope_push(a->ev);
    const KExpr *el = KADD(kd, row, ke_var(kd, j));
    ev_pin(a->ev, a->m.scores->result, ke_load(kd, w->buf, el));
    const KExpr *x = kd_let(kd, "x", value_at(a, a->m.softmax->inputs[0], i, ke_var(kd, j)));
    ks_store(kd, w->buf, el, x);
    ks_assign(kd, mx, ke_select(kd, ke_bin(kd, KB_GT, x, ke_var(kd, mx)), x, ke_var(kd, mx)));
    ev_scope_pop(a->ev);
    ks_end(kd);
    ks_decl(kd, sum, ke_f64(kd, 0));
    ks_for_n(kd, j, a->tk);
    const KExpr *e = ke_call(kd, KF_EXP, KSUB(kd, ke_load(kd, w->buf, KADD(kd, row, ke_var(kd, j))), ke_var(kd, mx)));
    ks_assign(kd, sum, KADD(kd, ke_var(kd, sum), e));
    ks_end(kd);
    Row r = {w->buf, ke_var(kd, mx), ke_var(kd, sum)};
    return r;
}

/* Every row: P into ws[p] (and stored when the step writes it), P' (post ops) into ws[s]. */
static void ws_probabilities(Attn *a, const Ws *w, bool store_p) {
    KernelDesc *kd = a->kd;
    int i = kd_var(kd, "i", KT_I64), j = kd_var(kd, "j", KT_I64);
    ks_for_n(kd, i, a->tq);
    ev_scope_push(a->ev);
    const KExpr *iv = ke_var(kd, i);
    Row r = ws_score_row(a, w, iv);
    ks_for_n(kd, j, a->tk);
    ev_scope_push(a->ev);
    const KExpr *jv = ke_var(kd, j);
    const KExpr *el = kd_let(kd, "el", KADD(kd, KMUL(kd, iv, i64(a, a->tk)), jv));
    const KExpr *e = ke_call(kd, KF_EXP, KSUB(kd, ke_load(kd, w->buf, KADD(kd, i64(a, w->s), el)), r.mx));
    const KExpr *p = kd_let(kd, "p", ke_cast(kd, KT_F32, KDIV(kd, e, r.sum)));
    ev_pin(a->ev, a->m.softmax->result, p);
    if (store_p) {
        const Value *vals[1] = {a->m.softmax->result};
        ev_store(a->ev, vals, 1, at(a, a->m.softmax->result, iv, jv).flat);
    }
    ks_store(kd, w->buf, KADD(kd, i64(a, w->p), el), p);
    ks_store(kd, w->buf, KADD(kd, i64(a, w->s), el), value_at(a, a->m.pp, iv, jv));
    ev_scope_pop(a->ev);
    ks_end(kd);
    ev_scope_pop(a->ev);
    ks_end(kd);
}

/* Opens the work item of one (batch, head): its workspace with Q, K, V (and dO for the
 * backward) copied in, S = Q K^T, and every row's P and P' (ws_probabilities). The caller
 * adds the rest and closes it with close_item. */
static Ws open_item(Attn *a, bool backward, bool store_p) {
    KernelDesc *kd = a->kd;
    const AttnMatch *m = &a->m;
    int item = kd_var(kd, "w", KT_I64);
    ks_parfor(kd, item, a->batch);
    ev_scope_push(a->ev);
    batch_axes(a, ke_var(kd, item));
    Ws w = workspace(a, backward);
    copy_matrix(a, &w, w.q, m->q, a->tq, a->dh, true);
    copy_matrix(a, &w, w.k, m->k, a->tk, a->dh, true);
    copy_matrix(a, &w, w.v, m->v, a->tk, a->dv, true);
    if (backward) copy_matrix(a, &w, w.o, m->d_o, a->tq, a->dv, true);
    ws_gemm(a, &w, a->tq, a->tk, a->dh, w.q, false, w.k, true, w.s); /* S = Q K^T */
    ws_probabilities(a, &w, store_p);
    return w;
}

static void close_item(Attn *a) {
    ev_scope_pop(a->ev);
    ks_end(a->kd);
}

static void forward_gemm(Attn *a) {
    const AttnMatch *m = &a->m;
    const Step *st = &a->c->s->steps[a->c->step];
    bool store_p = false;
    for (int w = 0; w < st->n_writes; w++) store_p |= st->writes[w] == m->softmax->result;
    Ws w = open_item(a, false, store_p);
    ws_gemm(a, &w, a->tq, a->dv, a->tk, w.s, false, w.v, false, w.o); /* O = P' V */
    copy_matrix(a, &w, w.o, m->context->result, a->tq, a->dv, false);
    close_item(a);
}

/* Row i of the backward chain: P and dP pinned from ws, the chain's sums, G into ws[dp]. */
static void ws_chain_row(Attn *a, const Ws *w, const KExpr *i) {
    KernelDesc *kd = a->kd;
    int j = kd_var(kd, "j", KT_I64);
    const KExpr *row = kd_let(kd, "row", KMUL(kd, i, i64(a, a->tk)));
    RowAt r = {w->buf, w->buf, KADD(kd, i64(a, w->p), row), KADD(kd, i64(a, w->dp), row)};
    chain_sums(a, i, &r);
    ks_for_n(kd, j, a->tk);
    ev_scope_push(a->ev);
    pin_row(a, &r, ke_var(kd, j));
    const KExpr *g = kd_let(kd, "g", value_at(a, a->m.g, i, ke_var(kd, j)));
    ks_store(kd, w->buf, KADD(kd, r.dp_base, ke_var(kd, j)), g);
    ev_scope_pop(a->ev);
    ks_end(kd);
}

static void backward_gemm(Attn *a) {
    KernelDesc *kd = a->kd;
    const AttnMatch *m = &a->m;
    int i = kd_var(kd, "i", KT_I64);
    Ws w = open_item(a, true, false);
    ws_gemm(a, &w, a->tq, a->tk, a->dv, w.o, false, w.v, true, w.dp);   /* dP = dO V^T */
    ks_for_n(kd, i, a->tq);
    ev_scope_push(a->ev);
    ws_chain_row(a, &w, ke_var(kd, i));                                   /* G into dp */
    ev_scope_pop(a->ev);
    ks_end(kd);
    ws_gemm(a, &w, a->tk, a->dv, a->tq, w.s, true, w.o, false, w.dv);   /* dV = P'^T dO */
    ws_gemm(a, &w, a->tq, a->dh, a->tk, w.dp, false, w.k, false, w.dq); /* dQ = G K */
    ws_gemm(a, &w, a->tk, a->dh, a->tq, w.dp, true, w.q, false, w.dk);  /* dK = G^T Q */
    copy_matrix(a, &w, w.dq, m->d_q->result, a->tq, a->dh, false);
    copy_matrix(a, &w, w.dk, m->d_k->result, a->tk, a->dh, false);
    copy_matrix(a, &w, w.dv, m->d_v->result, a->tk, a->dv, false);
    close_item(a);
}

/* Lowers the matched pattern into kd: the C form (per batch and head, sgemms) or the CUDA one
 * (per query row forward, per batch and head backward, loops). Returns 0 or -1 with c->err. */
static int lower_form(Attn *proto, KernelDesc *kd, bool cuda, bool want_backward) {
    Attn a = *proto;
    LowerCtx *c = a.c;
    a.kd = kd;
    a.ev = eval_new(kd, c->s, c->step, c->buf_of);
    if (a.ev == NULL) {
        snprintf(c->err, c->err_size, "out of memory");
        return -1;
    }
    const Value *results[4] = {NULL, a.m.softmax->result};
    int rc = 0;
    if (want_backward) {
        results[0] = a.m.d_q->result, results[1] = a.m.d_k->result, results[2] = a.m.d_v->result;
        rc = check_writes(&a, results, 3);
        if (rc == 0) cuda ? backward(&a) : backward_gemm(&a);
    } else {
        results[0] = a.m.context->result;
        rc = check_writes(&a, results, 2);
        if (rc == 0) cuda ? forward(&a) : forward_gemm(&a);
    }
    if (rc == 0 && ev_error(a.ev)) {
        snprintf(c->err, c->err_size, "%s", ev_error(a.ev));
        rc = -1;
    }
    eval_free(a.ev);
    return rc;
}

int lower_attention(LowerCtx *c) {
    const Function *f = c->s->f;
    const Step *st = &c->s->steps[c->step];
    const Op *const *ops = (const Op *const *)f->ops + st->first_op;
    bool want_backward = strcmp(f->groups[st->group].pattern, "attention_backward") == 0;
    Attn a = {.c = c, .kd = c->kd};
    for (int k = 0; k < st->n_ops && a.m.softmax == NULL; k++)
        if (ops[k]->kind == OP_SOFTMAX && !attn_match(f, ops, st->n_ops, c->s->returned, ops[k], &a.m))
            memset(&a.m, 0, sizeof a.m);
    if (a.m.softmax == NULL || want_backward != (a.m.d_v != NULL)) {
        snprintf(c->err, c->err_size, "the group does not hold the attention pattern");
        return -1;
    }
    a.s = &a.m.softmax->result->shape;
    a.tq = a.s->dims[a.s->rank - 2];
    a.tk = a.s->dims[a.s->rank - 1];
    a.batch = shape_numel(a.s) / (a.tq * a.tk);
    a.dh = a.m.q->shape.dims[a.s->rank - 1];
    a.dv = a.m.v->shape.dims[a.s->rank - 1];
    c->cuda = lower_clone_args(c->kd);
    if (c->cuda == NULL) {
        snprintf(c->err, c->err_size, "out of memory");
        return -1;
    }
    if (lower_form(&a, c->kd, false, want_backward) != 0) return -1;
    return lower_form(&a, c->cuda, true, want_backward);
}
