/* fuse.c — the fusion pass: partitions every entry point's ops into fused groups, each of
 * which runs as ONE kernel (docs/fusion.md).
 *
 * Needs: verified functions with every shape known (the training pass has run).
 * Does: reorders each function's ops so that every group is a contiguous run, and records
 * the groups (ir.h, FusedGroup). No op is added, removed or changed.
 * Keeps true: SSA order (a value is defined before every use), so every later stage and the
 * reference interpreter, which ignore groups, compute exactly what they computed before.
 *
 * The rules come from each op's fusion kind (ops.def, op_fusion()):
 *
 *   elementwise < broadcast < injective < reduction < contraction < opaque
 *
 *   - An elementwise or broadcast op computes each element from its operands' elements, so a
 *     chain of them, with the layout ops between (transpose, slice, concat, gathers: an
 *     element reads one element elsewhere), is one loop over the elements: a group joins
 *     an op to a group of its operands' producers ("fused.elementwise").
 *   - A reduction (sum, mean, max, reduce_to_shape, softmax, layer_norm, batch_norm in
 *     training mode: ops.h, op_reduced_axes) absorbs the elementwise ops that feed it (its
 *     prologue; a value also read elsewhere is then written by the group, when it is the size
 *     of what the group reduces) and the elementwise ops that use its results (its epilogue),
 *     and reductions of the same rows that share an input join: one kernel per row with
 *     passes along it (codegen/lower_rows.c). softmax, LayerNorm, BatchNorm and their
 *     backward ops become one kernel each; the LayerNorm and BatchNorm parameter gradients
 *     (sums over the other axes) one more.
 *   - A contraction (matmul, linear, conv2d and its gradients) absorbs the chain of
 *     elementwise ops that consume its result, from each value its first reader that can
 *     join (bias, BatchNorm with stored statistics, ReLU, scale, residual add): its epilogue.
 *     A value of the chain read elsewhere too is stored by the group as well. Two
 *     contractions never merge (except in the attention pattern).
 *   - Reductions claim their prologue before contractions claim their epilogue: on the CPU a
 *     contraction is a library call whose epilogue is one more pass over its output, while a
 *     reduction's prologue runs inside the pass it makes anyway.
 *   - Window and whole-tensor reductions (the pools, cross_entropy) and opaque ops
 *     (scatter_add) run alone; `param` reads state and views (reshape) share bytes, so
 *     neither needs a kernel of its own (views join the group that reads them).
 *   - Whole-tensor sums and the scalar arithmetic on them (the gradient norm and the clip
 *     factor, the bias corrections of the learning rate) merge into one kernel
 *     ("fused.multi_reduction"), and the elementwise groups whose results are all new state
 *     that nothing else reads (every parameter's optimizer update) into one more
 *     ("fused.multi_tensor"): a loop over all their elements back to back.
 *
 * Two groups merge only if no path leads from one to the other through a third: the merged
 * group would have to run both before and after it. The pass keeps the groups in a
 * topological order, so this is one search forward from the earlier group, bounded by the
 * later one's position (ops past it cannot reach it); a merge then moves what depends on the
 * earlier group after the merged one. Every search is bounded that way, which keeps the pass
 * near-linear on layered models.
 *
 * Groups are named after what they hold: conv_bn_relu, conv_bn (conv2d + BatchNorm with
 * stored statistics, + ReLU), contraction (any other contraction with an epilogue),
 * residual_layernorm (an add feeding a LayerNorm), layernorm, softmax, batch_norm,
 * reduction (other reductions: LayerNorm / BatchNorm backward, bias gradients),
 * multi_reduction, multi_tensor, elementwise. An op that merges with nothing is no group.
 */
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "diag.h"
#include "ops.h"
#include "passes.h"

typedef enum { C_PARAM, C_VIEW, C_POINT, C_LAYOUT, C_ROW, C_CONTRACT, C_ALONE } OpClass;
typedef enum { G_NONE, G_POINT, G_ROW, G_CONTRACT, G_ATTN } GroupKind;

/* An attention found before the groups are formed: its ops, forward and backward. */
typedef struct AttnSets {
    const Op **fwd, **bwd;
    int n_fwd, n_bwd;
} AttnSets;

typedef struct Fuser {
    Function *f;
    int n;              /* ops */
    OpClass *cls;       /* per op */
    int64_t *numel;     /* per op: its result's elements */
    int *op_of_value;   /* per value id: its defining op, or -1 */
    int *cons_start, *cons; /* consumers (op indices) of op i's result: cons[cons_start[i]..] */
    int *input_of_value;    /* per value id: its index among the function's inputs, or -1 */
    int *in_cons_start, *in_cons; /* consumers of function input i, the same way */
    bool *is_output;    /* per op: its result is returned */
    bool *plain_output; /* per op: returned under a name that is not new state ("@X") */
    /* groups: union-find over op indices; the root holds the group's facts */
    int *parent, *next, *head, *tail, *size;
    GroupKind *kind;
    const Shape **dom;  /* G_ROW: the reduced domain; G_CONTRACT: the contraction's result */
    bool (*reduced)[IR_MAX_RANK];
    int64_t *rows;      /* G_ROW: rows of its reductions */
    /* the topological order of the groups (roots) */
    int *order, *pos, n_order;
    /* search scratch */
    int *stamp, cur, *stack, *window;
    int64_t merges;     /* groups joined so far */
    int64_t *siblings_done; /* per root: `merges` after a join_siblings walk that joined
                             * nothing (-1: none), so an unchanged group is not walked again */
    AttnSets *attn;     /* the attention patterns of the function */
    int n_attn;
} Fuser;

static int find(Fuser *u, int x) {
    while (u->parent[x] != x) {
        u->parent[x] = u->parent[u->parent[x]];
        x = u->parent[x];
    }
    return x;
}

static int group_of_value(Fuser *u, const Value *v) {
    int op = u->op_of_value[v->id];
    return op < 0 ? -1 : find(u, op);
}

/* ---- classification ----------------------------------------------------------------------- */

static OpClass classify(const Op *op) {
    bool reduced[IR_MAX_RANK];
    if (op->kind == OP_PARAM) return C_PARAM;
    if (op_is_view(op)) return C_VIEW;
    if (op_reduced_axes(op, reduced)) return C_ROW;
    switch (op_fusion(op)) {
    case FUSE_ELEMENTWISE:
    case FUSE_BROADCAST: return C_POINT;
    case FUSE_INJECTIVE: return op->kind == OP_UPDATE_SLICE ? C_ALONE : C_LAYOUT;
    case FUSE_CONTRACTION: return C_CONTRACT;
    default: return C_ALONE;
    }
}

/* Rows and domain of reduction op. */
static int64_t reduction_rows(const Op *op, bool reduced[IR_MAX_RANK]) {
    op_reduced_axes(op, reduced);
    const Shape *x = &op->inputs[0]->shape;
    int64_t rows = 1;
    for (int d = 0; d < x->rank; d++)
        if (!reduced[d]) rows *= x->dims[d];
    return rows;
}

/* ---- the order and merging ---------------------------------------------------------------- */

/* Searches every group reachable from a whose position lies between a's and b's (marking it
 * in u->stamp).
 * Returns true when one of them (not a itself) has an edge into b: a and b cannot merge. */
static bool reaches_through(Fuser *u, int a, int b) {
    int lo = u->pos[a], hi = u->pos[b], top = 0;
    u->cur++;
    u->stamp[a] = u->cur;
    u->stack[top++] = a;
    while (top > 0) {
        int g = u->stack[--top];
        for (int m = u->head[g]; m >= 0; m = u->next[m])
            for (int k = u->cons_start[m]; k < u->cons_start[m + 1]; k++) {
                int h = find(u, u->cons[k]);
                if (h == b) {
                    if (g != a) return true;
                    continue;
                }
                if (h == g || u->stamp[h] == u->cur || u->pos[h] < lo || u->pos[h] > hi) continue;
                u->stamp[h] = u->cur;
                u->stack[top++] = h;
            }
    }
    return false;
}

/* The groups at positions [pos a, pos b] that depend on a move after the merged group;
 * the others stay before it. The slot the two groups free becomes a hole (-1), and so do the
 * window's holes: one pass, the groups that stay compacted in place, the others set aside. */
static void reorder(Fuser *u, int a, int b, int merged) {
    int lo = u->pos[a], hi = u->pos[b], n = lo, n_moved = 0;
    for (int p = lo; p <= hi; p++) {
        int g = u->order[p];
        if (g < 0 || g == a || g == b) continue;
        if (u->stamp[g] == u->cur) {
            u->window[n_moved++] = g;
        } else {
            u->order[n] = g;
            u->pos[g] = n++;
        }
    }
    u->order[n] = merged;
    u->pos[merged] = n++;
    for (int k = 0; k < n_moved; k++) {
        u->order[n] = u->window[k];
        u->pos[u->window[k]] = n++;
    }
    for (int p = n; p <= hi; p++) u->order[p] = -1;
}

/* Groups further apart than this in the order do not merge: the path search and the reorder
 * cost the distance, and an op of the backward trying to join the forward group of a value it
 * reads (always refused: the path runs through the loss) made the pass quadratic in depth.
 * Groups that do merge lie close together: the tiny captioner's furthest legal merge spans
 * far fewer positions (its kernel counts are the same with or without the bound). */
enum { MERGE_REACH = 4096 };

/* Makes root y's members members of root x's group (union-find and member list only). */
static void link(Fuser *u, int x, int y) {
    u->merges++;
    u->parent[y] = x;
    u->next[u->tail[x]] = u->head[y];
    u->tail[x] = u->tail[y];
    u->size[x] += u->size[y];
}

/* Merges groups x and y (roots) when no third group lies on a path between them; the merged
 * group keeps x's facts. Returns the merged root, or -1 when they cannot merge. */
static int merge(Fuser *u, int x, int y) {
    if (x == y) return x;
    int a = u->pos[x] < u->pos[y] ? x : y, b = a == x ? y : x;
    if (u->pos[b] - u->pos[a] > MERGE_REACH || reaches_through(u, a, b)) return -1;
    link(u, x, y);
    reorder(u, a, b, x);
    return x;
}

/* ---- facts about groups ------------------------------------------------------------------- */

static bool all_consumers_in(Fuser *u, int op, int g) {
    if (u->is_output[op]) return false;
    for (int k = u->cons_start[op]; k < u->cons_start[op + 1]; k++)
        if (find(u, u->cons[k]) != g) return false;
    return true;
}

static int n_consumers(const Fuser *u, int op) {
    return u->cons_start[op + 1] - u->cons_start[op] + (u->is_output[op] ? 1 : 0);
}

static int64_t numel_of_op(const Fuser *u, int op) { return u->numel[op]; }

/* A lone op or a group of elementwise, broadcast, layout ops and views. */
static bool pointwise_group(const Fuser *u, int g) {
    return u->kind[g] == G_POINT || (u->kind[g] == G_NONE && u->size[g] == 1 &&
                                     (u->cls[g] == C_POINT || u->cls[g] == C_LAYOUT ||
                                      u->cls[g] == C_VIEW));
}

/* Every value the group writes (read after it or returned) has one element, or one per row of
 * a G_ROW group: no element-level writes. */
static bool writes_only_size(Fuser *u, int g, int64_t size) {
    for (int m = u->head[g]; m >= 0; m = u->next[m])
        if (!all_consumers_in(u, m, g) && u->cls[m] != C_VIEW && numel_of_op(u, m) != size)
            return false;
    return true;
}

/* ---- attention: one kernel forward, one backward ----------------------------------------- */

/* A copy of op reading ins (same kind, attributes and type), appended to f. */
static Op *clone_op(Function *f, const Op *op, Value *const *ins) {
    char name[512];
    snprintf(name, sizeof name, "%s.re", op->result->name);
    Op *c = func_add_op(f, op->kind, ins, op->n_inputs, name, op->loc);
    memcpy(c->attrs, op->attrs, sizeof(AttrValue) * (size_t)op_info(op->kind)->n_attrs);
    c->result->dtype = op->result->dtype;
    c->result->shape = op->result->shape;
    return c;
}

/* op with operand `from` replaced by `to` (cloned), appended to f. */
static Value *clone_with(Function *f, const Op *op, const Value *from, Value *to) {
    Value *ins[16];
    IR_ASSERT(op->n_inputs <= 16);
    for (int i = 0; i < op->n_inputs; i++) ins[i] = op->inputs[i] == from ? to : op->inputs[i];
    return clone_op(f, op, ins)->result;
}

static void redirect(const Op *op, const Value *from, Value *to) {
    Op *w = (Op *)op; /* the pass owns the function */
    for (int i = 0; i < w->n_inputs; i++)
        if (w->inputs[i] == from) w->inputs[i] = to;
}

/* A transpose of Q, K or V is recomputed too, so the backward reads what the forward read. */
static Value *remat_operand(Function *f, const Value *x) {
    if (x->def == NULL || x->def->kind != OP_TRANSPOSE) return (Value *)x;
    return clone_op(f, x->def, x->def->inputs)->result;
}

/* Rematerialized copies are appended to f, and each block must go right before the first
 * backward op that reads it. Moving every block at once (an O(ops) memmove per attention made
 * deep models quadratic) is deferred: blocks are recorded here and placed in one pass. */
typedef struct Pending {
    int before; /* position (at the last placement) of the op the block goes before */
    int seq;    /* blocks before the same op keep the order they were made in */
    int first, n; /* the block: f->ops[first .. first + n) */
} Pending;

typedef struct Placer {
    Pending *items;
    int n, cap;
    int base; /* f->n_ops at the last placement: the ops before it are placed */
} Placer;

static int cmp_pending(const void *a, const void *b) {
    const Pending *x = a, *y = b;
    if (x->before != y->before) return x->before < y->before ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Puts every recorded block before its op, in one pass over f->ops: the same order as moving
 * each block as it was made (a later block before the same op lands after the earlier one). */
static void place_pending(Function *f, Placer *pl) {
    if (pl->n > 0) {
        ir_work_add(f->n_ops);
        qsort(pl->items, (size_t)pl->n, sizeof *pl->items, cmp_pending);
        Op **order = malloc(sizeof *order * (size_t)(f->n_ops + 1));
        if (order == NULL) ir_bug("out of memory in the fusion pass");
        int k = 0, b = 0;
        for (int i = 0; i < pl->base; i++) {
            for (; b < pl->n && pl->items[b].before == i; b++)
                for (int j = 0; j < pl->items[b].n; j++) order[k++] = f->ops[pl->items[b].first + j];
            order[k++] = f->ops[i];
        }
        IR_ASSERT(b == pl->n && k == f->n_ops);
        memcpy(f->ops, order, sizeof *order * (size_t)k);
        free(order);
    }
    pl->n = 0;
    pl->base = f->n_ops;
}

static void record_block(Placer *pl, int before, int first, int n) {
    if (pl->n == pl->cap) {
        pl->cap = pl->cap ? 2 * pl->cap : 64;
        pl->items = realloc(pl->items, sizeof *pl->items * (size_t)pl->cap);
        if (pl->items == NULL) ir_bug("out of memory in the fusion pass");
    }
    pl->items[pl->n] = (Pending){before, pl->n, first, n};
    pl->n++;
}

/* The backward of a matched attention reads recomputed copies of the scores, softmax and P'
 * (and of Q, K, V when they are transposes): the forward's values then never reach memory,
 * and the two kernels trade a second pass over Q.K for the [..., Tq, Tk] tensor. The copies go
 * right before the first backward op (recorded in pl, placed by place_pending). Returns the
 * backward's ops (the copies included). The index learns which values changed readers. */
static void rematerialize(Function *f, const AttnMatch *m, const Op **bwd, int *n_bwd,
                          AttnIndex *ix, Placer *pl) {
    int first = f->n_ops, n = 0;
    Value *q = remat_operand(f, m->q), *k = remat_operand(f, m->k), *v = remat_operand(f, m->v);
    Value *ins[2] = {q, k};
    Value *cur = clone_op(f, m->scores, ins)->result, *p, *pp;
    for (int i = 0; i < m->n_pre; i++)
        cur = clone_with(f, m->pre[i], i ? m->pre[i - 1]->result : m->scores->result, cur);
    p = cur = clone_with(f, m->softmax, m->softmax->inputs[0], cur);
    Value *post[ATTN_MAX_CHAIN];
    for (int i = 0; i < m->n_post; i++)
        post[i] = cur = clone_with(f, m->post[i], i ? m->post[i - 1]->result : m->softmax->result, cur);
    pp = cur;
    for (int i = first; i < f->n_ops; i++) {
        bwd[n++] = f->ops[i];
        for (int j = 0; j < f->ops[i]->n_inputs; j++) attn_index_touch(ix, f->ops[i]->inputs[j]);
    }
    const Op *users[ATTN_MAX_BACKWARD + 4] = {m->d_v, m->d_p, m->d_q, m->d_k};
    int n_users = 4;
    for (int i = 0; i < m->n_bwd; i++) users[n_users++] = m->bwd[i];
    int at = -1;
    for (int i = 0; i < n_users; i++) {
        const Op *op = users[i];
        redirect(op, m->pp, pp);
        redirect(op, m->softmax->result, p);
        for (int j = 0; j < m->n_post; j++) redirect(op, m->post[j]->result, post[j]);
        bwd[n++] = op;
        /* the users are ops of the index (a match on a stale index is redone), so their
         * positions there order them as f->ops does */
        int pos = attn_index_position(ix, op);
        IR_ASSERT(pos >= 0);
        if (at < 0 || pos < at) at = pos;
    }
    attn_index_touch(ix, m->pp);
    attn_index_touch(ix, m->softmax->result);
    for (int j = 0; j < m->n_post; j++) attn_index_touch(ix, m->post[j]->result);
    redirect(m->d_p, m->v, v);
    redirect(m->d_q, m->k, k);
    redirect(m->d_k, m->q, q);
    attn_index_touch(ix, m->v);
    attn_index_touch(ix, m->k);
    attn_index_touch(ix, m->q);
    record_block(pl, at, first, f->n_ops - first);
    *n_bwd = n;
}

static void attn_sets_free(AttnSets *a, int n) {
    for (int i = 0; i < n; i++) {
        free(a[i].fwd);
        free(a[i].bwd);
    }
    free(a);
}

/* Finds every attention of f, recomputes what its backward needs (rematerialize) and records
 * the ops of each kernel. Returns the number found, or -1 when out of memory. */
static int find_attention(Function *f, AttnSets **out) {
    int n_soft = 0;
    for (int i = 0; i < f->n_ops; i++) n_soft += f->ops[i]->kind == OP_SOFTMAX;
    const Op **soft = malloc(sizeof *soft * (size_t)(n_soft + 1));
    AttnSets *sets = calloc((size_t)n_soft + 1, sizeof *sets);
    if (soft == NULL || sets == NULL) {
        free(soft);
        free(sets);
        return -1;
    }
    n_soft = 0;
    for (int i = 0; i < f->n_ops; i++)
        if (f->ops[i]->kind == OP_SOFTMAX) soft[n_soft++] = f->ops[i];
    int n = 0;
    /* One index for all the softmaxes. A rematerialization changes who reads a few values; a
     * later match that looks at one of them (or at a copy) finds the index stale, and is redone
     * on a new index after the recorded copies are placed: the same result as a fresh index
     * per softmax, which made deep models quadratic. */
    Placer pl = {.base = f->n_ops};
    AttnIndex *ix = attn_index_new(f, (const Op *const *)f->ops, f->n_ops, NULL);
    for (int i = 0; ix != NULL && i < n_soft; i++) {
        AttnMatch m;
        bool found = attn_match_in(ix, soft[i], &m);
        if (attn_index_stale(ix)) {
            place_pending(f, &pl);
            attn_index_free(ix);
            ix = attn_index_new(f, (const Op *const *)f->ops, f->n_ops, NULL);
            found = ix != NULL && attn_match_in(ix, soft[i], &m);
        }
        if (!found) continue;
        AttnSets *a = &sets[n++];
        a->fwd = malloc(sizeof *a->fwd * (size_t)(2 * ATTN_MAX_CHAIN + 4));
        a->bwd = malloc(sizeof *a->bwd * (size_t)(2 * ATTN_MAX_CHAIN + ATTN_MAX_BACKWARD + 12));
        if (a->fwd == NULL || a->bwd == NULL) break;
        a->fwd[a->n_fwd++] = m.scores;
        for (int j = 0; j < m.n_pre; j++) a->fwd[a->n_fwd++] = m.pre[j];
        a->fwd[a->n_fwd++] = m.softmax;
        for (int j = 0; j < m.n_post; j++) a->fwd[a->n_fwd++] = m.post[j];
        a->fwd[a->n_fwd++] = m.context;
        if (m.d_v != NULL) rematerialize(f, &m, a->bwd, &a->n_bwd, ix, &pl);
    }
    place_pending(f, &pl);
    free(pl.items);
    free(soft);
    if (ix == NULL || (n > 0 && (sets[n - 1].fwd == NULL || sets[n - 1].bwd == NULL))) {
        attn_index_free(ix);
        attn_sets_free(sets, n);
        return -1;
    }
    attn_index_free(ix);
    *out = sets;
    return n;
}

/* Layout ops right around a group's ops: a transpose that only the group reads (Q, K, V, dO),
 * and a transpose that is all that reads a result (the context back to [B, T, H, d]). */
static void attention_neighbours(Fuser *u, int g) {
    for (int m = u->head[g]; m >= 0; m = u->next[m]) {
        const Op *o = u->f->ops[m];
        for (int i = 0; i < o->n_inputs; i++) {
            int p = u->op_of_value[o->inputs[i]->id];
            if (p >= 0 && u->cls[p] == C_LAYOUT && find(u, p) == p && all_consumers_in(u, p, g))
                merge(u, g, p);
        }
        if (n_consumers(u, m) == 1 && !u->is_output[m]) {
            int c = u->cons[u->cons_start[m]];
            if (u->cls[c] == C_LAYOUT && find(u, c) == c && u->f->ops[c]->kind == OP_TRANSPOSE)
                merge(u, g, c);
        }
    }
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The ops merge in program order, so each joins a group that already holds its producers. */
static int attention_group(Fuser *u, const Op *const *ops, int n, Diag *d) {
    int idx[2 * ATTN_MAX_CHAIN + ATTN_MAX_BACKWARD + 16];
    IR_ASSERT(n <= (int)(sizeof idx / sizeof idx[0]));
    for (int i = 0; i < n; i++) idx[i] = u->op_of_value[ops[i]->result->id];
    qsort(idx, (size_t)n, sizeof *idx, cmp_int);
    int g = idx[0];
    for (int i = 1; i < n; i++) {
        int m = merge(u, find(u, g), find(u, idx[i]));
        if (m < 0) {
            diag_internal(d, ops[0]->loc, "fusion of @%s: the attention at %%%s cannot be one "
                          "kernel", u->f->name, ops[0]->result->name);
            return -1;
        }
        g = m;
    }
    u->kind[find(u, g)] = G_ATTN;
    attention_neighbours(u, find(u, g));
    return 0;
}

static int fuse_attention(Fuser *u, Diag *d) {
    for (int i = 0; i < u->n_attn; i++) {
        AttnSets *a = &u->attn[i];
        if (attention_group(u, a->fwd, a->n_fwd, d) != 0) return -1;
        if (a->n_bwd > 0 && attention_group(u, a->bwd, a->n_bwd, d) != 0) return -1;
    }
    return 0;
}

/* ---- reductions --------------------------------------------------------------------------- */

static void set_row(Fuser *u, int g, int op) {
    u->kind[g] = G_ROW;
    u->dom[g] = &u->f->ops[op]->inputs[0]->shape;
    u->rows[g] = reduction_rows(u->f->ops[op], u->reduced[g]);
}

/* Can op p (a producer of row group g) join it? Elementwise ops and views; one also read
 * elsewhere is written by the group, so only at the size of the domain. */
static bool prologue_ok(Fuser *u, int g, int p) {
    if (find(u, p) != p || u->size[p] != 1) return false;
    OpClass c = u->cls[p];
    if (c != C_POINT && c != C_VIEW && c != C_LAYOUT) return false;
    if (all_consumers_in(u, p, g)) return true;
    return numel_of_op(u, p) == shape_numel(u->dom[g]) && c == C_POINT;
}

/* Can op c (a consumer of row group g) join it? An elementwise op of the domain's size or of
 * one value per row, whose other operands come from elsewhere or from g. */
static bool row_epilogue_ok(Fuser *u, int g, int c) {
    if (find(u, c) != c || u->size[c] != 1 || u->cls[c] != C_POINT) return false;
    int64_t n = numel_of_op(u, c);
    /* one-row groups (whole-tensor sums) take scalar arithmetic only: their one work item
     * should not do elementwise work for the next kernel */
    return n == u->rows[g] || (u->rows[g] > 1 && n == shape_numel(u->dom[g]));
}

static void absorb_prologue(Fuser *u, int g, int op) {
    const Op *o = u->f->ops[op];
    for (int i = 0; i < o->n_inputs; i++) {
        int p = u->op_of_value[o->inputs[i]->id];
        if (p < 0 || !prologue_ok(u, find(u, g), p)) continue;
        int m = merge(u, find(u, g), p);
        if (m >= 0) absorb_prologue(u, m, p);
    }
}

static void absorb_row_epilogue(Fuser *u, int op);

/* Merges row group h into g's when they reduce the same rows, then follows h's members. */
static void join_rows(Fuser *u, int g, int h) {
    if (h == g || u->kind[h] != G_ROW || u->rows[h] != u->rows[g] ||
        !shape_equal(u->dom[h], u->dom[g]) ||
        memcmp(u->reduced[h], u->reduced[g], sizeof u->reduced[g]) != 0)
        return;
    int first = u->head[h];
    if (merge(u, g, h) < 0) return;
    for (int m = first; m >= 0; m = u->next[m]) absorb_row_epilogue(u, m);
}

/* The users of op's result (op in a row group): elementwise ops of the group's sizes join it,
 * and so do row groups of the same rows (a statistic computed from another: LayerNorm's
 * backward); then their users, in turn. */
static void absorb_row_epilogue(Fuser *u, int op) {
    for (int k = u->cons_start[op]; k < u->cons_start[op + 1]; k++) {
        int g = find(u, op), c = u->cons[k], h = find(u, c);
        if (h == g) continue;
        if (u->kind[h] == G_ROW) {
            join_rows(u, g, h);
            continue;
        }
        if (!row_epilogue_ok(u, g, c)) continue;
        if (merge(u, g, c) >= 0) absorb_row_epilogue(u, c);
    }
}

/* Sets *list and *n to the consumers of value v (an op's result or a function input).
 * Returns false for any other value. */
static bool readers_of(const Fuser *u, const Value *v, const int **list, int *n) {
    int p = u->op_of_value[v->id], in = u->input_of_value[v->id];
    if (p >= 0) {
        *list = u->cons + u->cons_start[p];
        *n = u->cons_start[p + 1] - u->cons_start[p];
    } else if (in >= 0) {
        *list = u->in_cons + u->in_cons_start[in];
        *n = u->in_cons_start[in + 1] - u->in_cons_start[in];
    } else {
        return false;
    }
    return true;
}

/* Row groups of the same rows that read a common value of their domain's size join: one pass
 * reads it once (BatchNorm and its running-mean update, LayerNorm's two parameter gradients,
 * BatchNorm's bias gradient and the backward that computes its input in its prologue). Not
 * rng, scalars or per-row statistics, which many groups read. A value passed in
 * counts; state (param) does not: every group reads some weight. A group that ran before the
 * value's other reader could see it (a forward LayerNorm and the backward one, reading the
 * same input) cannot join it: the path through the loss closes a cycle, and merge refuses. */
static void join_siblings(Fuser *u, int op) {
    int g = find(u, op);
    /* a walk that joined nothing, with no merge anywhere since, would join nothing again (a
     * LayerNorm group holds several row ops, the whole-tensor sums' group thousands) */
    if (u->siblings_done[g] == u->merges) return;
    int64_t merges_before = u->merges;
    const Shape *dom = u->dom[g];
    int64_t dom_numel = dom != NULL ? shape_numel(dom) : -1;
    for (int m = u->head[g]; m >= 0; m = u->next[m]) {
        const Op *o = u->f->ops[m];
        for (int i = 0; i < o->n_inputs; i++) {
            const Value *v = o->inputs[i];
            int p = u->op_of_value[v->id], n;
            const int *readers;
            if (p >= 0 && (u->cls[p] == C_PARAM || find(u, p) == g)) continue;
            /* only a value the size of what the group reduces is worth reading once: not
             * rng, a scalar, or a per-row statistic many groups happen to read */
            if (dom == NULL || shape_numel(&v->shape) != dom_numel) continue;
            if (!readers_of(u, v, &readers, &n)) continue;
            for (int k = 0; k < n; k++) join_rows(u, g, find(u, readers[k]));
        }
    }
    if (u->merges == merges_before) u->siblings_done[g] = u->merges;
}

static void fuse_reductions(Fuser *u) {
    for (int op = 0; op < u->n; op++) {
        if (u->cls[op] != C_ROW || find(u, op) != op || u->size[op] != 1) continue;
        set_row(u, op, op);
        absorb_prologue(u, op, op);
    }
    for (int op = 0; op < u->n; op++)
        if (u->cls[op] == C_ROW) absorb_row_epilogue(u, op);
    for (int op = 0; op < u->n; op++)
        if (u->cls[op] == C_ROW) join_siblings(u, op);
}

/* ---- contractions ------------------------------------------------------------------------- */

/* Can elementwise op c (still alone) join contraction group g as its next epilogue op? */
static bool epilogue_candidate(Fuser *u, int g, int c) {
    if (find(u, c) != c || u->size[c] != 1) return false;
    if (u->cls[c] != C_POINT && u->cls[c] != C_VIEW) return false;
    return numel_of_op(u, c) == shape_numel(u->dom[find(u, g)]);
}

/* The chain of elementwise ops (and views) of the contraction's size that use its result:
 * from each value, its first reader that can join. A value with other readers too (a
 * gradient that needs the pre-activation: a C function's derivative reads its input;
 * relu's output read by relu_grad and by the dropout after it) is then stored by the group
 * as well (lower_contract.c writes every value read outside the group): that store happens
 * either way, the separate elementwise kernel and its pass over the tensor do not. */
static void absorb_contraction_epilogue(Fuser *u, int g, int op) {
    for (int k = u->cons_start[op]; k < u->cons_start[op + 1]; k++) {
        int c = u->cons[k];
        if (!epilogue_candidate(u, g, c)) continue;
        int m = merge(u, find(u, g), c);
        if (m >= 0) {
            absorb_contraction_epilogue(u, m, c);
            return;
        }
    }
}

static void fuse_contractions(Fuser *u) {
    for (int op = 0; op < u->n; op++) {
        if (u->cls[op] != C_CONTRACT || find(u, op) != op || u->size[op] != 1) continue;
        u->kind[op] = G_CONTRACT;
        u->dom[op] = &u->f->ops[op]->result->shape;
        absorb_contraction_epilogue(u, op, op);
    }
}

/* ---- elementwise chains ------------------------------------------------------------------- */

/* True when nothing outside group h but op reads what h computes. */
static bool only_feeds(Fuser *u, int h, int op) {
    for (int m = u->head[h]; m >= 0; m = u->next[m]) {
        if (u->is_output[m]) return false;
        for (int k = u->cons_start[m]; k < u->cons_start[m + 1]; k++) {
            int c = u->cons[k];
            if (c != op && find(u, c) != h) return false;
        }
    }
    return true;
}

static int64_t largest_numel(Fuser *u, int g) {
    int64_t n = 0;
    for (int m = u->head[g]; m >= 0; m = u->next[m])
        if (numel_of_op(u, m) > n) n = numel_of_op(u, m);
    return n;
}

/* Each elementwise or layout op joins the elementwise groups of its operands: those of its
 * size (one loop), and smaller ones that only it reads (a scalar computed per element). */
static void fuse_pointwise(Fuser *u) {
    for (int op = 0; op < u->n; op++) {
        OpClass c = u->cls[op];
        if ((c != C_POINT && c != C_LAYOUT) || find(u, op) != op || u->size[op] != 1) continue;
        const Op *o = u->f->ops[op];
        int64_t n = numel_of_op(u, op);
        for (int i = 0; i < o->n_inputs; i++) {
            int g = find(u, op), h = group_of_value(u, o->inputs[i]);
            if (h < 0 || h == g || !pointwise_group(u, h) || (u->size[h] == 1 && u->cls[h] == C_VIEW))
                continue;
            if (largest_numel(u, h) != n && !only_feeds(u, h, op)) continue;
            int m = merge(u, g, h);
            if (m >= 0) u->kind[m] = G_POINT;
        }
        /* views of its result join it */
        for (int k = u->cons_start[op]; k < u->cons_start[op + 1]; k++) {
            int v = u->cons[k];
            if (u->cls[v] == C_VIEW && find(u, v) == v) {
                int m = merge(u, find(u, op), v);
                if (m >= 0) u->kind[m] = G_POINT;
            }
        }
    }
}

/* A lone elementwise or layout op whose every user lies in one group joins it (the constant
 * epsilon of a LayerNorm backward, the clip threshold): it is then computed where it is used. */
static void absorb_leftovers(Fuser *u) {
    for (int op = 0; op < u->n; op++) {
        OpClass c = u->cls[op];
        if ((c != C_POINT && c != C_LAYOUT) || find(u, op) != op || u->size[op] != 1 ||
            u->is_output[op] || u->cons_start[op] == u->cons_start[op + 1])
            continue;
        int g = find(u, u->cons[u->cons_start[op]]);
        if (g == op || u->kind[g] == G_NONE || u->kind[g] == G_ATTN || !all_consumers_in(u, op, g))
            continue;
        bool operand = false; /* of the contraction itself: a kernel reads those from memory */
        for (int k = u->cons_start[op]; k < u->cons_start[op + 1]; k++)
            operand |= u->cls[u->cons[k]] == C_CONTRACT;
        if (!operand) merge(u, g, op);
    }
}

/* ---- across the program ------------------------------------------------------------------- */

/* A one-row reduction (whole-tensor sums; it may also write what feeds them), or elementwise
 * ops on scalars that compute something (a lone constant is left where it is: it often seeds
 * a computation far away, like the loss gradient the whole backward pass depends on). */
static bool scalar_group(Fuser *u, int g) {
    if (u->kind[g] == G_ROW) return u->rows[g] == 1;
    if (u->size[g] == 1 && u->f->ops[g]->n_inputs == 0) return false;
    return pointwise_group(u, g) && u->cls[g] != C_VIEW && writes_only_size(u, g, 1) &&
           largest_numel(u, g) == 1;
}

/* The scalar groups and the state sinks merge from the last one backwards: the growing group
 * is then always the later one, and a merge's path search starts from the new, small group
 * (from the big one it would rescan all its members every time: quadratic in model size). */
static void fuse_scalars(Fuser *u) {
    int acc = -1;
    for (int p = u->n_order - 1; p >= 0; p--) {
        int g = u->order[p];
        if (g < 0 || find(u, g) != g || !scalar_group(u, g)) continue;
        if (acc < 0) {
            acc = g;
            continue;
        }
        GroupKind k = u->kind[acc] == G_ROW || u->kind[g] == G_ROW ? G_ROW : G_POINT;
        int m = merge(u, acc, g);

        if (m < 0) {
            acc = g; /* a dependency through another group: start again from here */
            continue;
        }
        if (k == G_ROW && u->kind[m] != G_ROW) {
            int from = u->kind[g] == G_ROW ? g : acc;
            u->kind[m] = G_ROW;
            u->dom[m] = u->dom[from];
            memcpy(u->reduced[m], u->reduced[from], sizeof u->reduced[m]);
            u->rows[m] = 1;
        }
        u->kind[m] = k;
        acc = m; /* the merge moved only groups between g and acc, all seen already */
    }
}

/* An elementwise group whose every write is new state ("@X") that nothing else reads. */
static bool state_sink(Fuser *u, int g) {
    if (!pointwise_group(u, g) || u->cls[u->head[g]] == C_VIEW) return false;
    bool any = false;
    for (int m = u->head[g]; m >= 0; m = u->next[m]) {
        for (int k = u->cons_start[m]; k < u->cons_start[m + 1]; k++)
            if (find(u, u->cons[k]) != g) return false;
        if (!u->is_output[m]) continue;
        if (u->plain_output[m]) return false;
        any = true;
    }
    return any;
}

/* The sinks merge from the last one backwards, as the scalars do. A sink has no reader
 * outside itself, so no path leads from one to another and a merge is refused only for the
 * distance (MERGE_REACH): merge() would search nothing and then reorder the whole window
 * between the two, which only drops the earlier sink from the order (nothing depends on it)
 * and closes the window's holes. The loop never looks at those positions again and commit()
 * needs only the order of the groups, so the merges are done here without reordering: the
 * earlier sink's slot becomes a hole, and `at` is the position the accumulated group would
 * have had after the reorders (the window then holds no holes). */
static void fuse_state_updates(Fuser *u) {
    int acc = -1, at = 0, holes = 0; /* holes: below `at` and above p, since the last merge */
    for (int p = u->n_order - 1; p >= 0; p--) {
        int g = u->order[p];
        if (g < 0) {
            holes++;
            continue;
        }
        if (find(u, g) != g || !state_sink(u, g)) continue;
        if (acc < 0 || at - p > MERGE_REACH) {
            acc = g;
            at = p;
            holes = 0;
            continue;
        }
        link(u, acc, g);
        u->order[p] = -1;
        u->kind[acc] = G_POINT;
        at -= 1 + holes;
        holes = 0;
    }
}

/* ---- names and the result ----------------------------------------------------------------- */

static bool holds(Fuser *u, int g, int kind) {
    for (int m = u->head[g]; m >= 0; m = u->next[m])
        if (u->f->ops[m]->kind == kind) return true;
    return false;
}

/* A conv2d of the group reads a BatchNorm folded into its weights (fold_bn.c). */
static bool folded_conv(Fuser *u, int g) {
    for (int m = u->head[g]; m >= 0; m = u->next[m]) {
        const Op *o = u->f->ops[m];
        if (o->kind != OP_CONV2D || o->inputs[1]->def == NULL ||
            o->inputs[1]->def->kind != OP_PARAM)
            continue;
        const Param *p = module_find_param(u->f->module, op_string(o->inputs[1]->def, "name"));
        if (p != NULL && p->kind == PARAM_DERIVED) return true;
    }
    return false;
}

static const char *pattern_of(Fuser *u, int g) {
    bool multi_domain = false;
    int64_t first = -1;
    for (int m = u->head[g]; m >= 0; m = u->next[m]) {
        if (u->cls[m] != C_ROW) continue;
        int64_t n = shape_numel(&u->f->ops[m]->inputs[0]->shape);
        if (first >= 0 && n != first) multi_domain = true;
        first = n;
    }
    switch (u->kind[g]) {
    case G_ATTN:
        for (int m = u->head[g]; m >= 0; m = u->next[m])
            if (u->f->ops[m]->kind == OP_MATMUL && op_bool(u->f->ops[m], "transpose_a"))
                return "attention_backward";
        return "attention";
    case G_CONTRACT:
        if (holds(u, g, OP_CONV2D) && (holds(u, g, OP_BATCH_NORM) || folded_conv(u, g)))
            return holds(u, g, OP_RELU) ? "conv_bn_relu" : "conv_bn";
        return "contraction";
    case G_ROW:
        if (u->rows[g] == 1 && multi_domain) return "multi_reduction";
        if (holds(u, g, OP_LAYER_NORM)) {
            for (int m = u->head[g]; m >= 0; m = u->next[m]) {
                const Op *o = u->f->ops[m];
                if (o->kind != OP_LAYER_NORM) continue;
                int p = u->op_of_value[o->inputs[0]->id];
                if (p >= 0 && find(u, p) == g && u->f->ops[p]->kind == OP_ADD)
                    return "residual_layernorm";
            }
            return "layernorm";
        }
        if (holds(u, g, OP_SOFTMAX)) return "softmax";
        if (holds(u, g, OP_BATCH_NORM)) return "batch_norm";
        return "reduction";
    default: {
        bool sinks = true;
        for (int m = u->head[g]; m >= 0 && sinks; m = u->next[m])
            for (int k = u->cons_start[m]; k < u->cons_start[m + 1]; k++)
                if (find(u, u->cons[k]) != g) sinks = false;
        int64_t n = -1;
        bool sizes = false;
        for (int m = u->head[g]; m >= 0; m = u->next[m]) {
            if (!u->is_output[m]) continue;
            if (n >= 0 && numel_of_op(u, m) != n) sizes = true;
            n = numel_of_op(u, m);
        }
        return sinks && sizes ? "multi_tensor" : "elementwise";
    }
    }
}

/* Rewrites f's op order from the group order (members in program order; params before the
 * group that reads them) and records every group of more than one op. */
static void commit(Fuser *u) {
    Function *f = u->f;
    Op **ops = malloc(sizeof *ops * ((size_t)u->n + 1));
    int *members = malloc(sizeof *members * ((size_t)u->n + 1));
    FusedGroup *groups = malloc(sizeof *groups * ((size_t)u->n + 1));
    if (ops == NULL || members == NULL || groups == NULL) ir_bug("out of memory in the fusion pass");
    int at = 0, n_groups = 0;
    for (int p = 0; p < u->n_order; p++) {
        int g = u->order[p];
        if (g < 0 || find(u, g) != g) continue;
        int n = 0;
        for (int m = u->head[g]; m >= 0; m = u->next[m]) members[n++] = m;
        /* members in program order (the optimizer's group has thousands, merged back to front) */
        qsort(members, (size_t)n, sizeof *members, cmp_int);
        for (int i = 0; i < n; i++)
            if (f->ops[members[i]]->kind == OP_PARAM) ops[at++] = f->ops[members[i]];
        int first = at;
        for (int i = 0; i < n; i++)
            if (f->ops[members[i]]->kind != OP_PARAM) ops[at++] = f->ops[members[i]];
        if (at - first > 1) groups[n_groups++] = (FusedGroup){pattern_of(u, g), first, at - first};
    }
    IR_ASSERT(at == f->n_ops);
    memcpy(f->ops, ops, sizeof *ops * (size_t)at);
    func_clear_groups(f);
    for (int i = 0; i < n_groups; i++)
        func_add_group(f, groups[i].pattern, groups[i].first_op, groups[i].n_ops);
    free(ops);
    free(members);
    free(groups);
}

/* ---- setup -------------------------------------------------------------------------------- */

static void fuser_free(Fuser *u) {
    free(u->cls), free(u->numel), free(u->op_of_value), free(u->cons_start), free(u->cons);
    free(u->is_output);
    free(u->input_of_value), free(u->in_cons_start), free(u->in_cons), free(u->plain_output);
    free(u->parent), free(u->next), free(u->head), free(u->tail), free(u->size), free(u->kind);
    free(u->dom), free(u->reduced), free(u->rows), free(u->order), free(u->pos);
    free(u->stamp), free(u->stack), free(u->window), free(u->siblings_done);
    attn_sets_free(u->attn, u->n_attn);
}

/* The consumers of each function input (in_cons), as cons holds those of each op. */
static int index_input_readers(Fuser *u) {
    const Function *f = u->f;
    int ni = f->n_inputs, n_edges = 0;
    u->input_of_value = malloc(sizeof(int) * ((size_t)f->n_values + 1));
    u->in_cons_start = calloc((size_t)ni + 2, sizeof(int));
    if (u->input_of_value == NULL || u->in_cons_start == NULL) return -1;
    for (int v = 0; v < f->n_values; v++) u->input_of_value[v] = -1;
    for (int i = 0; i < ni; i++) u->input_of_value[f->inputs[i]->id] = i;
    for (int i = 0; i < u->n; i++)
        for (int k = 0; k < f->ops[i]->n_inputs; k++) {
            int in = u->input_of_value[f->ops[i]->inputs[k]->id];
            if (in >= 0) u->in_cons_start[in + 1]++, n_edges++;
        }
    for (int i = 0; i < ni; i++) u->in_cons_start[i + 1] += u->in_cons_start[i];
    u->in_cons = malloc(sizeof(int) * ((size_t)n_edges + 1));
    int *fill = malloc(sizeof(int) * ((size_t)ni + 1));
    if (u->in_cons == NULL || fill == NULL) {
        free(fill);
        return -1;
    }
    memcpy(fill, u->in_cons_start, sizeof(int) * (size_t)ni);
    for (int i = 0; i < u->n; i++)
        for (int k = 0; k < f->ops[i]->n_inputs; k++) {
            int in = u->input_of_value[f->ops[i]->inputs[k]->id];
            if (in >= 0) u->in_cons[fill[in]++] = i;
        }
    free(fill);
    return 0;
}

static int fuser_init(Fuser *u, Function *f) {
    memset(u, 0, sizeof *u);
    u->f = f;
    int n = u->n = f->n_ops;
    size_t sn = (size_t)n + 1;
    u->cls = malloc(sizeof *u->cls * sn);
    u->numel = malloc(sizeof *u->numel * sn);
    u->op_of_value = malloc(sizeof *u->op_of_value * ((size_t)f->n_values + 1));
    u->cons_start = calloc(sn + 1, sizeof *u->cons_start);
    u->is_output = calloc(sn, sizeof *u->is_output);
    u->plain_output = calloc(sn, sizeof *u->plain_output);
    u->parent = malloc(sizeof(int) * sn), u->next = malloc(sizeof(int) * sn);
    u->head = malloc(sizeof(int) * sn), u->tail = malloc(sizeof(int) * sn);
    u->size = malloc(sizeof(int) * sn), u->kind = calloc(sn, sizeof *u->kind);
    u->dom = calloc(sn, sizeof *u->dom), u->reduced = calloc(sn, sizeof *u->reduced);
    u->rows = calloc(sn, sizeof *u->rows), u->order = malloc(sizeof(int) * sn);
    u->pos = malloc(sizeof(int) * sn), u->stamp = calloc(sn, sizeof(int));
    u->stack = malloc(sizeof(int) * sn), u->window = malloc(sizeof(int) * sn);
    u->siblings_done = malloc(sizeof *u->siblings_done * sn);
    if (!u->cls || !u->numel || !u->op_of_value || !u->cons_start || !u->is_output ||
        !u->plain_output || !u->parent ||
        !u->next || !u->head || !u->tail || !u->size || !u->kind || !u->dom || !u->reduced ||
        !u->rows || !u->order || !u->pos || !u->stamp || !u->stack || !u->window ||
        !u->siblings_done)
        return -1;
    for (int v = 0; v < f->n_values; v++) u->op_of_value[v] = -1;
    int n_edges = 0;
    for (int i = 0; i < n; i++) {
        const Op *op = f->ops[i];
        u->op_of_value[op->result->id] = i;
        u->cls[i] = classify(op);
        u->numel[i] = shape_numel(&op->result->shape);
        u->parent[i] = u->head[i] = u->tail[i] = i;
        u->next[i] = -1;
        u->size[i] = 1;
        u->order[i] = u->pos[i] = i;
        u->siblings_done[i] = -1;
        n_edges += op->n_inputs;
    }
    u->n_order = n;
    u->cons = malloc(sizeof *u->cons * ((size_t)n_edges + 1));
    if (u->cons == NULL) return -1;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < f->ops[i]->n_inputs; k++) {
            int p = u->op_of_value[f->ops[i]->inputs[k]->id];
            if (p >= 0) u->cons_start[p + 1]++;
        }
    for (int i = 0; i < n; i++) u->cons_start[i + 1] += u->cons_start[i];
    int *fill = malloc(sizeof *fill * sn);
    if (fill == NULL) return -1;
    memcpy(fill, u->cons_start, sizeof *fill * (size_t)n);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < f->ops[i]->n_inputs; k++) {
            int p = u->op_of_value[f->ops[i]->inputs[k]->id];
            if (p >= 0) u->cons[fill[p]++] = i;
        }
    free(fill);
    if (index_input_readers(u) != 0) return -1;
    for (int o = 0; o < f->n_outputs; o++) {
        int p = u->op_of_value[f->outputs[o]->id];
        if (p >= 0) u->is_output[p] = true;
        if (p >= 0 && f->output_names[o][0] != '@') u->plain_output[p] = true;
    }
    return 0;
}

static const char *const RULE_NAMES[FUSE_RULE_COUNT] = {
    "elementwise", "reduction", "contraction", "attention", "multi_reduction", "multi_tensor",
};

const char *fuse_rule_name(FuseRule r) {
    return r >= 0 && r < FUSE_RULE_COUNT ? RULE_NAMES[r] : NULL;
}

bool fuse_enabled(const PassOptions *opts, FuseRule r) {
    return opts == NULL || (!opts->no_fuse && !(opts->fuse_off & (1u << r)));
}

static int fuse_function(Function *f, const PassOptions *opts, Diag *d) {
    Fuser u;
    AttnSets *attn = NULL;
    int n_attn = fuse_enabled(opts, FUSE_RULE_ATTENTION) ? find_attention(f, &attn) : 0;
    if (n_attn < 0 || fuser_init(&u, f) != 0) {
        if (n_attn >= 0) fuser_free(&u);
        attn_sets_free(attn, n_attn > 0 ? n_attn : 0);
        diag_set(d, SRCLOC_NONE, "fusion of @%s: out of memory", f->name);
        return -1;
    }
    u.attn = attn;
    u.n_attn = n_attn;
    if (fuse_attention(&u, d) != 0) {
        fuser_free(&u);
        return -1;
    }
    if (fuse_enabled(opts, FUSE_RULE_REDUCTION)) fuse_reductions(&u);
    if (fuse_enabled(opts, FUSE_RULE_CONTRACTION)) fuse_contractions(&u);
    if (fuse_enabled(opts, FUSE_RULE_ELEMENTWISE)) fuse_pointwise(&u);
    if (fuse_enabled(opts, FUSE_RULE_ELEMENTWISE)) absorb_leftovers(&u);
    if (fuse_enabled(opts, FUSE_RULE_MULTI_REDUCTION)) fuse_scalars(&u);
    if (fuse_enabled(opts, FUSE_RULE_MULTI_TENSOR)) fuse_state_updates(&u);
    commit(&u);
    fuser_free(&u);
    return 0;
}

int pass_fuse(Module *m, const PassOptions *opts, Diag *d) {
    for (int i = 0; i < m->n_funcs; i++) {
        func_clear_groups(m->funcs[i]);
        if (opts != NULL && opts->no_fuse) continue;
        if (fuse_function(m->funcs[i], opts, d) != 0) return -1;
    }
    return 0;
}
