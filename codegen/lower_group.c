/* lower_group.c — a step of elementwise, broadcast and layout ops (alone or fused): one work
 * item per element of what it writes, every value computed on the way by the evaluator.
 *
 * The writes of a step may differ in size: the optimizer's update of every parameter is one
 * step writing tensors of many shapes. Writes of the same element count form a range; one
 * parallel loop runs over all ranges back to back, and each work item finds its range by a
 * balanced tree of comparisons (log2 of the number of ranges), then computes and stores the
 * writes of that range at its offset in it. Values are computed lazily, so each range
 * computes only what its writes need.
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

int lower_pointwise(LowerCtx *c) {
    const Step *st = &c->s->steps[c->step];
    Range *ranges = malloc(sizeof *ranges * (size_t)(st->n_writes + 1));
    const Value **sorted = malloc(sizeof *sorted * (size_t)(st->n_writes + 1));
    Eval *ev = eval_new(c->kd, c->s, c->step, c->buf_of);
    int rc = -1;
    if (ranges != NULL && sorted != NULL && ev != NULL) {
        int n = make_ranges(st, ranges, sorted);
        int64_t total = ranges[n - 1].offset + ranges[n - 1].numel;
        int i = kd_var(c->kd, "i", KT_I64);
        ks_parfor(c->kd, i, total);
        range_tree(ev, ranges, 0, n, ke_var(c->kd, i));
        ks_end(c->kd);
        rc = 0;
        if (ev_error(ev)) {
            snprintf(c->err, c->err_size, "%s", ev_error(ev));
            rc = -1;
        }
    } else {
        snprintf(c->err, c->err_size, "out of memory");
    }
    eval_free(ev);
    free(ranges);
    free(sorted);
    return rc;
}
