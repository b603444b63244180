/* attention.c — finds the attention pattern (attention.h) around a softmax.
 *
 * Needs: shapes known. Reads only. Every op of a match lies among the given ops (a function's,
 * or one fused group's), and every value it computes that is not the context (forward) or dQ,
 * dK, dV (backward) is used by the pattern alone, so a fused kernel never has to write it.
 *
 * The chains are recognized by shape, not by op names: the pre ops are elementwise ops whose
 * chain operand has the scores' shape (their other operands may broadcast: the mask); the post
 * ops the same, with other operands of another shape (dropout's rng), which is what keeps the
 * backward's mul(P, dP - sum) out of the forward chain. The backward chain is every elementwise
 * op and last-axis sum that the values dP, P and P' reach before the dQ/dK matmuls, with sums
 * that depend on no other sum (one round along the row, as softmax's backward needs).
 */
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "ops.h"

typedef struct Uses {
    int *start;        /* per value id: consumers are list[start[id] .. start[id + 1]) */
    const Op **list;
    bool *output;      /* per value id: returned by the function */
    int *index;        /* per value id: its defining op's position among the ops, or -1 */
} Uses;

static void uses_free(Uses *u) {
    free(u->start);
    free(u->list);
    free(u->output);
    free(u->index);
}

static int uses_build(const Function *f, const Op *const *ops, int n, Uses *u) {
    size_t nv = (size_t)f->n_values + 2;
    int edges = 0;
    for (int i = 0; i < n; i++) edges += ops[i]->n_inputs;
    u->start = calloc(nv, sizeof *u->start);
    u->list = malloc(sizeof *u->list * (size_t)(edges + 1));
    u->output = calloc(nv, sizeof *u->output);
    u->index = malloc(sizeof *u->index * nv);
    int *fill = malloc(sizeof *fill * nv);
    if (!u->start || !u->list || !u->output || !u->index || !fill) {
        free(fill);
        return -1;
    }
    for (size_t v = 0; v < nv; v++) u->index[v] = -1;
    for (int i = 0; i < n; i++) {
        u->index[ops[i]->result->id] = i;
        for (int k = 0; k < ops[i]->n_inputs; k++) u->start[ops[i]->inputs[k]->id + 1]++;
    }
    for (size_t v = 1; v < nv; v++) u->start[v] += u->start[v - 1];
    memcpy(fill, u->start, sizeof *fill * nv);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < ops[i]->n_inputs; k++) u->list[fill[ops[i]->inputs[k]->id]++] = ops[i];
    for (int o = 0; o < f->n_outputs; o++) u->output[f->outputs[o]->id] = true;
    free(fill);
    return 0;
}

static int n_uses(const Uses *u, const Value *v) {
    return u->start[v->id + 1] - u->start[v->id] + (u->output[v->id] ? 1 : 0);
}

static bool inside(const Uses *u, const Op *op) { return op != NULL && u->index[op->result->id] >= 0; }

static bool is_matmul(const Op *op, bool ta, bool tb) {
    return op->kind == OP_MATMUL && op_bool(op, "transpose_a") == ta &&
           op_bool(op, "transpose_b") == tb;
}

static bool pointwise(const Op *op) {
    FusionKind k = op_fusion(op);
    return k == FUSE_ELEMENTWISE || k == FUSE_BROADCAST;
}

/* [..., r, c] with the batch axes of s. */
static bool batch_shape(const Shape *x, const Shape *s, int64_t rows) {
    if (x->rank != s->rank || x->dims[x->rank - 2] != rows) return false;
    for (int d = 0; d < s->rank - 2; d++)
        if (x->dims[d] != s->dims[d]) return false;
    return true;
}

/* From value x (the softmax's input, or a value of the pre chain) back to the scores. */
static bool walk_pre(const Uses *u, const Value *x, const Shape *s, AttnMatch *m) {
    const Op *op = x->def;
    if (!inside(u, op) || n_uses(u, x) != 1 || !shape_equal(&x->shape, s)) return false;
    if (is_matmul(op, false, true)) {
        m->scores = op;
        return true;
    }
    if (!pointwise(op) || m->n_pre == ATTN_MAX_CHAIN) return false;
    for (int i = 0; i < op->n_inputs; i++) {
        int saved = m->n_pre;
        m->pre[m->n_pre++] = op;
        if (shape_equal(&op->inputs[i]->shape, s) && walk_pre(u, op->inputs[i], s, m)) return true;
        m->n_pre = saved;
    }
    return false;
}

/* From value x (P, or a value of the post chain) forward to the matmul that reads P' first:
 * the context (transpose_a false), or, in a backward group that does not hold the forward's
 * context, dV (transpose_a true). */
static bool walk_post(const Uses *u, const Value *x, const Shape *s, AttnMatch *m, bool ta) {
    for (int k = u->start[x->id]; k < u->start[x->id + 1]; k++) {
        const Op *c = u->list[k];
        if (is_matmul(c, ta, false) && c->inputs[0] == x) {
            if (!ta) m->context = c;
            m->pp = x;
            return true;
        }
        if (!pointwise(c) || !shape_equal(&c->result->shape, s) || m->n_post == ATTN_MAX_CHAIN)
            continue;
        bool chain_only = true; /* other operands of other shapes (dropout's rng) */
        for (int i = 0; i < c->n_inputs; i++)
            if (c->inputs[i] != x && shape_equal(&c->inputs[i]->shape, s)) chain_only = false;
        if (!chain_only) continue;
        m->post[m->n_post++] = c;
        if (walk_post(u, c->result, s, m, ta)) return true;
        m->n_post--;
    }
    return false;
}

static bool forward(const Uses *u, const Op *softmax, AttnMatch *m) {
    const Shape *s = &softmax->result->shape;
    if (s->rank < 2 || axis_normalize(op_int(softmax, "axis"), s->rank) != s->rank - 1)
        return false;
    if (!walk_pre(u, softmax->inputs[0], s, m)) {
        /* the softmax may read the scores directly */
        m->n_pre = 0;
        const Op *op = softmax->inputs[0]->def;
        if (!inside(u, op) || !is_matmul(op, false, true) || n_uses(u, softmax->inputs[0]) != 1)
            return false;
        m->scores = op;
    }
    for (int i = 0, j = m->n_pre - 1; i < j; i++, j--) { /* walked backward: reverse */
        const Op *t = m->pre[i];
        m->pre[i] = m->pre[j];
        m->pre[j] = t;
    }
    m->softmax = softmax;
    if (!walk_post(u, softmax->result, s, m, false)) {
        m->n_post = 0;
        if (!walk_post(u, softmax->result, s, m, true)) return false; /* backward only */
    }
    m->q = m->scores->inputs[0];
    m->k = m->scores->inputs[1];
    if (m->context != NULL) m->v = m->context->inputs[1];
    int64_t tq = s->dims[s->rank - 2], tk = s->dims[s->rank - 1];
    return batch_shape(&m->q->shape, s, tq) && batch_shape(&m->k->shape, s, tk) &&
           m->q->shape.dims[s->rank - 1] == m->k->shape.dims[s->rank - 1];
}

/* ---- backward --------------------------------------------------------------------------- */

static const Op *consumer(const Uses *u, const Value *x, const Value *second, bool ta, bool tb,
                          int operand) {
    for (int k = u->start[x->id]; k < u->start[x->id + 1]; k++) {
        const Op *c = u->list[k];
        if (is_matmul(c, ta, tb) && c->inputs[operand] == x &&
            (second == NULL || c->inputs[1 - operand] == second))
            return c;
    }
    return NULL;
}

static bool forward_member(const AttnMatch *m, const Op *op) {
    if (op == m->scores || op == m->softmax || op == m->context) return true;
    for (int i = 0; i < m->n_pre; i++)
        if (op == m->pre[i]) return true;
    for (int i = 0; i < m->n_post; i++)
        if (op == m->post[i]) return true;
    return false;
}

/* A sum or mean over the last axis that keeps it. */
static bool last_axis_sum(const Op *op, const Shape *s) {
    bool reduced[IR_MAX_RANK];
    if ((op->kind != OP_SUM && op->kind != OP_MEAN) || !op_reduced_axes(op, reduced)) return false;
    if (!op_bool(op, "keepdim") || !shape_equal(&op->inputs[0]->shape, s)) return false;
    for (int d = 0; d < s->rank; d++)
        if (reduced[d] != (d == s->rank - 1)) return false;
    return true;
}

typedef struct Chain {
    const Uses *u;
    AttnMatch *m;
    bool *in;    /* per value id: dP, P, P' or a chain result */
    int *level;  /* per value id: sums below it (0 or 1) */
} Chain;

/* Adds op to the chain when it continues it; false when it cannot be part of it. */
static bool take(Chain *c, const Op *op, const Shape *s) {
    AttnMatch *m = c->m;
    if (c->in[op->result->id]) return true;
    bool sum = last_axis_sum(op, s);
    if (!sum && (!pointwise(op) || !shape_equal(&op->result->shape, s))) return false;
    int level = 0;
    for (int i = 0; i < op->n_inputs; i++) {
        const Value *x = op->inputs[i];
        if (c->in[x->id]) {
            if (c->level[x->id] > level) level = c->level[x->id];
        } else if (inside(c->u, x->def) && forward_member(m, x->def)) {
            return false; /* it would read a forward value that is never stored */
        }
    }
    if (sum && level > 0) return false; /* a second round along the row */
    if (m->n_bwd == ATTN_MAX_BACKWARD) return false;
    m->bwd[m->n_bwd++] = op;
    c->in[op->result->id] = true;
    c->level[op->result->id] = level + (sum ? 1 : 0);
    return true;
}

static bool backward(const Function *f, const Uses *u, AttnMatch *m) {
    const Shape *s = &m->softmax->result->shape;
    m->d_v = consumer(u, m->pp, NULL, true, false, 0);
    if (m->d_v == NULL) return false;
    m->d_o = m->d_v->inputs[1];
    m->d_p = consumer(u, m->d_o, m->v, false, true, 0);
    if (m->d_p == NULL) return false;
    m->v = m->d_p->inputs[1];
    int64_t tk = s->dims[s->rank - 1];
    if (!batch_shape(&m->v->shape, s, tk) || !batch_shape(&m->d_o->shape, s, s->dims[s->rank - 2]))
        return false;
    Chain c = {u, m, calloc((size_t)f->n_values + 1, sizeof(bool)),
               calloc((size_t)f->n_values + 1, sizeof(int))};
    bool ok = c.in != NULL && c.level != NULL;
    if (ok) {
        c.in[m->d_p->result->id] = c.in[m->softmax->result->id] = c.in[m->pp->id] = true;
        for (int i = 0; i < m->n_post; i++) c.in[m->post[i]->result->id] = true;
    }
    /* Grow the chain: every consumer of a chain value but the forward ops and the matmuls
     * joins it, until nothing new does. */
    for (int pass = 0; ok && pass < ATTN_MAX_BACKWARD; pass++) {
        int before = m->n_bwd;
        for (int v = 0; v < f->n_values && ok; v++) {
            if (!c.in[v]) continue;
            for (int k = u->start[v]; k < u->start[v + 1] && ok; k++) {
                const Op *op = u->list[k];
                if (forward_member(m, op) || op->kind == OP_MATMUL) continue;
                ok = take(&c, op, s);
            }
        }
        if (m->n_bwd == before) break;
    }
    /* G: the chain value (or dP) that the dQ and dK matmuls read */
    for (int i = m->n_bwd - 1; ok && i >= -1 && m->g == NULL; i--) {
        const Value *g = i >= 0 ? m->bwd[i]->result : m->d_p->result;
        const Op *dq = consumer(u, g, m->k, false, false, 0);
        const Op *dk = consumer(u, g, m->q, true, false, 0);
        if (dq != NULL && dk != NULL) m->g = g, m->d_q = dq, m->d_k = dk;
    }
    ok = ok && m->g != NULL;
    /* nothing outside the pattern may read a chain value but G's two matmuls */
    for (int i = 0; ok && i < m->n_bwd; i++) {
        const Value *x = m->bwd[i]->result;
        if (u->output[x->id]) ok = false;
        for (int k = u->start[x->id]; ok && k < u->start[x->id + 1]; k++) {
            const Op *op = u->list[k];
            ok = c.in[op->result->id] || (x == m->g && (op == m->d_q || op == m->d_k));
        }
    }
    /* program order */
    for (int i = 1; ok && i < m->n_bwd; i++)
        for (int j = i; j > 0 && u->index[m->bwd[j - 1]->result->id] > u->index[m->bwd[j]->result->id]; j--) {
            const Op *t = m->bwd[j];
            m->bwd[j] = m->bwd[j - 1];
            m->bwd[j - 1] = t;
        }
    free(c.in);
    free(c.level);
    return ok;
}

bool attn_match(const Function *f, const Op *const *ops, int n, const Op *softmax,
                AttnMatch *m) {
    memset(m, 0, sizeof *m);
    if (softmax->kind != OP_SOFTMAX) return false;
    Uses u;
    memset(&u, 0, sizeof u);
    bool ok = uses_build(f, ops, n, &u) == 0 && forward(&u, softmax, m);
    if (ok) {
        AttnMatch fwd = *m;
        if (!backward(f, &u, m)) {
            *m = fwd;
            m->d_v = m->d_p = m->d_q = m->d_k = NULL;
            m->d_o = m->g = NULL;
            m->n_bwd = 0;
            ok = m->context != NULL && batch_shape(&m->v->shape, &softmax->result->shape,
                                                   softmax->result->shape.dims[softmax->result->shape.rank - 1]);
        }
    }
    uses_free(&u);
    return ok;
}
