/* eval.c — the evaluator: the value of any value of a fused group at any element, as kernel
 * expressions.
 *
 * A value the step reads is a load from its argument buffer; a value the step defines is
 * computed from its op's expression hook (op_exprs.c), which asks the evaluator for its
 * operands at the elements it needs: the same flat index for same-shaped operands, the
 * broadcast element for smaller ones, a permuted or shifted element for layout ops. Views
 * (reshape) keep the flat index. Every computed value is bound to a named temporary and
 * memoized by (value, flat index), so a value used twice is computed once per work item.
 *
 * Memo entries follow the kernel's blocks (ev_scope_push/pop around loops and branches): a
 * temporary declared inside a loop is not reused after it. Lowerings pin values the
 * evaluator cannot compute itself: a row statistic (valid at every element of the row) or a
 * contraction's accumulator (valid at its own element only).
 *
 * Numerics: each op's result is rounded to its IR dtype, as if it had been stored, so a fused
 * group computes what its ops compute one kernel at a time (docs/fusion.md).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lower.h"

/* ---- indices ------------------------------------------------------------------------------ */

KType ktype_of(DType dt) { return dt == DT_I32 ? KT_I32 : KT_F32; }

int64_t numel_of(const Value *v) { return shape_numel(&v->shape); }

int64_t dims_product(const Shape *s, int from, int to) {
    int64_t p = 1;
    for (int d = from; d < to; d++) p *= s->dims[d];
    return p;
}

int64_t shape_stride(const Shape *s, int d) { return dims_product(s, d + 1, s->rank); }

/* Axis d of row-major element `flat` of s. */
static const KExpr *unravel_axis(KernelDesc *kd, const KExpr *flat, const Shape *s, int d) {
    if (s->dims[d] == 1) return ke_int(kd, 0);
    const KExpr *q = KDIV(kd, flat, ke_int(kd, shape_stride(s, d)));
    /* The first non-trivial axis needs no modulo: flat < numel bounds the quotient. */
    return dims_product(s, 0, d) == 1 ? q : KMOD(kd, q, ke_int(kd, s->dims[d]));
}

void ix_unravel(KernelDesc *kd, const KExpr *flat, const Shape *s, const KExpr **idx) {
    for (int d = 0; d < s->rank; d++) idx[d] = unravel_axis(kd, flat, s, d);
}

const KExpr *ix_ravel(KernelDesc *kd, const KExpr *const *idx, const Shape *s) {
    const KExpr *flat = ke_int(kd, 0);
    for (int d = 0; d < s->rank; d++)
        if (s->dims[d] != 1)
            flat = KADD(kd, flat, KMUL(kd, idx[d], ke_int(kd, shape_stride(s, d))));
    return flat;
}

const KExpr *ix_broadcast(KernelDesc *kd, const KExpr *const *out_idx, const Shape *out,
                          const Shape *in) {
    const KExpr *idx[IR_MAX_RANK];
    int off = out->rank - in->rank;
    for (int d = 0; d < in->rank; d++)
        idx[d] = in->dims[d] == 1 ? ke_int(kd, 0) : out_idx[d + off];
    return ix_ravel(kd, idx, in);
}

Ix ix_flat(const Shape *shape, const KExpr *flat) {
    Ix ix = {shape, flat, {NULL}};
    return ix;
}

Ix ix_axes(KernelDesc *kd, const Shape *shape, const KExpr *const *axes) {
    Ix ix = {shape, ix_ravel(kd, axes, shape), {NULL}};
    for (int d = 0; d < shape->rank; d++) ix.axis[d] = axes[d];
    return ix;
}

const KExpr *ix_axis(KernelDesc *kd, Ix *ix, int d) {
    if (ix->axis[d] == NULL) ix->axis[d] = unravel_axis(kd, ix->flat, ix->shape, d);
    return ix->axis[d];
}

Ix ix_bcast(KernelDesc *kd, Ix *out, const Shape *in) {
    if (shape_equal(out->shape, in)) return ix_flat(in, out->flat);
    if (shape_numel(in) == 1) return ix_flat(in, ke_int(kd, 0));
    const KExpr *idx[IR_MAX_RANK];
    int off = out->shape->rank - in->rank;
    for (int d = 0; d < in->rank; d++)
        idx[d] = in->dims[d] == 1 ? ke_int(kd, 0) : ix_axis(kd, out, d + off);
    return ix_axes(kd, in, idx);
}

/* ---- the evaluator ------------------------------------------------------------------------ */

typedef struct Memo {
    int value;          /* value id */
    const KExpr *flat;  /* the element; NULL: every element */
    const KExpr *expr;
    int prev;           /* the previous entry of the same value, or -1 */
} Memo;

typedef struct Override {
    EvHook fn;
    void *ctx;
} Override;

/* The per-value arrays of an evaluator, kept on the schedule and reused by the next kernel of
 * the function: an evaluator per kernel allocating arrays the size of the whole function made
 * code generation quadratic in model size. Between uses every entry is clear (member false,
 * override empty, head -1); an evaluator clears what it set. */
typedef struct EvalScratch {
    bool *member;
    Override *override;
    int *head;
    struct EvalScratch *next; /* in the pool's free list */
} EvalScratch;

/* Evaluators nest (a kernel's lowering may open a second one while the first is alive), so
 * the schedule keeps a pool: as many scratches as were ever open at once, each made once per
 * function. A single cached scratch made a nested evaluator allocate and clear arrays the
 * size of the whole function for every kernel that nests (quadratic in model size). */
typedef struct ScratchPool {
    EvalScratch *free_list;
} ScratchPool;

static void scratch_free(EvalScratch *sc) {
    if (sc == NULL) return;
    free(sc->member);
    free(sc->override);
    free(sc->head);
    free(sc);
}

static void pool_free(void *p) {
    ScratchPool *pool = p;
    if (pool == NULL) return;
    while (pool->free_list != NULL) {
        EvalScratch *sc = pool->free_list;
        pool->free_list = sc->next;
        scratch_free(sc);
    }
    free(pool);
}

static EvalScratch *scratch_new(int n_values) {
    ir_work_add(n_values);
    EvalScratch *sc = calloc(1, sizeof *sc);
    if (sc == NULL) return NULL;
    sc->member = calloc((size_t)n_values + 1, sizeof *sc->member);
    sc->override = calloc((size_t)n_values + 1, sizeof *sc->override);
    sc->head = malloc(sizeof *sc->head * ((size_t)n_values + 1));
    if (sc->member == NULL || sc->override == NULL || sc->head == NULL) {
        scratch_free(sc);
        return NULL;
    }
    for (int v = 0; v < n_values; v++) sc->head[v] = -1;
    return sc;
}

struct Eval {
    KernelDesc *kd;
    const Schedule *s;
    const Step *step;
    const int *buf_of;
    EvalScratch *scratch; /* from the schedule's pool, returned by eval_free */
    bool *member; /* per value id (the scratch's arrays) */
    Override *override; /* per value id (fn NULL: the op table's hook) */
    int *overridden, n_overridden, cap_overridden; /* ids set in override, to clear */
    int *head;    /* per value id: its newest memo entry, or -1 */
    Memo *memo;
    int n_memo, cap_memo;
    int *marks;   /* scope starts (memo lengths) */
    int n_marks, cap_marks;
    char err[512];
};

/* A free scratch from the schedule's pool (a new one when all are in use). The schedule is
 * const to code generation in everything but this cache. */
static EvalScratch *take_scratch(const Schedule *s) {
    Schedule *cache = (Schedule *)s;
    if (cache->scratch == NULL) {
        cache->scratch = calloc(1, sizeof(ScratchPool));
        if (cache->scratch == NULL) return NULL;
        cache->scratch_free = pool_free;
    }
    ScratchPool *pool = cache->scratch;
    EvalScratch *sc = pool->free_list;
    if (sc != NULL) pool->free_list = sc->next;
    else sc = scratch_new(s->f->n_values);
    return sc;
}

static void give_back_scratch(const Schedule *s, EvalScratch *sc) {
    ScratchPool *pool = s->scratch;
    sc->next = pool->free_list;
    pool->free_list = sc;
}

Eval *eval_new(KernelDesc *kd, const Schedule *s, int step, const int *buf_of) {
    const Function *f = s->f;
    Eval *ev = calloc(1, sizeof *ev);
    if (ev == NULL) return NULL;
    ev->kd = kd;
    ev->s = s;
    ev->step = &s->steps[step];
    ev->buf_of = buf_of;
    ev->scratch = take_scratch(s);
    if (ev->scratch == NULL) {
        free(ev);
        return NULL;
    }
    ev->member = ev->scratch->member;
    ev->override = ev->scratch->override;
    ev->head = ev->scratch->head;
    for (int i = ev->step->first_op; i < ev->step->first_op + ev->step->n_ops; i++)
        ev->member[f->ops[i]->result->id] = true;
    return ev;
}

void eval_free(Eval *ev) {
    if (ev == NULL) return;
    const Function *f = ev->s->f;
    for (int i = ev->step->first_op; i < ev->step->first_op + ev->step->n_ops; i++)
        ev->member[f->ops[i]->result->id] = false;
    for (int i = 0; i < ev->n_memo; i++) ev->head[ev->memo[i].value] = -1;
    for (int i = 0; i < ev->n_overridden; i++) ev->override[ev->overridden[i]] = (Override){0};
    give_back_scratch(ev->s, ev->scratch);
    free(ev->overridden);
    free(ev->memo);
    free(ev->marks);
    free(ev);
}

KernelDesc *ev_kd(Eval *ev) { return ev->kd; }
bool ev_member(Eval *ev, const Value *v) { return ev->member[v->id]; }

void ev_fail(Eval *ev, const char *fmt, ...) {
    if (ev->err[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->err, sizeof ev->err, fmt, ap);
    va_end(ap);
}

const char *ev_error(Eval *ev) { return ev->err[0] ? ev->err : NULL; }

static void memo_push(Eval *ev, const Value *v, const KExpr *flat, const KExpr *e) {
    if (ev->n_memo == ev->cap_memo) {
        ev->cap_memo = ev->cap_memo ? 2 * ev->cap_memo : 64;
        ev->memo = realloc(ev->memo, sizeof *ev->memo * (size_t)ev->cap_memo);
        if (ev->memo == NULL) ir_bug("out of memory evaluating a fused group");
    }
    ev->memo[ev->n_memo] = (Memo){v->id, flat, e, ev->head[v->id]};
    ev->head[v->id] = ev->n_memo++;
}

static const KExpr *memo_find(Eval *ev, const Value *v, const KExpr *flat) {
    for (int k = ev->head[v->id]; k >= 0; k = ev->memo[k].prev)
        if (ev->memo[k].flat == NULL || ke_equal(ev->memo[k].flat, flat)) return ev->memo[k].expr;
    return NULL;
}

void ev_scope_push(Eval *ev) {
    if (ev->n_marks == ev->cap_marks) {
        ev->cap_marks = ev->cap_marks ? 2 * ev->cap_marks : 16;
        ev->marks = realloc(ev->marks, sizeof *ev->marks * (size_t)ev->cap_marks);
        if (ev->marks == NULL) ir_bug("out of memory evaluating a fused group");
    }
    ev->marks[ev->n_marks++] = ev->n_memo;
}

void ev_scope_pop(Eval *ev) {
    IR_ASSERT(ev->n_marks > 0);
    int mark = ev->marks[--ev->n_marks];
    while (ev->n_memo > mark) {
        const Memo *m = &ev->memo[--ev->n_memo];
        ev->head[m->value] = m->prev;
    }
}

void ev_if(Eval *ev, const KExpr *cond) {
    ks_if(ev->kd, cond);
    ev_scope_push(ev);
}

void ev_else(Eval *ev) {
    ev_scope_pop(ev);
    ks_else(ev->kd);
    ev_scope_push(ev);
}

void ev_end_if(Eval *ev) {
    ev_scope_pop(ev);
    ks_end(ev->kd);
}

void ev_pin(Eval *ev, const Value *v, const KExpr *e) { memo_push(ev, v, NULL, e); }

void ev_pin_at(Eval *ev, const Value *v, const KExpr *flat, const KExpr *e) {
    memo_push(ev, v, flat, e);
}

void ev_override(Eval *ev, const Value *v, EvHook fn, void *ctx) {
    if (ev->n_overridden == ev->cap_overridden) {
        ev->cap_overridden = ev->cap_overridden ? 2 * ev->cap_overridden : 8;
        ev->overridden = realloc(ev->overridden, sizeof *ev->overridden * (size_t)ev->cap_overridden);
        if (ev->overridden == NULL) ir_bug("out of memory evaluating a fused group");
    }
    ev->overridden[ev->n_overridden++] = v->id;
    ev->override[v->id] = (Override){fn, ctx};
}

/* v computed from its op (v is defined in the step and is not a view). */
static const KExpr *compute(Eval *ev, const Value *v, Ix *at) {
    const Op *op = v->def;
    const Override *o = &ev->override[v->id];
    KExprHook hook = kexpr_hook(op->kind);
    const KExpr *e = o->fn != NULL ? o->fn(o->ctx, ev, op, at) : hook != NULL ? hook(ev, op, at) : NULL;
    if (e == NULL) {
        ev_fail(ev, "%s %%%s cannot be computed per element inside this fused group",
                op_info(op->kind)->name, v->name);
        return ke_cast(ev->kd, ktype_of(v->dtype), ke_f32(ev->kd, 0));
    }
    return kd_let(ev->kd, op_info(op->kind)->name, ke_cast(ev->kd, ktype_of(v->dtype), e));
}

const KExpr *ev_value(Eval *ev, const Value *v, Ix *at) {
    const KExpr *e = memo_find(ev, v, at->flat);
    if (e != NULL) return e;
    if (!ev->member[v->id]) {
        int b = ev->buf_of[v->id];
        if (b < 0) {
            ev_fail(ev, "%%%s is read but is no argument of the kernel", v->name);
            return ke_cast(ev->kd, ktype_of(v->dtype), ke_f32(ev->kd, 0));
        }
        e = kd_let(ev->kd, "x", ke_load(ev->kd, b, at->flat));
    } else if (op_is_view(v->def)) {
        Ix in = ix_flat(&v->def->inputs[0]->shape,
                        KADD(ev->kd, at->flat, ke_int(ev->kd, op_view_offset(v->def))));
        e = ev_value(ev, v->def->inputs[0], &in);
    } else {
        e = compute(ev, v, at);
    }
    memo_push(ev, v, at->flat, e);
    return e;
}

const KExpr *ev_operand(Eval *ev, const Op *op, int i, Ix *at) {
    return ev_value(ev, op->inputs[i], at);
}

const KExpr *ev_operand_bcast(Eval *ev, const Op *op, int i, Ix *out) {
    Ix in = ix_bcast(ev->kd, out, &op->inputs[i]->shape);
    return ev_value(ev, op->inputs[i], &in);
}

void ev_store(Eval *ev, const Value *const *vals, int n, const KExpr *flat) {
    const KExpr *computed[64];
    const KExpr **e = n <= 64 ? computed : malloc(sizeof *e * (size_t)n);
    if (e == NULL) ir_bug("out of memory evaluating a fused group");
    for (int i = 0; i < n; i++) {
        Ix at = ix_flat(&vals[i]->shape, flat);
        e[i] = ev_value(ev, vals[i], &at);
    }
    for (int i = 0; i < n; i++) {
        int b = ev->buf_of[vals[i]->id];
        if (b < 0) ev_fail(ev, "%%%s is written but is no argument of the kernel", vals[i]->name);
        else ks_store(ev->kd, b, flat, e[i]);
    }
    if (e != computed) free(e);
}
