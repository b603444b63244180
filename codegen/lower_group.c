/* lower_group.c — a step of elementwise, broadcast and layout ops (alone or fused): one work
 * item per element of what it writes, every value computed on the way by the evaluator.
 *
 * The writes of a step may differ in size: the optimizer's update of every parameter is one
 * step writing tensors of many shapes. Writes of the same element count form a range, and
 * the ranges are laid back to back. Values are computed lazily, so each range computes only
 * what its writes need.
 *   C: the work items are chunks of CHUNK elements of that sequence; a chunk runs, for each
 *      range it overlaps, a loop over the overlap whose iterations are independent (SIMD
 *      lanes: the ranges' bodies have no branch between them). An if-tree per element
 *      (below) kept the compiler from vectorizing: the ResNet-50 captioner's Adam update of
 *      44M parameters was a quarter of its step.
 *   CUDA: one work item per element, which finds its range by a balanced tree of comparisons
 *      (log2 of the number of ranges).
 */
#include <stdlib.h>

#include "lower.h"

typedef struct Range {
    int64_t numel, offset;
    const Value **writes;
    int n_writes;
} Range;

/* Ranges [lo, hi) under work item i, which lies in [ranges[lo].offset, end of hi-1). */
static void range_tree(Eval *ev, const Range *ranges, int lo, int hi, const KExpr *i) {
    KernelDesc *kd = ev_kd(ev);
    if (hi - lo == 1) {
        const Range *r = &ranges[lo];
        ev_scope_push(ev);
        const KExpr *flat = r->offset ? kd_let(kd, "e", KSUB(kd, i, ke_int(kd, r->offset))) : i;
        ev_store(ev, r->writes, r->n_writes, flat);
        ev_scope_pop(ev);
        return;
    }
    int mid = lo + (hi - lo) / 2;
    ev_if(ev, ke_bin(kd, KB_LT, i, ke_int(kd, ranges[mid].offset)));
    range_tree(ev, ranges, lo, mid, i);
    ev_else(ev);
    range_tree(ev, ranges, mid, hi, i);
    ev_end_if(ev);
}

/* Groups the step's writes by element count, in order of first appearance. */
static int make_ranges(const Step *st, Range *ranges, const Value **sorted) {
    int n = 0, placed = 0;
    for (int w = 0; w < st->n_writes; w++) {
        int64_t numel = shape_numel(&st->writes[w]->shape);
        bool seen = false;
        for (int r = 0; r < n && !seen; r++) seen = ranges[r].numel == numel;
        if (seen) continue;
        ranges[n] = (Range){numel, n ? ranges[n - 1].offset + ranges[n - 1].numel : 0,
                            sorted + placed, 0};
        for (int k = w; k < st->n_writes; k++)
            if (shape_numel(&st->writes[k]->shape) == numel)
                sorted[placed + ranges[n].n_writes++] = st->writes[k];
        placed += ranges[n].n_writes;
        n++;
    }
    return n;
}

enum { CHUNK = 16384 };

static const KExpr *imax(KernelDesc *kd, const KExpr *a, const KExpr *b) {
    return ke_select(kd, ke_bin(kd, KB_LT, a, b), b, a);
}
static const KExpr *imin(KernelDesc *kd, const KExpr *a, const KExpr *b) {
    return ke_select(kd, ke_bin(kd, KB_LT, a, b), a, b);
}

/* C form of several ranges: chunks of the sequence as work items, a SIMD loop per range. */
static void range_chunks(Eval *ev, const Range *ranges, int n, int64_t total) {
    KernelDesc *kd = ev_kd(ev);
    int ch = kd_var(kd, "chunk", KT_I64), i = kd_var(kd, "i", KT_I64);
    ks_parfor(kd, ch, (total + CHUNK - 1) / CHUNK);
    const KExpr *lo = kd_let(kd, "lo", KMUL(kd, ke_var(kd, ch), ke_int(kd, CHUNK)));
    const KExpr *hi = kd_let(kd, "hi", KADD(kd, lo, ke_int(kd, CHUNK)));
    for (int r = 0; r < n; r++) {
        const KExpr *start = ke_int(kd, ranges[r].offset);
        const KExpr *end = ke_int(kd, ranges[r].offset + ranges[r].numel);
        const KExpr *from = kd_let(kd, "from", KSUB(kd, imax(kd, lo, start), start));
        const KExpr *to = kd_let(kd, "to", KSUB(kd, imin(kd, hi, end), start));
        ks_for_simd(kd, i, from, to);
        ev_scope_push(ev);
        ev_store(ev, ranges[r].writes, ranges[r].n_writes, ke_var(kd, i));
        ev_scope_pop(ev);
        ks_end(kd);
    }
    ks_end(kd);
}

/* One element per work item; several ranges found by the comparison tree. */
static void range_items(Eval *ev, const Range *ranges, int n, int64_t total) {
    KernelDesc *kd = ev_kd(ev);
    int i = kd_var(kd, "i", KT_I64);
    ks_parfor(kd, i, total);
    range_tree(ev, ranges, 0, n, ke_var(kd, i));
    ks_end(kd);
}

/* Lowers into kd (C when chunked) with a fresh evaluator; 0, or -1 with c->err. */
static int lower_ranges(LowerCtx *c, KernelDesc *kd, const Range *ranges, int n, bool chunked) {
    Eval *ev = eval_new(kd, c->s, c->step, c->buf_of);
    if (ev == NULL) {
        snprintf(c->err, c->err_size, "out of memory");
        return -1;
    }
    int64_t total = ranges[n - 1].offset + ranges[n - 1].numel;
    if (chunked) range_chunks(ev, ranges, n, total);
    else range_items(ev, ranges, n, total);
    int rc = 0;
    if (ev_error(ev)) {
        snprintf(c->err, c->err_size, "%s", ev_error(ev));
        rc = -1;
    }
    eval_free(ev);
    return rc;
}

int lower_pointwise(LowerCtx *c) {
    const Step *st = &c->s->steps[c->step];
    Range *ranges = malloc(sizeof *ranges * (size_t)(st->n_writes + 1));
    const Value **sorted = malloc(sizeof *sorted * (size_t)(st->n_writes + 1));
    int rc = -1;
    if (ranges != NULL && sorted != NULL) {
        int n = make_ranges(st, ranges, sorted);
        if (n == 1) {
            rc = lower_ranges(c, c->kd, ranges, n, false);
        } else {
            c->cuda = lower_clone_args(c->kd);
            rc = c->cuda == NULL ? -1 : lower_ranges(c, c->kd, ranges, n, true);
            if (rc == 0) rc = lower_ranges(c, c->cuda, ranges, n, false);
            if (c->cuda == NULL) snprintf(c->err, c->err_size, "out of memory");
        }
    } else {
        snprintf(c->err, c->err_size, "out of memory");
    }
    free(ranges);
    free(sorted);
    return rc;
}
