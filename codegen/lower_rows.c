/* lower_rows.c — a step around reductions: sum, mean, max, reduce_to_shape, softmax,
 * layer_norm and batch_norm in training mode, with the elementwise ops that feed them and
 * use their results (a LayerNorm and its backward, a softmax and its backward, BatchNorm's
 * statistics with its running-average updates, a gradient norm over many tensors).
 *
 * The reductions of one step reduce the same axes R of the same domain D (ir/ops.c,
 * op_reduced_axes), so the kernel runs one work item per row (an element of D with the R axes
 * dropped) and loops along the row. A step whose reductions each produce one number (the
 * gradient norm: one row) may reduce domains of different shapes, one loop each.
 *
 * Values are row-level (one per row: reduction results, and elementwise ops of them) or
 * element-level. A reduction needs the row-level values its operand depends on, so the
 * statistics are computed in rounds: round L accumulates the statistics of level L in one
 * pass along the row, after which their values (and the row-level values computed from
 * them) are known. softmax needs two rounds (max, then the sum of exponentials), layer_norm
 * and batch_norm two (mean, then variance); their results are then element-level values
 * computed from the statistics wherever an element needs them. Element-level writes are
 * stored in the first pass where they can be computed, row-level writes once per row at the
 * end. Nothing element-level is kept between passes: it is recomputed from the loads, which
 * costs less than the memory it would take.
 *
 * Numerics match the unfused kernels exactly: sums accumulate in double in row-major order of
 * the reduced axes and round to f32 at the end, max stays in f32, softmax / layer_norm /
 * batch_norm keep their statistics in double as their own kernels always did.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lower.h"

enum { MAX_DOMAINS = 64 };

typedef enum {
    ST_SUM,     /* double sum of x */
    ST_MAX,     /* f32 max of x, a NaN wins (max) */
    ST_ROWMAX,  /* f32 max of x, NaN ignored (softmax's shift) */
    ST_EXPSUM,  /* double sum of exp(x - rowmax) */
    ST_SQDEV,   /* double sum of (x - mean)^2 */
} StatKind;

typedef struct Domain {
    const Shape *shape;
    bool reduced[IR_MAX_RANK];
    int64_t row_len;
} Domain;

typedef struct Stat {
    StatKind kind;
    int level, domain;
    int acc;         /* its accumulator variable */
    const Op *op;
    int prior;       /* the statistic it needs (EXPSUM: ROWMAX, SQDEV: SUM), or -1 */
} Stat;

/* A reduction of the step: its statistics and what its result is from them. */
typedef struct RowOp {
    const Op *op;
    int stat[2];
    int n_stats;
    const KExpr *mean, *inv;  /* layer_norm / batch_norm, once known */
} RowOp;

typedef struct Rows {
    LowerCtx *c;
    Eval *ev;
    KernelDesc *kd;
    const Function *f;
    const Step *st;
    Domain dom[MAX_DOMAINS];
    int n_dom;
    int64_t n_rows;
    const KExpr *w;          /* the work item: the row */
    Stat *stats;
    int n_stats;
    RowOp *rops;
    int n_rops;
    /* Per value of the step (slot: see slot_at()), not per value of the function: arrays the size
     * of the function for every row kernel made code generation quadratic in model size. */
    int *slot_key, *slot_val; /* open addressing: value id -> slot; key -1 is empty */
    size_t slot_mask;
    int *level;       /* per slot: round after which it is known (row-level), or the
                         rounds its element-level value depends on */
    bool *row_level;  /* per slot */
    int *rop_of;      /* per slot: its RowOp, or -1 */
    int max_level;
} Rows;

static size_t slot_hash(int id) { return (size_t)((uint32_t)id * 2654435761u); }

/* The slot of a value the step computes (the position of its op in the step). */
static int slot_at(const Rows *r, const Value *v) {
    for (size_t h = slot_hash(v->id) & r->slot_mask;; h = (h + 1) & r->slot_mask) {
        if (r->slot_key[h] == v->id) return r->slot_val[h];
        IR_ASSERT(r->slot_key[h] >= 0); /* only the step's own values are asked for */
    }
}

static int make_slots(Rows *r) {
    size_t size = 16;
    while (size < 2 * (size_t)r->st->n_ops) size *= 2;
    r->slot_mask = size - 1;
    ir_work_add((int64_t)size);
    r->slot_key = malloc(sizeof *r->slot_key * size);
    r->slot_val = malloc(sizeof *r->slot_val * size);
    if (r->slot_key == NULL || r->slot_val == NULL) return -1;
    memset(r->slot_key, 0xff, sizeof *r->slot_key * size);
    for (int i = 0; i < r->st->n_ops; i++) {
        int id = r->f->ops[r->st->first_op + i]->result->id;
        size_t h = slot_hash(id) & r->slot_mask;
        while (r->slot_key[h] >= 0) h = (h + 1) & r->slot_mask;
        r->slot_key[h] = id;
        r->slot_val[h] = i;
    }
    return 0;
}

static int fail(Rows *r, const char *fmt, const char *a) {
    snprintf(r->c->err, r->c->err_size, fmt, a);
    return -1;
}

static int find_domain(Rows *r, const Shape *s) {
    for (int i = 0; i < r->n_dom; i++)
        if (shape_equal(r->dom[i].shape, s)) return i;
    return -1;
}

/* Registers op's domain, checking that the step's reductions agree on their rows. */
static int add_domain(Rows *r, const Op *op) {
    Domain d = {&op->inputs[0]->shape, {false}, 1};
    op_reduced_axes(op, d.reduced);
    int64_t rows = 1;
    for (int a = 0; a < d.shape->rank; a++) {
        if (d.reduced[a]) d.row_len *= d.shape->dims[a];
        else rows *= d.shape->dims[a];
    }
    int k = find_domain(r, d.shape);
    if (r->n_dom > 0 && rows != r->n_rows)
        return fail(r, "%s reduces rows of another size than the step's other reductions",
                    op->result->name);
    if (k >= 0 && memcmp(r->dom[k].reduced, d.reduced, sizeof d.reduced) != 0)
        return fail(r, "%%%s reduces other axes than the step's other reductions",
                    op->result->name);
    if (k < 0 && r->n_dom > 0 && rows != 1)
        return fail(r, "%%%s reduces another domain than the step's other reductions",
                    op->result->name);
    if (k >= 0) return k;
    if (r->n_dom == MAX_DOMAINS) return fail(r, "%s: too many reduced domains", op->result->name);
    r->n_rows = rows;
    r->dom[r->n_dom] = d;
    return r->n_dom++;
}

static int add_stat(Rows *r, StatKind kind, const Op *op, int domain, int level, int prior) {
    r->stats[r->n_stats] = (Stat){kind, level, domain, -1, op, prior};
    if (level > r->max_level) r->max_level = level;
    return r->n_stats++;
}

/* The rounds a value depends on: its own for a row-level member, those of its operands for
 * an element-level one, none for a value the step reads. */
static int dep_level(const Rows *r, const Value *v) {
    return ev_member(r->ev, v) ? r->level[slot_at(r, v)] : 0;
}

/* Classifies op's result and gives it a level; reductions get their statistics. */
static int classify(Rows *r, const Op *op) {
    const Value *v = op->result;
    int dep = 0;
    bool any_element = false;
    for (int i = 0; i < op->n_inputs; i++) {
        const Value *u = op->inputs[i];
        if (!ev_member(r->ev, u)) continue;
        if (dep_level(r, u) > dep) dep = dep_level(r, u);
        any_element |= !r->row_level[slot_at(r, u)];
    }
    bool reduced[IR_MAX_RANK];
    if (op_reduced_axes(op, reduced)) {
        int dom = add_domain(r, op);
        if (dom < 0) return -1;
        const Value *x = op->inputs[0];
        int in = ev_member(r->ev, x) ? r->level[slot_at(r, x)] : 0;
        RowOp *ro = &r->rops[r->n_rops];
        *ro = (RowOp){op, {-1, -1}, 0, NULL, NULL};
        r->rop_of[slot_at(r, v)] = r->n_rops++;
        switch (op->kind) {
        case OP_SOFTMAX:
            ro->stat[0] = add_stat(r, ST_ROWMAX, op, dom, in + 1, -1);
            ro->stat[1] = add_stat(r, ST_EXPSUM, op, dom, in + 2, ro->stat[0]);
            ro->n_stats = 2;
            break;
        case OP_LAYER_NORM:
        case OP_BATCH_NORM:
            ro->stat[0] = add_stat(r, ST_SUM, op, dom, in + 1, -1);
            ro->stat[1] = add_stat(r, ST_SQDEV, op, dom, in + 2, ro->stat[0]);
            ro->n_stats = 2;
            break;
        default:
            ro->stat[0] = add_stat(r, op->kind == OP_MAX ? ST_MAX : ST_SUM, op, dom, in + 1, -1);
            ro->n_stats = 1;
            r->row_level[slot_at(r, v)] = true;
            break;
        }
        r->level[slot_at(r, v)] = r->stats[ro->stat[ro->n_stats - 1]].level;
        return 0;
    }
    int64_t n = shape_numel(&v->shape);
    r->level[slot_at(r, v)] = dep;
    r->row_level[slot_at(r, v)] = !any_element && (n == 1 || n == r->n_rows) && !op_is_view(op);
    if (op_is_view(op) && ev_member(r->ev, op->inputs[0]))
        r->row_level[slot_at(r, v)] = r->row_level[slot_at(r, op->inputs[0])];
    else if (op_is_view(op))
        r->row_level[slot_at(r, v)] = n == 1 || n == r->n_rows;
    return 0;
}

/* The element of domain d that pass variable `along` (index along the row) reaches in row w:
 * axes of the row come from w, reduced axes from `along`, both row-major. */
static const KExpr *element_flat(Rows *r, const Domain *d, const KExpr *along) {
    KernelDesc *kd = r->kd;
    const Shape *s = d->shape;
    const KExpr *flat = ke_int(kd, 0);
    int64_t kept_after = 1, red_after = 1;
    for (int a = s->rank - 1; a >= 0; a--) {
        if (s->dims[a] == 1) continue;
        const KExpr *from = d->reduced[a] ? along : r->w;
        int64_t after = d->reduced[a] ? red_after : kept_after;
        int64_t count = d->reduced[a] ? d->row_len : r->n_rows;
        const KExpr *idx = KDIV(kd, from, ke_int(kd, after));
        if (after * s->dims[a] < count) idx = KMOD(kd, idx, ke_int(kd, s->dims[a]));
        flat = KADD(kd, KMUL(kd, idx, ke_int(kd, shape_stride(s, a))), flat);
        if (d->reduced[a]) red_after *= s->dims[a];
        else kept_after *= s->dims[a];
    }
    return flat;
}

/* ---- the values of softmax, layer_norm and batch_norm from their statistics ------------- */

static const KExpr *rowop_value(void *ctx, Eval *ev, const Op *op, Ix *at) {
    Rows *r = ctx;
    KernelDesc *kd = r->kd;
    const RowOp *ro = &r->rops[r->rop_of[slot_at(r, op->result)]];
    const KExpr *x = ev_operand(ev, op, 0, at);
    if (op->kind == OP_SOFTMAX) {
        const KExpr *mx = ke_var(kd, r->stats[ro->stat[0]].acc);
        const KExpr *sum = ke_var(kd, r->stats[ro->stat[1]].acc);
        return KDIV(kd, ke_call(kd, KF_EXP, KSUB(kd, x, mx)), sum);
    }
    const KExpr *dev = KSUB(kd, ke_cast(kd, KT_F64, x), ro->mean);
    if (op->kind == OP_LAYER_NORM) /* ((x - mean) * inv) * w + b */
        return KADD(kd, KMUL(kd, KMUL(kd, dev, ro->inv), ev_operand_bcast(ev, op, 1, at)),
                    ev_operand_bcast(ev, op, 2, at));
    Ix ch = ix_flat(&op->inputs[1]->shape, ix_axis(kd, at, 1)); /* batch_norm */
    const KExpr *scale = KMUL(kd, ro->inv, ev_operand(ev, op, 1, &ch)); /* (x - mean) * scale + b */
    return KADD(kd, KMUL(kd, dev, scale), ke_cast(kd, KT_F64, ev_operand(ev, op, 2, &ch)));
}

/* ---- statistics --------------------------------------------------------------------------- */

static void declare_stat(Rows *r, Stat *s) {
    KernelDesc *kd = r->kd;
    bool f32 = s->kind == ST_MAX || s->kind == ST_ROWMAX;
    s->acc = kd_var(kd, f32 ? "mx" : "acc", f32 ? KT_F32 : KT_F64);
    ks_decl(kd, s->acc, f32 ? ke_f32(kd, -INFINITY) : ke_f64(kd, 0));
}

/* One element's contribution, inside the pass. */
static void accumulate(Rows *r, const Stat *s, const KExpr *flat) {
    KernelDesc *kd = r->kd;
    Ix at = ix_flat(r->dom[s->domain].shape, flat);
    const KExpr *x = ev_operand(r->ev, s->op, 0, &at), *a = ke_var(kd, s->acc);
    switch (s->kind) {
    case ST_SUM: ks_assign(kd, s->acc, KADD(kd, a, x)); break;
    case ST_MAX:
        ks_assign(kd, s->acc, ke_select(kd, ke_bin(kd, KB_OR, ke_bin(kd, KB_GT, x, a),
                                                   ke_call(kd, KF_ISNAN, x)), x, a));
        break;
    case ST_ROWMAX: ks_assign(kd, s->acc, ke_select(kd, ke_bin(kd, KB_GT, x, a), x, a)); break;
    case ST_EXPSUM:
        ks_assign(kd, s->acc, KADD(kd, a, ke_call(kd, KF_EXP, KSUB(kd, x, ke_var(kd, r->stats[s->prior].acc)))));
        break;
    case ST_SQDEV: {
        const RowOp *ro = &r->rops[r->rop_of[slot_at(r, s->op->result)]];
        const KExpr *dv = kd_let(kd, "dv", KSUB(kd, ke_cast(kd, KT_F64, x), ro->mean));
        ks_assign(kd, s->acc, KADD(kd, a, KMUL(kd, dv, dv)));
        break;
    }
    }
}

/* After the pass of round `level`: the values its statistics complete. */
static void finish_round(Rows *r, int level) {
    KernelDesc *kd = r->kd;
    for (int i = 0; i < r->n_rops; i++) {
        RowOp *ro = &r->rops[i];
        const Op *op = ro->op;
        const Stat *last = &r->stats[ro->stat[ro->n_stats - 1]];
        const Domain *d = &r->dom[last->domain];
        if (ro->n_stats == 2 && op->kind != OP_SOFTMAX && r->stats[ro->stat[0]].level == level) {
            double count = (double)d->row_len;
            ro->mean = kd_let(kd, "mean", KDIV(kd, ke_var(kd, r->stats[ro->stat[0]].acc),
                                               ke_f64(kd, count)));
        }
        if (last->level != level) continue;
        if (ro->n_stats == 2) {
            if (op->kind != OP_SOFTMAX) {
                /* 1 / sqrt(biased variance + eps) */
                const KExpr *var = KDIV(kd, ke_var(kd, last->acc), ke_f64(kd, (double)d->row_len));
                const KExpr *inside = KADD(kd, var, ke_f64(kd, op_float(op, "eps")));
                ro->inv = kd_let(kd, "inv", KDIV(kd, ke_f64(kd, 1), ke_call(kd, KF_SQRT, inside)));
            }
            ev_override(r->ev, op->result, rowop_value, r);
            continue;
        }
        const KExpr *v = ke_var(kd, last->acc);
        if (op->kind == OP_MEAN) v = KDIV(kd, v, ke_f64(kd, (double)d->row_len));
        ev_pin(r->ev, op->result, kd_let(kd, op_info(op->kind)->name, ke_cast(kd, KT_F32, v)));
    }
}

/* Row-level elementwise values of this round, computed once per row. */
static void row_values(Rows *r, int level) {
    for (int i = r->st->first_op; i < r->st->first_op + r->st->n_ops; i++) {
        const Value *v = r->f->ops[i]->result;
        if (!r->row_level[slot_at(r, v)] || r->rop_of[slot_at(r, v)] >= 0 || r->level[slot_at(r, v)] != level) continue;
        int64_t n = shape_numel(&v->shape);
        Ix at = ix_flat(&v->shape, n == 1 ? ke_int(r->kd, 0) : r->w);
        ev_pin(r->ev, v, ev_value(r->ev, v, &at));
    }
}

/* ---- passes ------------------------------------------------------------------------------- */

/* The step's element-level writes of domain d that round `level` can store (their values
 * need the rounds before it). */
static int element_writes(const Rows *r, int d, int level, const Value **out) {
    int n = 0;
    for (int w = 0; w < r->st->n_writes; w++) {
        const Value *v = r->st->writes[w];
        if (r->row_level[slot_at(r, v)] || shape_numel(&v->shape) != shape_numel(r->dom[d].shape))
            continue;
        if (dep_level(r, v) + 1 == level) out[n++] = v;
    }
    return n;
}

/* One pass along the row over domain d in round `level`: its statistics, its stores. */
static void pass(Rows *r, int d, int level, const Value **writes, int n_writes) {
    KernelDesc *kd = r->kd;
    int along = kd_var(kd, "k", KT_I64);
    ks_for_n(kd, along, r->dom[d].row_len);
    ev_scope_push(r->ev);
    const KExpr *flat = kd_let(kd, "e", element_flat(r, &r->dom[d], ke_var(kd, along)));
    for (int s = 0; s < r->n_stats; s++)
        if (r->stats[s].level == level && r->stats[s].domain == d) accumulate(r, &r->stats[s], flat);
    ev_store(r->ev, writes, n_writes, flat);
    ev_scope_pop(r->ev);
    ks_end(kd);
}

static void rounds(Rows *r, const Value **buf) {
    int last = r->max_level;
    for (int w = 0; w < r->st->n_writes; w++) {
        const Value *v = r->st->writes[w];
        if (!r->row_level[slot_at(r, v)] && dep_level(r, v) + 1 > last) last = dep_level(r, v) + 1;
    }
    row_values(r, 0);
    for (int level = 1; level <= last; level++) {
        for (int s = 0; s < r->n_stats; s++)
            if (r->stats[s].level == level) declare_stat(r, &r->stats[s]);
        for (int d = 0; d < r->n_dom; d++) {
            int n = element_writes(r, d, level, buf);
            bool any = n > 0;
            for (int s = 0; s < r->n_stats && !any; s++)
                any = r->stats[s].level == level && r->stats[s].domain == d;
            if (any) pass(r, d, level, buf, n);
        }
        finish_round(r, level);
        row_values(r, level);
    }
}

/* Row-level writes, once per row. */
static int store_row_writes(Rows *r, const Value **buf) {
    int n = 0;
    for (int w = 0; w < r->st->n_writes; w++) {
        const Value *v = r->st->writes[w];
        if (!r->row_level[slot_at(r, v)]) continue;
        if (shape_numel(&v->shape) != r->n_rows)
            return fail(r, "%%%s is written once per row but is not one value per row", v->name);
        buf[n++] = v;
    }
    ev_store(r->ev, buf, n, r->w);
    return 0;
}

static int check_writes(Rows *r) {
    for (int w = 0; w < r->st->n_writes; w++) {
        const Value *v = r->st->writes[w];
        if (r->row_level[slot_at(r, v)]) continue;
        bool found = false;
        for (int d = 0; d < r->n_dom && !found; d++)
            found = shape_numel(&v->shape) == shape_numel(r->dom[d].shape);
        if (!found || (r->n_dom > 1 && r->n_rows != 1))
            return fail(r, "%%%s is element-level but matches no reduced domain", v->name);
    }
    return 0;
}

int lower_rows(LowerCtx *c) {
    const Function *f = c->s->f;
    const Step *st = &c->s->steps[c->step];
    Rows r = {.c = c, .kd = c->kd, .f = f, .st = st};
    size_t nv = (size_t)st->n_ops + 1;
    r.ev = eval_new(c->kd, c->s, c->step, c->buf_of);
    r.stats = malloc(sizeof *r.stats * (size_t)(2 * st->n_ops + 1));
    r.rops = malloc(sizeof *r.rops * (size_t)(st->n_ops + 1));
    r.level = calloc(nv, sizeof *r.level);
    r.row_level = calloc(nv, sizeof *r.row_level);
    r.rop_of = malloc(sizeof *r.rop_of * nv);
    const Value **buf = malloc(sizeof *buf * (size_t)(st->n_writes + 1));
    int rc = -1;
    if (!r.ev || !r.stats || !r.rops || !r.level || !r.row_level || !r.rop_of || !buf ||
        make_slots(&r) != 0) {
        snprintf(c->err, c->err_size, "out of memory");
        goto done;
    }
    for (size_t v = 0; v < nv; v++) r.rop_of[v] = -1;
    rc = 0;
    for (int i = st->first_op; i < st->first_op + st->n_ops && rc == 0; i++) rc = classify(&r, f->ops[i]);
    if (rc == 0 && r.n_dom == 0) rc = fail(&r, "%s: no reduction in a reduction step", f->name);
    if (rc == 0) rc = check_writes(&r);
    if (rc != 0) goto done;
    int w = kd_var(c->kd, "w", KT_I64);
    ks_parfor(c->kd, w, r.n_rows);
    r.w = ke_var(c->kd, w);
    ev_scope_push(r.ev);
    rounds(&r, buf);
    rc = store_row_writes(&r, buf);
    ev_scope_pop(r.ev);
    ks_end(c->kd);
    if (rc == 0 && ev_error(r.ev)) rc = fail(&r, "%s", ev_error(r.ev));
done:
    eval_free(r.ev);
    free(r.stats);
    free(r.rops);
    free(r.level);
    free(r.row_level);
    free(r.rop_of);
    free(r.slot_key);
    free(r.slot_val);
    free(buf);
    return rc;
}
