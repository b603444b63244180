/* lower_contract.c — contractions (matmul, linear, conv2d and its gradients) and the fused
 * groups around them.
 *
 * matmul and linear are gemm statements (C: cap_sgemm per batch matrix; CUDA: the
 * renderer's simple loop form). Row-major throughout: a stored matrix's leading dimension is
 * its column count whether or not it is read transposed. Batch axes of matmul broadcast: each
 * operand's matrix offset is computed from the output batch index the way numpy broadcasting
 * picks it.
 *
 * A fused contraction group is the contraction plus elementwise ops of its result (bias,
 * BatchNorm with stored statistics, ReLU, residual add, dropout, scale): its epilogue. The
 * contraction writes into the buffer of one of the group's writes (or its own, when its raw
 * result is needed after the step), and the epilogue then computes every write of the group
 * from that element's value: on the C target in one pass over the result after the library
 * call, on CUDA inside the work item that computed the element. The group's ops are rounded
 * as they would be stored, so the fused result equals the unfused one.
 */
#include <stdlib.h>

#include "lower.h"

static KMat mat(KernelDesc *kd, int buf, const KExpr *offset, int64_t ld, bool trans) {
    (void)kd;
    KMat m = {buf, offset, ld, trans};
    return m;
}

/* The epilogue block of a gemm: the element's flat index and value in two variables. */
static void add_epilogue(KernelDesc *kd, KGemm *g, Epilogue *ep) {
    if (ep == NULL) return;
    g->epi_index = kd_var(kd, "ei", KT_I64);
    g->epi_value = kd_var(kd, "ev", KT_F32);
    ks_detached_begin(kd);
    ep->emit(ep, kd, ke_var(kd, g->epi_index), ke_var(kd, g->epi_value));
    g->epilogue = ks_detached_end(kd);
}

static void matmul(KernelDesc *kd, const Op *op, const OpBufs *b, Epilogue *ep) {
    const Shape *as = &op->inputs[0]->shape, *bs = &op->inputs[1]->shape, *os = &op->result->shape;
    bool ta = op_bool(op, "transpose_a"), tb = op_bool(op, "transpose_b");
    int ra = as->rank, rb = bs->rank, ro = os->rank;
    int64_t m = os->dims[ro - 2], n = os->dims[ro - 1], k = as->dims[ra - (ta ? 2 : 1)];
    int64_t a_size = as->dims[ra - 2] * as->dims[ra - 1], b_size = bs->dims[rb - 2] * bs->dims[rb - 1];
    Shape bo = shape_make(ro - 2, os->dims), ba = shape_make(ra - 2, as->dims), bb = shape_make(rb - 2, bs->dims);
    int bv = kd_var(kd, "bt", KT_I64);
    const KExpr *idx[IR_MAX_RANK];
    ix_unravel(kd, ke_var(kd, bv), &bo, idx);
    KGemm g = {0};
    g.batch_var = bv;
    g.batch = shape_numel(&bo);
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = mat(kd, b->in[0], KMUL(kd, ix_broadcast(kd, idx, &bo, &ba), ke_int(kd, a_size)), as->dims[ra - 1], ta);
    g.b = mat(kd, b->in[1], KMUL(kd, ix_broadcast(kd, idx, &bo, &bb), ke_int(kd, b_size)), bs->dims[rb - 1], tb);
    g.c = mat(kd, b->out, KMUL(kd, ix_ravel(kd, idx, &bo), ke_int(kd, m * n)), n, false);
    g.alpha = 1.0f;
    g.bias_buf = -1;
    add_epilogue(kd, &g, ep);
    ks_gemm(kd, &g);
}

/* x [..., K] @ weight[N, K]^T (+ bias[N]): one [rows, K] x [K, N] product. */
static void linear(KernelDesc *kd, const Op *op, const OpBufs *b, Epilogue *ep) {
    int64_t n = op->inputs[1]->shape.dims[0], k = op->inputs[1]->shape.dims[1];
    KGemm g = {0};
    g.batch_var = kd_var(kd, "bt", KT_I64);
    g.batch = 1;
    g.m = numel_of(op->inputs[0]) / k;
    g.n = n;
    g.k = k;
    g.a = mat(kd, b->in[0], ke_int(kd, 0), k, false);
    g.b = mat(kd, b->in[1], ke_int(kd, 0), k, true);
    g.c = mat(kd, b->out, ke_int(kd, 0), n, false);
    g.alpha = 1.0f;
    g.bias_buf = op->n_inputs == 3 ? b->in[2] : -1;
    add_epilogue(kd, &g, ep);
    ks_gemm(kd, &g);
}

int lower_gemm_op(KernelDesc *kd, const Op *op, const OpBufs *b, Epilogue *ep, char *err,
                  size_t n) {
    switch (op->kind) {
    case OP_MATMUL: matmul(kd, op, b, ep); return 0;
    case OP_LINEAR: linear(kd, op, b, ep); return 0;
    default: snprintf(err, n, "not a gemm"); return -1;
    }
}

/* ---- fused contraction groups ------------------------------------------------------------ */

typedef struct GroupEpilogue {
    Epilogue ep;
    LowerCtx *c;
    const Op *contraction;
    Eval *ev[2];        /* one per description (C and a separate CUDA form) */
    KernelDesc *ev_kd[2];
} GroupEpilogue;

/* Every write of the step at `flat`, with the contraction's value there pinned to v. */
static void emit_group(Epilogue *ep, KernelDesc *kd, const KExpr *flat, const KExpr *v) {
    GroupEpilogue *g = (GroupEpilogue *)ep;
    int k = g->ev_kd[0] == kd ? 0 : g->ev_kd[1] == kd ? 1 : g->ev_kd[0] == NULL ? 0 : 1;
    if (g->ev[k] == NULL) {
        g->ev[k] = eval_new(kd, g->c->s, g->c->step, g->c->buf_of);
        g->ev_kd[k] = kd;
        if (g->ev[k] == NULL) ir_bug("out of memory lowering a fused contraction");
    }
    Eval *ev = g->ev[k];
    const Step *st = &g->c->s->steps[g->c->step];
    ev_scope_push(ev);
    ev_pin_at(ev, g->contraction->result, flat, v);
    ev_store(ev, st->writes, st->n_writes, flat);
    ev_scope_pop(ev);
}

/* The contraction of the step; the others must be elementwise ops and views of its result. */
static const Op *find_contraction(LowerCtx *c) {
    const Function *f = c->s->f;
    const Step *st = &c->s->steps[c->step];
    const Op *found = NULL;
    for (int i = st->first_op; i < st->first_op + st->n_ops; i++) {
        const Op *op = f->ops[i];
        if (op_fusion(op) != FUSE_CONTRACTION) continue;
        if (found != NULL) {
            snprintf(c->err, c->err_size, "two contractions (%%%s, %%%s) in one step",
                     found->result->name, op->result->name);
            return NULL;
        }
        found = op;
    }
    return found;
}

/* Where the contraction writes its raw result: its own buffer when the step writes it, else
 * the first write of its size (the epilogue then rewrites it element by element). */
static int staging_buffer(LowerCtx *c, const Op *op) {
    const Step *st = &c->s->steps[c->step];
    if (c->buf_of[op->result->id] >= 0) return c->buf_of[op->result->id];
    for (int w = 0; w < st->n_writes; w++) {
        const Value *v = st->writes[w];
        if (v->dtype == DT_F32 && shape_numel(&v->shape) == shape_numel(&op->result->shape))
            return c->buf_of[v->id];
    }
    return -1;
}

int lower_contraction(LowerCtx *c) {
    const Step *st = &c->s->steps[c->step];
    const Op *op = find_contraction(c);
    if (op == NULL) {
        if (!c->err[0]) snprintf(c->err, c->err_size, "no contraction in a contraction step");
        return -1;
    }
    OpBufs b = {staging_buffer(c, op), {0}};
    if (b.out < 0) {
        snprintf(c->err, c->err_size, "%%%s: no write of the step can hold the contraction",
                 op->result->name);
        return -1;
    }
    for (int i = 0; i < op->n_inputs; i++) {
        b.in[i] = c->buf_of[op->inputs[i]->id];
        if (b.in[i] < 0) {
            snprintf(c->err, c->err_size, "%%%s: operand %%%s is computed in the same step",
                     op->result->name, op->inputs[i]->name);
            return -1;
        }
    }
    bool plain = st->n_writes == 1 && st->writes[0] == op->result;
    GroupEpilogue g = {{emit_group, NULL}, c, op, {NULL, NULL}, {NULL, NULL}};
    Epilogue *ep = plain ? NULL : &g.ep;
    int rc = op->kind == OP_MATMUL || op->kind == OP_LINEAR
                 ? lower_gemm_op(c->kd, op, &b, ep, c->err, c->err_size)
                 : lower_conv_op(c->kd, &c->cuda, op, &b, ep, c->err, c->err_size);
    for (int k = 0; k < 2; k++) {
        if (rc == 0 && g.ev[k] != NULL && ev_error(g.ev[k])) {
            snprintf(c->err, c->err_size, "%s", ev_error(g.ev[k]));
            rc = -1;
        }
        eval_free(g.ev[k]);
    }
    return rc;
}
