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
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "ops.h"

/* Who reads what, among the given ops only. Values are found through a hash of their ids and
 * every array is sized by the ops, not by the function: code generation asks once per
 * attention group (a few dozen ops of a function of millions of values), and the fusion pass
 * builds one index for the whole function and matches every softmax against it, so each match
 * costs its own pattern's size, not the function's (docs/benchmarks.md, compile time). When
 * the hash table would be at least as large as the function's value table (the fusion pass's
 * whole-function index), value ids index `val` directly instead: the same slots, no probing. */
struct AttnIndex {
    const Function *f;
    int n_values;      /* f->n_values when built: a later value is not in the index */
    int *key, *val;    /* open addressing: value id -> slot; key -1 is empty */
    size_t mask;
    bool direct;       /* val[value id] is the slot (-1: none), key unused */
    int n_slots;       /* values read or computed by the ops */
    int *id;           /* per slot: its value id */
    int *start;        /* per slot: consumers are list[start[s] .. start[s + 1]) */
    const Op **list;
    bool *output;      /* per slot: returned by the function */
    int *index;        /* per slot: its defining op's position among the ops, or -1 */
    bool *dirty;       /* per slot: its consumers changed since the index was built */
    bool stale;        /* a lookup met a dirty or a newer value: the answer may be wrong */
};
typedef AttnIndex Uses;

void attn_index_free(AttnIndex *u) {
    if (u == NULL) return;
    free(u->key);
    free(u->val);
    free(u->id);
    free(u->start);
    free(u->list);
    free(u->output);
    free(u->index);
    free(u->dirty);
    free(u);
}

static size_t hash_id(int id) { return (size_t)((uint32_t)id * 2654435761u); }

/* The slot of value id, or -1. */
static int slot_of_id(const Uses *u, int id) {
    if (u->direct) return u->val[id];
    for (size_t h = hash_id(id) & u->mask;; h = (h + 1) & u->mask) {
        if (u->key[h] == id) return u->val[h];
        if (u->key[h] < 0) return -1;
    }
}

/* The slot of x, or -1 when no op of the index reads or computes it. Looking at a value whose
 * consumers changed after the build (or one made after it) marks the index stale: the caller
 * rebuilds it and asks again (attn_index_stale). */
static int slot(const Uses *u, const Value *x) {
    Uses *w = (Uses *)u; /* `stale` is a cache flag, not part of what the index says */
    if (x->id >= u->n_values) {
        w->stale = true;
        return -1;
    }
    int k = slot_of_id(u, x->id);
    if (k >= 0 && u->dirty[k]) w->stale = true;
    return k;
}

static int add_slot(Uses *u, int id) {
    if (u->direct) {
        if (u->val[id] >= 0) return u->val[id];
        u->val[id] = u->n_slots;
    } else {
        size_t h = hash_id(id) & u->mask;
        for (; u->key[h] >= 0; h = (h + 1) & u->mask)
            if (u->key[h] == id) return u->val[h];
        u->key[h] = id;
        u->val[h] = u->n_slots;
    }
    u->id[u->n_slots] = id;
    return u->n_slots++;
}

AttnIndex *attn_index_new(const Function *f, const Op *const *ops, int n,
                          const bool *returned) {
    Uses *u = calloc(1, sizeof *u);
    if (u == NULL) return NULL;
    u->f = f;
    u->n_values = f->n_values;
    size_t edges = 0;
    for (int i = 0; i < n; i++) edges += (size_t)ops[i]->n_inputs;
    size_t most = edges + (size_t)n + 1, table = 16;
    ir_work_add((int64_t)most);
    while (table < 2 * most) table *= 2;
    u->mask = table - 1;
    u->direct = (size_t)f->n_values <= table;
    if (u->direct) table = (size_t)f->n_values + 1;
    u->key = malloc(sizeof *u->key * (u->direct ? 1 : table));
    u->val = malloc(sizeof *u->val * table);
    u->id = malloc(sizeof *u->id * most);
    u->start = calloc(most + 1, sizeof *u->start);
    u->list = malloc(sizeof *u->list * (edges + 1));
    u->output = calloc(most, sizeof *u->output);
    u->index = malloc(sizeof *u->index * most);
    u->dirty = calloc(most, sizeof *u->dirty);
    int *fill = malloc(sizeof *fill * (most + 1));
    if (!u->key || !u->val || !u->id || !u->start || !u->list || !u->output || !u->index ||
        !u->dirty || !fill) {
        free(fill);
        attn_index_free(u);
        return NULL;
    }
    memset(u->direct ? u->val : u->key, 0xff, sizeof(int) * table); /* all -1: empty */
    for (size_t v = 0; v < most; v++) u->index[v] = -1;
    for (int i = 0; i < n; i++) {
        u->index[add_slot(u, ops[i]->result->id)] = i;
        for (int k = 0; k < ops[i]->n_inputs; k++) u->start[add_slot(u, ops[i]->inputs[k]->id) + 1]++;
    }
    for (int v = 1; v <= u->n_slots; v++) u->start[v] += u->start[v - 1];
    memcpy(fill, u->start, sizeof *fill * (size_t)(u->n_slots + 1));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < ops[i]->n_inputs; k++)
            u->list[fill[slot_of_id(u, ops[i]->inputs[k]->id)]++] = ops[i];
    if (returned != NULL) {
        for (int k = 0; k < u->n_slots; k++) u->output[k] = returned[u->id[k]];
    } else {
        ir_work_add(f->n_outputs);
        for (int o = 0; o < f->n_outputs; o++) {
            int k = f->outputs[o]->id < u->n_values ? slot_of_id(u, f->outputs[o]->id) : -1;
            if (k >= 0) u->output[k] = true;
        }
    }
    free(fill);
    return u;
}

void attn_index_touch(AttnIndex *u, const Value *x) {
    int k = x->id < u->n_values ? slot_of_id(u, x->id) : -1;
    if (k >= 0) u->dirty[k] = true;
}

bool attn_index_stale(const AttnIndex *u) { return u->stale; }

int attn_index_position(const AttnIndex *u, const Op *op) {
    int k = slot(u, op->result);
    return k >= 0 ? u->index[k] : -1;
}

/* Consumers of x: list[*first .. *end). */
static void consumers(const Uses *u, const Value *x, int *first, int *end) {
    int k = slot(u, x);
    *first = k >= 0 ? u->start[k] : 0;
    *end = k >= 0 ? u->start[k + 1] : 0;
}

static int n_uses(const Uses *u, const Value *v) {
    int k = slot(u, v);
    if (k < 0) return 0;
    return u->start[k + 1] - u->start[k] + (u->output[k] ? 1 : 0);
}

static bool inside(const Uses *u, const Op *op) {
    if (op == NULL) return false;
    int k = slot(u, op->result);
    return k >= 0 && u->index[k] >= 0;
}

static bool is_output(const Uses *u, const Value *v) {
    int k = slot(u, v);
    return k >= 0 && u->output[k];
}

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
    int first, end;
    consumers(u, x, &first, &end);
    for (int k = first; k < end; k++) {
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
    /* P and P' are never stored by the fused kernels: a function that returns one (the
     * captioners' `attend` entry returns the probabilities) keeps its ops unfused */
    if (is_output(u, softmax->result)) return false;
    for (int i = 0; i < m->n_post; i++)
        if (is_output(u, m->post[i]->result)) return false;
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
    int first, end;
    consumers(u, x, &first, &end);
    for (int k = first; k < end; k++) {
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

/* The chain's values (dP, P, P', the post values and what take() added) with their levels:
 * at most a few dozen, so a list searched linearly, not arrays over the function's values. */
enum { CHAIN_MAX = 3 + ATTN_MAX_CHAIN + ATTN_MAX_BACKWARD };

typedef struct Chain {
    const Uses *u;
    AttnMatch *m;
    const Value *val[CHAIN_MAX];
    int level[CHAIN_MAX]; /* sums below it (0 or 1) */
    int n;
} Chain;

static int chain_find(const Chain *c, const Value *x) {
    for (int i = 0; i < c->n; i++)
        if (c->val[i] == x) return i;
    return -1;
}

static void chain_add(Chain *c, const Value *x, int level) {
    if (chain_find(c, x) >= 0) return;
    IR_ASSERT(c->n < CHAIN_MAX);
    c->val[c->n] = x;
    c->level[c->n++] = level;
}

/* Adds op to the chain when it continues it; false when it cannot be part of it. */
static bool take(Chain *c, const Op *op, const Shape *s) {
    AttnMatch *m = c->m;
    if (chain_find(c, op->result) >= 0) return true;
    bool sum = last_axis_sum(op, s);
    if (!sum && (!pointwise(op) || !shape_equal(&op->result->shape, s))) return false;
    int level = 0;
    for (int i = 0; i < op->n_inputs; i++) {
        const Value *x = op->inputs[i];
        int k = chain_find(c, x);
        if (k >= 0) {
            if (c->level[k] > level) level = c->level[k];
        } else if (inside(c->u, x->def) && forward_member(m, x->def)) {
            return false; /* it would read a forward value that is never stored */
        }
    }
    if (sum && level > 0) return false; /* a second round along the row */
    if (m->n_bwd == ATTN_MAX_BACKWARD) return false;
    m->bwd[m->n_bwd++] = op;
    chain_add(c, op->result, level + (sum ? 1 : 0));
    return true;
}

/* The chain value with the smallest id above `after`, or NULL: the chain is grown in value id
 * order, as a walk over all the function's values would visit it (a value added during a round
 * is visited in that round when its id is higher), so the order, and with it the levels, do
 * not depend on how the chain is stored. */
static const Value *next_by_id(const Chain *c, int after) {
    const Value *best = NULL;
    for (int i = 0; i < c->n; i++)
        if (c->val[i]->id > after && (best == NULL || c->val[i]->id < best->id)) best = c->val[i];
    return best;
}

static bool backward(const Uses *u, AttnMatch *m) {
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
    Chain c = {.u = u, .m = m};
    chain_add(&c, m->d_p->result, 0);
    chain_add(&c, m->softmax->result, 0);
    chain_add(&c, m->pp, 0);
    for (int i = 0; i < m->n_post; i++) chain_add(&c, m->post[i]->result, 0);
    bool ok = true;
    /* Grow the chain: every consumer of a chain value but the forward ops and the matmuls
     * joins it, until nothing new does. */
    for (int pass = 0; ok && pass < ATTN_MAX_BACKWARD; pass++) {
        int before = m->n_bwd;
        for (const Value *x = next_by_id(&c, -1); x != NULL && ok; x = next_by_id(&c, x->id)) {
            int first, end;
            consumers(u, x, &first, &end);
            for (int k = first; k < end && ok; k++) {
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
        if (is_output(u, x)) ok = false;
        int first = 0, end = 0;
        if (ok) consumers(u, x, &first, &end);
        for (int k = first; ok && k < end; k++) {
            const Op *op = u->list[k];
            ok = chain_find(&c, op->result) >= 0 || (x == m->g && (op == m->d_q || op == m->d_k));
        }
    }
    /* program order */
    for (int i = 1; ok && i < m->n_bwd; i++)
        for (int j = i; j > 0 && attn_index_position(u, m->bwd[j - 1]) > attn_index_position(u, m->bwd[j]); j--) {
            const Op *t = m->bwd[j];
            m->bwd[j] = m->bwd[j - 1];
            m->bwd[j - 1] = t;
        }
    return ok;
}

/* Without a backward that recomputes them, P and the post values may be read only by the
 * next op of the chain (the fused kernel keeps them in registers or its workspace). */
static bool read_by_pattern_alone(const Uses *u, const AttnMatch *m) {
    if (n_uses(u, m->softmax->result) != 1) return false;
    for (int i = 0; i < m->n_post; i++)
        if (n_uses(u, m->post[i]->result) != 1) return false;
    return true;
}

bool attn_match_in(const AttnIndex *u, const Op *softmax, AttnMatch *m) {
    ((AttnIndex *)u)->stale = false; /* says whether this match met a changed value */
    memset(m, 0, sizeof *m);
    if (softmax->kind != OP_SOFTMAX) return false;
    bool ok = forward(u, softmax, m);
    if (ok) {
        AttnMatch fwd = *m;
        if (!backward(u, m)) {
            *m = fwd;
            m->d_v = m->d_p = m->d_q = m->d_k = NULL;
            m->d_o = m->g = NULL;
            m->n_bwd = 0;
            ok = m->context != NULL && read_by_pattern_alone(u, m) && batch_shape(&m->v->shape, &softmax->result->shape,
                                                   softmax->result->shape.dims[softmax->result->shape.rank - 1]);
        }
    }
    return ok;
}

bool attn_match(const Function *f, const Op *const *ops, int n, const bool *returned,
                const Op *softmax, AttnMatch *m) {
    memset(m, 0, sizeof *m);
    if (softmax->kind != OP_SOFTMAX) return false;
    AttnIndex *u = attn_index_new(f, ops, n, returned);
    bool ok = u != NULL && attn_match_in(u, softmax, m);
    attn_index_free(u);
    return ok;
}
