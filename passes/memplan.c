/* memplan.c — memory planning: where every intermediate value of an entry point lives.
 *
 * Needs: a verified function with every shape known (an unknown size is an internal error).
 * Changes nothing in the IR; fills a MemPlan (passes.h) that the runtime, the dumps
 * (NN-memplan.txt) and `capc --check` read.
 *
 * The unit of time is the schedule's step (passes/schedule.c): a fused group or one op, timed
 * by the index of its first op, so all ops of a group run at one time. A step's writes live
 * from its time to the last step that reads them, both inclusive ([start, end]); a function
 * output lives to the end (end = n_ops, past the last op). Values a fused group defines and
 * keeps to itself are no step's writes and get no memory at all. Then each write gets a home:
 *
 *   caller/state memory (offset -1, not in the arena):
 *     - function inputs and `param` results: the caller's tensors and the module's state;
 *     - a view of such a value;
 *     - a value returned as "@X" (the new value of state X) is written straight into X, when
 *       no step reads the old X after the one that computes the new one (that step may read
 *       it only as an aligned read of the same size: schedule.c). Otherwise it stays in the
 *       arena and the runtime copies it into X at the end of the step.
 *   a view of its operand: a reshape of its (always contiguous) operand, or a contiguous
 *     slice (op_view_offset: the bytes start further in). It gets the operand's offset (plus
 *     the slice's), and the operand's buffer lives as long as any view of it is read.
 *     op_is_view() (ir/ops.h) says which ops are views, for this pass and codegen alike.
 *   in place over a read: a step may write a value over an aligned arena read (each work item
 *     reads it at its own flat index before it stores: schedule.c) of the same dtype and
 *     element count whose buffer is last read by this step, when every read sharing that
 *     buffer is aligned too. Decided from the op table's fusion kinds and the element counts,
 *     not from op names.
 *   a fresh buffer otherwise.
 *
 * Buffers (a fresh value plus its views and in-place successors) are packed into one arena:
 * two buffers may share bytes only if their lifetimes do not overlap. Greedy first-fit: in
 * some order, each buffer goes to the lowest 64-byte-aligned offset that does not overlap a
 * placed buffer live at the same time. Two orders are tried (largest first; earliest first)
 * and the smaller arena is kept. Largest first: the placed buffers are kept sorted by offset,
 * so a buffer's offset is one walk up from 0 that stops at the first big enough gap (the walk
 * visits the placed buffers below that gap, quadratic in the worst case, so it runs only for
 * functions of up to LARGEST_FIRST_MAX_BUFFERS buffers: every captioner, up to ResNet-101's
 * train_step with ~1,000, gets the better of both orders; a 1,000-layer encoder with tens of
 * thousands gets earliest first alone). Earliest first: the buffers live when a buffer starts have disjoint
 * bytes, so they sit in a treap by offset that knows its largest gap, and first fit is one
 * descent (the same offsets as the walk). Assigning homes costs each step its own reads and
 * writes (per-step summaries, not a scan of the step's reads per write). peak_bytes is the
 * arena's size; naive_bytes is the sum of the (unaligned) sizes of every value that would be
 * its own allocation without planning (arena values, not counting views).
 *
 * memplan_check() verifies a plan with its own liveness, trusting only the offsets and the
 * declared aliases, so tests can run it on any plan. It sweeps the values in op order with
 * the ones live at each op sorted by offset, so each new value is compared with its
 * neighbour there rather than with every other value.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "ops.h"
#include "passes.h"

/* ---- small helpers ------------------------------------------------------------------------ */

/* The only ops whose result shares its operand's bytes unchanged (see the top comment). */

/* Bytes of v, or -1 when its shape is unknown. */
static int64_t value_bytes(const Value *v) {
    int64_t n = shape_numel(&v->shape);
    return n < 0 ? -1 : n * dtype_size(v->dtype);
}

static int64_t align_up(int64_t n) {
    return (n + MEMPLAN_ALIGN - 1) / MEMPLAN_ALIGN * MEMPLAN_ALIGN;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int max_int(int a, int b) { return a > b ? a : b; }

static int fail(Diag *d, const char *fmt, const char *a, const char *b) {
    diag_set(d, SRCLOC_NONE, fmt, a, b);
    return -1;
}

/* The state name X when v is returned as "@X" exactly once (and is no other output), else
 * NULL. */
static const char *state_output_name(const Function *f, const Value *v) {
    const char *name = NULL;
    int uses = 0;
    for (int i = 0; i < f->n_outputs; i++) {
        if (f->outputs[i] != v) continue;
        uses++;
        if (f->output_names[i][0] == '@') name = f->output_names[i] + 1;
    }
    return uses == 1 ? name : NULL;
}

/* state_output_name() for every value at once, by value id (one pass over the outputs);
 * NULL when out of memory. */
static const char **state_output_names(const Function *f) {
    size_t n = (size_t)f->n_values + 1;
    const char **names = calloc(n, sizeof *names);
    int *uses = calloc(n, sizeof *uses);
    if (names == NULL || uses == NULL) {
        free(names), free(uses);
        return NULL;
    }
    for (int i = 0; i < f->n_outputs; i++) {
        int v = f->outputs[i]->id;
        uses[v]++;
        if (f->output_names[i][0] == '@') names[v] = f->output_names[i] + 1;
    }
    for (int v = 0; v < f->n_values; v++)
        if (uses[v] != 1) names[v] = NULL;
    free(uses);
    return names;
}

/* ---- liveness ----------------------------------------------------------------------------- */

/* Times are op indices: a step happens at its first op, so every op of a fused group shares
 * one time and the values that live and die inside it never overlap anything. */
typedef struct Liveness {
    int *def_index; /* per value id: time of its defining op; -1 for inputs */
    int *last_use;  /* per value id: last time it is read; n_ops for outputs; else def time */
} Liveness;

static void liveness_free(Liveness *l) {
    free(l->def_index);
    free(l->last_use);
}

/* The time op i runs: its step's first op, or i itself (params and views outside steps). */
static int op_time(const Schedule *s, int i) {
    return s->step_of_op[i] >= 0 ? s->steps[s->step_of_op[i]].first_op : i;
}

static int liveness_compute(const Schedule *s, Liveness *l) {
    const Function *f = s->f;
    l->def_index = malloc(sizeof(int) * (size_t)(f->n_values + 1));
    l->last_use = malloc(sizeof(int) * (size_t)(f->n_values + 1));
    if (l->def_index == NULL || l->last_use == NULL) return -1;
    for (int v = 0; v < f->n_values; v++) l->def_index[v] = l->last_use[v] = -1;
    for (int i = 0; i < f->n_ops; i++) {
        const Op *op = f->ops[i];
        int t = op_time(s, i);
        l->def_index[op->result->id] = l->last_use[op->result->id] = t;
        for (int k = 0; k < op->n_inputs; k++)
            l->last_use[op->inputs[k]->id] = max_int(l->last_use[op->inputs[k]->id], t);
    }
    for (int i = 0; i < f->n_outputs; i++) l->last_use[f->outputs[i]->id] = f->n_ops;
    return 0;
}

/* ---- homes and buffers -------------------------------------------------------------------- */

typedef struct Buffer {
    int64_t size;   /* aligned bytes */
    int start, end; /* times, inclusive: first definition, last read of any member */
    int64_t offset;
} Buffer;

typedef struct ParamRef {
    const char *name; /* the state it reads */
    int op;           /* its op index */
} ParamRef;

static int param_cmp(const void *a, const void *b) {
    const ParamRef *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : (x->op > y->op) - (x->op < y->op);
}

typedef struct Planner {
    const Function *f;
    const Schedule *s;
    Liveness live;
    int *storage_end; /* per value id: last read of it or of any view of it (views extend) */
    int *root;        /* per value id: the value whose bytes it views (itself if no view) */
    int64_t *in_root; /* per value id: its first byte within root's bytes (0 if no view) */
    int *buffer_of;   /* per value id: its buffer, -1 when not in the arena */
    const char **state_name; /* per value id: state_output_name() */
    ParamRef *params; /* the `param` ops, sorted by state name (old_state_dead's index) */
    int n_params;
    Buffer *buffers;
    int n_buffers;
    MemPlan *plan;
    /* The current step's reads summed up per root value and per buffer (step_reads): whether
     * all of them are aligned reads, and their common element count (-2 when they differ).
     * Stamped with the step's first op, so nothing is cleared between steps; per write, a
     * lookup instead of a scan of the step's reads, which made the program-wide state update
     * step (thousands of reads and writes) quadratic. */
    int *root_stamp, *buf_stamp;
    bool *root_bad, *buf_bad;
    int64_t *root_numel, *buf_numel;
} Planner;

static void planner_free(Planner *p) {
    liveness_free(&p->live);
    free(p->storage_end);
    free(p->root);
    free(p->in_root);
    free(p->buffer_of);
    free(p->state_name);
    free(p->params);
    free(p->buffers);
    free(p->root_stamp);
    free(p->buf_stamp);
    free(p->root_bad);
    free(p->buf_bad);
    free(p->root_numel);
    free(p->buf_numel);
}

/* root: views come after their operand, so one forward sweep finds every view's root.
 * storage_end: a view's reads count as reads of its operand; one backward sweep carries
 * every chain of views down to its root. */
static void compute_views(Planner *p) {
    const Function *f = p->f;
    for (int v = 0; v < f->n_values; v++) {
        p->root[v] = v;
        p->in_root[v] = 0;
        p->storage_end[v] = p->live.last_use[v];
    }
    for (int i = 0; i < f->n_ops; i++) {
        const Op *op = f->ops[i];
        if (!op_is_view(op)) continue;
        const Value *u = op->inputs[0];
        p->root[op->result->id] = p->root[u->id];
        p->in_root[op->result->id] = p->in_root[u->id] + op_view_offset(op) * dtype_size(u->dtype);
    }
    for (int i = f->n_ops - 1; i >= 0; i--) {
        const Op *op = f->ops[i];
        if (!op_is_view(op)) continue;
        int u = op->inputs[0]->id;
        p->storage_end[u] = max_int(p->storage_end[u], p->storage_end[op->result->id]);
    }
}

/* Folds one read (aligned or not, of n elements) into a summary slot stamped t. */
static void note_read(int *stamp, bool *bad, int64_t *numel, int i, int t, bool aligned,
                      int64_t n) {
    if (stamp[i] != t) {
        stamp[i] = t;
        bad[i] = false;
        numel[i] = n;
    } else if (numel[i] != n) {
        numel[i] = -2;
    }
    if (!aligned) bad[i] = true;
}

/* Sums up st's reads per root value and per arena buffer (the Planner's summaries). */
static void step_reads(Planner *p, const Step *st) {
    int t = st->first_op;
    ir_work_add(st->n_reads + st->n_writes);
    for (int k = 0; k < st->n_reads; k++) {
        const Value *u = st->reads[k];
        int64_t n = shape_numel(&u->shape);
        note_read(p->root_stamp, p->root_bad, p->root_numel, p->root[u->id], t,
                  st->read_aligned[k], n);
        int b = p->buffer_of[u->id];
        if (b >= 0) note_read(p->buf_stamp, p->buf_bad, p->buf_numel, b, t, st->read_aligned[k], n);
    }
}

/* Every read of step st that lives in buffer b (one of its reads' buffers) is read only at
 * the work item's own flat index and has n elements. */
static bool shared_reads_aligned(const Planner *p, const Step *st, int b, int64_t n) {
    return p->buf_stamp[b] == st->first_op && !p->buf_bad[b] && p->buf_numel[b] == n;
}

/* The read of st (at time t) whose buffer write r may take over, or -1. taken[b]: buffers
 * already given to another write of this step. */
static int inplace_read(const Planner *p, const Step *st, const Value *r, const bool *taken) {
    int t = st->first_op;
    int64_t n = shape_numel(&r->shape);
    for (int k = 0; k < st->n_reads; k++) {
        const Value *u = st->reads[k];
        int b = p->buffer_of[u->id];
        if (b < 0 || taken[b] || p->buffers[b].end != t || !st->read_aligned[k])
            continue; /* not arena, read later, or read at other elements */
        if (u->dtype != r->dtype || shape_numel(&u->shape) != n) continue;
        if (shared_reads_aligned(p, st, b, n)) return k;
    }
    return -1;
}

/* True when the old value of state X is read by no step after st, and by st only as an
 * aligned read of the new value's size (read at each element before it is written). */
static bool old_state_dead(const Planner *p, const char *x, const Step *st, int64_t n) {
    const Function *f = p->f;
    int at = st->first_op;
    int lo = 0, hi = p->n_params; /* first param named x or later */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (strcmp(p->params[mid].name, x) < 0) lo = mid + 1;
        else hi = mid;
    }
    for (int i = lo; i < p->n_params; i++) {
        if (strcmp(p->params[i].name, x) != 0) break;
        const Op *op = f->ops[p->params[i].op];
        int old = op->result->id, end = p->storage_end[old];
        if (end < at) continue;
        if (end > at) return false;
        if (p->root_stamp[old] == at && (p->root_bad[old] || p->root_numel[old] != n))
            return false; /* st reads it other than aligned at n elements */
    }
    return true;
}

static int new_buffer(Planner *p, const Value *r, int t) {
    Buffer *b = &p->buffers[p->n_buffers];
    b->size = align_up(value_bytes(r));
    b->start = b->end = t;
    b->offset = -1;
    return p->n_buffers++;
}

/* Decides where each value step st writes lives; records aliases, extends lifetimes. */
static void assign_step(Planner *p, const Step *st, bool *taken) {
    int t = st->first_op;
    step_reads(p, st);
    for (int w = 0; w < st->n_writes; w++) {
        const Value *r = st->writes[w];
        int b = -1;
        const char *x = p->state_name[r->id];
        if (x == NULL || !old_state_dead(p, x, st, shape_numel(&r->shape))) {
            int k = inplace_read(p, st, r, taken);
            b = k >= 0 ? p->buffer_of[st->reads[k]->id] : new_buffer(p, r, t);
            if (k >= 0) {
                p->plan->alias_of[r->id] = st->reads[k]->id;
                taken[b] = true;
            }
            p->plan->naive_bytes += value_bytes(r); /* without planning, its own allocation */
        } /* else: computed straight into state X */
        p->buffer_of[r->id] = b;
        if (b >= 0) p->buffers[b].end = max_int(p->buffers[b].end, p->live.last_use[r->id]);
    }
    for (int w = 0; w < st->n_writes; w++) {
        int b = p->buffer_of[st->writes[w]->id];
        if (b >= 0) taken[b] = false;
    }
}

/* A view shares its operand's buffer (if the operand has one) and extends its lifetime. */
static void assign_view(Planner *p, const Op *op) {
    const Value *r = op->result;
    int b = p->buffer_of[op->inputs[0]->id];
    if (b >= 0) p->plan->alias_of[r->id] = op->inputs[0]->id;
    p->buffer_of[r->id] = b;
    if (b >= 0) p->buffers[b].end = max_int(p->buffers[b].end, p->live.last_use[r->id]);
}

/* ---- packing ------------------------------------------------------------------------------ */

typedef struct Order {
    int64_t key1, key2; /* ascending */
    int index;
} Order;

static int order_cmp(const void *a, const void *b) {
    const Order *x = a, *y = b;
    if (x->key1 != y->key1) return x->key1 < y->key1 ? -1 : 1;
    if (x->key2 != y->key2) return x->key2 < y->key2 ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* The placed buffers, kept sorted by offset as they are placed, so finding a gap is one walk
 * from offset 0 that stops at the first gap big enough: no sorting per buffer. Each entry
 * holds what the walk reads, so the walk is a sequential read of one array rather than an
 * indirection per buffer (it still visits every placed buffer below the gap: quadratic in
 * the buffer count, and the largest cost of memory planning left; docs/benchmarks.md). */
typedef struct PlacedBuf {
    int64_t offset, top; /* bytes [offset, top) */
    int start, end;      /* times, inclusive */
} PlacedBuf;

/* Lowest offset where b fits between the placed buffers live at the same time as it. */
static int64_t first_fit(const PlacedBuf *placed, int n, const Buffer *b) {
    int64_t at = 0;
    int start = b->start, end = b->end, k = 0;
    for (; k < n; k++) {
        const PlacedBuf *o = &placed[k];
        if (o->end < start || o->start > end) continue; /* not live at the same time as b */
        if (o->offset >= at + b->size) break;           /* b fits in [at, o->offset) */
        at = max64(at, o->top);
    }
    ir_work_add(k + 1); /* the walk's length, so test_compile_scale sees it grow */
    return at;
}

/* Inserts b (already given its offset) into the offset order. */
static void placed_insert(PlacedBuf *placed, int *n, const Buffer *b) {
    int lo = 0, hi = *n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (placed[mid].offset <= b->offset) lo = mid + 1;
        else hi = mid;
    }
    memmove(placed + lo + 1, placed + lo, sizeof *placed * (size_t)(*n - lo));
    placed[lo] = (PlacedBuf){b->offset, b->offset + b->size, b->start, b->end};
    (*n)++;
}

/* Places every buffer in the given order (largest first); returns the arena size, or -1
 * when out of memory. An empty buffer goes to 0, where the walk puts it (the first placed
 * buffer live with it lies at or above 0), and stays out of the walk: it blocks nothing. */
static int64_t pack(Buffer *bufs, int n, const Order *order) {
    PlacedBuf *placed = malloc(sizeof *placed * (size_t)(n + 1));
    if (placed == NULL) return -1;
    int64_t peak = 0;
    int n_placed = 0;
    for (int k = 0; k < n; k++) {
        Buffer *b = &bufs[order[k].index];
        if (b->size == 0) {
            b->offset = 0;
            continue;
        }
        b->offset = first_fit(placed, n_placed, b);
        placed_insert(placed, &n_placed, b);
        peak = max64(peak, b->offset + b->size);
    }
    free(placed);
    return peak;
}

/* The earliest-first order with the same result as first_fit's walk, in O(log n) per buffer.
 * Placed in order of start, the buffers still live when b starts (end >= b's start) all hold
 * that moment, so their byte ranges are disjoint: first fit is the first gap between them, in
 * offset order, of at least b's size (or the end of the last one). They are kept in a treap
 * by offset, each node holding the gap below it (from the previous live buffer's end, or 0)
 * and its subtree's largest gap, so the first big enough gap is one descent; a buffer leaves
 * when the next start passes its end. An empty buffer goes to 0 (where the walk puts it: the
 * first live buffer already lies at or above 0) and stays out of the treap, as it blocks
 * nothing. */
typedef struct Treap {
    const Buffer *bufs;
    int *left, *right;
    uint32_t *prio;
    int64_t *gap, *most; /* per buffer: the gap below it; the largest in its subtree */
} Treap;

static int64_t treap_most(const Treap *t, int x) { return x < 0 ? -1 : t->most[x]; }

static void treap_update(Treap *t, int x) {
    t->most[x] = max64(t->gap[x], max64(treap_most(t, t->left[x]), treap_most(t, t->right[x])));
}

/* Splits x into the buffers below offset `at` (*lo) and the rest (*hi). */
static void treap_split(Treap *t, int x, int64_t at, int *lo, int *hi) {
    if (x < 0) {
        *lo = *hi = -1;
    } else if (t->bufs[x].offset < at) {
        treap_split(t, t->right[x], at, &t->right[x], hi);
        treap_update(t, x);
        *lo = x;
    } else {
        treap_split(t, t->left[x], at, lo, &t->left[x]);
        treap_update(t, x);
        *hi = x;
    }
}

/* Joins a and b, every offset in a below every offset in b. */
static int treap_merge(Treap *t, int a, int b) {
    if (a < 0) return b;
    if (b < 0) return a;
    if (t->prio[a] > t->prio[b]) {
        t->right[a] = treap_merge(t, t->right[a], b);
        treap_update(t, a);
        return a;
    }
    t->left[b] = treap_merge(t, a, t->left[b]);
    treap_update(t, b);
    return b;
}

/* The end of the highest buffer of x, or 0 when x is empty. */
static int64_t treap_top(const Treap *t, int x) {
    if (x < 0) return 0;
    while (t->right[x] >= 0) x = t->right[x];
    return t->bufs[x].offset + t->bufs[x].size;
}

/* Sets the gap of x's lowest buffer to the space between `below` and it. */
static void treap_set_first_gap(Treap *t, int x, int64_t below) {
    if (x < 0) return;
    if (t->left[x] >= 0) treap_set_first_gap(t, t->left[x], below);
    else t->gap[x] = t->bufs[x].offset - below;
    treap_update(t, x);
}

/* Lowest offset of a gap of at least size in x (NULL-free: x not empty, most >= size). */
static int64_t treap_find(const Treap *t, int x, int64_t size) {
    for (;;) {
        if (treap_most(t, t->left[x]) >= size) x = t->left[x];
        else if (t->gap[x] >= size) return t->bufs[x].offset - t->gap[x];
        else x = t->right[x];
    }
}

static int treap_insert(Treap *t, int root, int i) {
    int lo, hi;
    int64_t at = t->bufs[i].offset;
    treap_split(t, root, at, &lo, &hi);
    t->left[i] = t->right[i] = -1;
    t->gap[i] = at - treap_top(t, lo);
    treap_update(t, i);
    treap_set_first_gap(t, hi, at + t->bufs[i].size);
    return treap_merge(t, treap_merge(t, lo, i), hi);
}

static int treap_remove(Treap *t, int root, int i) {
    int lo, mid, hi;
    int64_t at = t->bufs[i].offset;
    treap_split(t, root, at, &lo, &mid);
    treap_split(t, mid, at + 1, &mid, &hi); /* mid: i alone (live offsets are distinct) */
    treap_set_first_gap(t, hi, treap_top(t, lo));
    return treap_merge(t, lo, hi);
}

/* Earliest-first packing (see Treap); by_end: the buffers ascending by end. Returns the
 * arena size, or -1 when out of memory. */
static int64_t pack_by_start(Buffer *bufs, int n, const Order *order, const Order *by_end) {
    Treap t = {bufs, malloc(sizeof(int) * (size_t)(n + 1)), malloc(sizeof(int) * (size_t)(n + 1)),
               malloc(sizeof(uint32_t) * (size_t)(n + 1)), malloc(sizeof(int64_t) * (size_t)(n + 1)),
               malloc(sizeof(int64_t) * (size_t)(n + 1))};
    int64_t peak = -1;
    if (t.left != NULL && t.right != NULL && t.prio != NULL && t.gap != NULL && t.most != NULL) {
        uint32_t seed = 2463534242u; /* xorshift: fixed, so plans are reproducible */
        for (int i = 0; i < n; i++) {
            seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
            t.prio[i] = seed;
        }
        int root = -1, gone = 0;
        peak = 0;
        ir_work_add(n);
        for (int k = 0; k < n; k++) {
            Buffer *b = &bufs[order[k].index];
            for (; gone < n && by_end[gone].key1 < b->start; gone++)
                if (bufs[by_end[gone].index].size > 0)
                    root = treap_remove(&t, root, by_end[gone].index);
            if (b->size == 0) {
                b->offset = 0;
                continue;
            }
            b->offset = treap_most(&t, root) >= b->size ? treap_find(&t, root, b->size)
                                                        : treap_top(&t, root);
            root = treap_insert(&t, root, order[k].index);
            peak = max64(peak, b->offset + b->size);
        }
    }
    free(t.left), free(t.right), free(t.prio), free(t.gap), free(t.most);
    return peak;
}

/* Packs with both orders and leaves the better placement in p->buffers. */
/* Above this many buffers only the earliest-first order runs (see the top of the file). */
enum { LARGEST_FIRST_MAX_BUFFERS = 8192 };

static int pack_best(Planner *p) {
    int n = p->n_buffers;
    Order *order = malloc(sizeof *order * (size_t)(n + 1));
    Order *by_end = malloc(sizeof *by_end * (size_t)(n + 1));
    int64_t *best = malloc(sizeof *best * (size_t)(n + 1));
    if (order == NULL || by_end == NULL || best == NULL) {
        free(order), free(by_end), free(best);
        return -1;
    }
    int64_t best_peak = -1;
    int rc = 0;
    int first_pass = n <= LARGEST_FIRST_MAX_BUFFERS ? 0 : 1;
    for (int pass = first_pass; pass < 2 && rc == 0; pass++) {
        for (int k = 0; k < n; k++) {
            const Buffer *b = &p->buffers[k];
            order[k] = pass == 0 ? (Order){-b->size, b->start, k} : (Order){b->start, -b->size, k};
            by_end[k] = (Order){b->end, 0, k};
        }
        qsort(order, (size_t)n, sizeof *order, order_cmp);
        int64_t peak;
        if (pass == 0) {
            peak = pack(p->buffers, n, order);
        } else {
            qsort(by_end, (size_t)n, sizeof *by_end, order_cmp);
            peak = pack_by_start(p->buffers, n, order, by_end);
        }
        if (peak < 0) rc = -1;
        if (rc != 0 || (best_peak >= 0 && peak >= best_peak)) continue;
        best_peak = peak;
        for (int k = 0; k < n; k++) best[k] = p->buffers[k].offset;
    }
    for (int k = 0; k < n; k++) p->buffers[k].offset = best[k];
    p->plan->peak_bytes = best_peak < 0 ? 0 : best_peak;
    free(order), free(by_end), free(best);
    return rc;
}

/* ---- the plan ----------------------------------------------------------------------------- */

void memplan_free(MemPlan *plan) {
    free(plan->offsets);
    free(plan->starts);
    free(plan->ends);
    free(plan->alias_of);
    memset(plan, 0, sizeof *plan);
}

static int plan_alloc(MemPlan *plan, const Function *f) {
    memset(plan, 0, sizeof *plan);
    size_t n = (size_t)f->n_values + 1;
    plan->function = f->name;
    plan->n_values = f->n_values;
    plan->offsets = malloc(sizeof(int64_t) * n);
    plan->starts = malloc(sizeof(int) * n);
    plan->ends = malloc(sizeof(int) * n);
    plan->alias_of = malloc(sizeof(int) * n);
    if (!plan->offsets || !plan->starts || !plan->ends || !plan->alias_of) return -1;
    for (int v = 0; v < f->n_values; v++) {
        plan->offsets[v] = -1;
        plan->starts[v] = plan->ends[v] = plan->alias_of[v] = -1;
    }
    return 0;
}

static int planner_init(Planner *p, const Schedule *s, MemPlan *plan) {
    const Function *f = s->f;
    memset(p, 0, sizeof *p);
    p->f = f;
    p->s = s;
    p->plan = plan;
    size_t n = (size_t)f->n_values + 1;
    p->storage_end = malloc(sizeof(int) * n);
    p->root = malloc(sizeof(int) * n);
    p->in_root = malloc(sizeof(int64_t) * n);
    p->buffer_of = malloc(sizeof(int) * n);
    p->buffers = malloc(sizeof(Buffer) * n);
    p->state_name = state_output_names(f);
    p->params = malloc(sizeof *p->params * ((size_t)f->n_ops + 1));
    p->root_stamp = malloc(sizeof(int) * n);
    p->buf_stamp = malloc(sizeof(int) * n);
    p->root_bad = malloc(sizeof(bool) * n);
    p->buf_bad = malloc(sizeof(bool) * n);
    p->root_numel = malloc(sizeof(int64_t) * n);
    p->buf_numel = malloc(sizeof(int64_t) * n);
    ir_work_add((int64_t)n);
    if (plan_alloc(plan, f) != 0 || liveness_compute(s, &p->live) != 0 ||
        p->root_stamp == NULL || p->buf_stamp == NULL || p->root_bad == NULL ||
        p->buf_bad == NULL || p->root_numel == NULL || p->buf_numel == NULL ||
        p->storage_end == NULL || p->root == NULL || p->in_root == NULL || p->buffer_of == NULL ||
        p->buffers == NULL || p->state_name == NULL || p->params == NULL)
        return -1;
    for (int v = 0; v < f->n_values; v++) p->buffer_of[v] = -1;
    for (size_t v = 0; v < n; v++) p->root_stamp[v] = p->buf_stamp[v] = -1;
    compute_views(p);
    for (int i = 0; i < f->n_ops; i++)
        if (f->ops[i]->kind == OP_PARAM)
            p->params[p->n_params++] = (ParamRef){op_string(f->ops[i], "name"), i};
    qsort(p->params, (size_t)p->n_params, sizeof *p->params, param_cmp);
    return 0;
}

/* Every value the plan could place must have a known size. */
static int check_sizes(const Function *f, Diag *d) {
    for (int v = 0; v < f->n_values; v++) {
        if (value_bytes(f->values[v]) >= 0) continue;
        return diag_internal(d, SRCLOC_NONE, "memory plan: %%%s of @%s has no known size",
                             f->values[v]->name, f->name);
    }
    return 0;
}

static void record_values(Planner *p) {
    MemPlan *plan = p->plan;
    for (int v = 0; v < p->f->n_values; v++) {
        int b = p->buffer_of[v];
        if (b < 0) continue;
        plan->offsets[v] = p->buffers[b].offset + p->in_root[v];
        plan->starts[v] = p->live.def_index[v];
        plan->ends[v] = p->storage_end[v];
    }
}

/* Homes in op order: a step's writes at its first op, views as they come. */
static int assign_homes(Planner *p) {
    const Function *f = p->f;
    const Schedule *s = p->s;
    bool *taken = calloc((size_t)f->n_values + 1, sizeof *taken);
    if (taken == NULL) return -1;
    for (int i = 0; i < f->n_ops; i++) {
        int st = s->step_of_op[i];
        if (st >= 0 && s->steps[st].first_op == i) assign_step(p, &s->steps[st], taken);
        if (op_is_view(f->ops[i])) assign_view(p, f->ops[i]);
    }
    free(taken);
    return 0;
}

int memplan_schedule(const Schedule *s, MemPlan *plan, Diag *d) {
    const Function *f = s->f;
    if (check_sizes(f, d) != 0) {
        memset(plan, 0, sizeof *plan);
        return -1;
    }
    Planner p;
    int rc = -1;
    if (planner_init(&p, s, plan) == 0 && assign_homes(&p) == 0) {
        rc = pack_best(&p);
        if (rc == 0) record_values(&p);
    }
    if (rc != 0) fail(d, "memory plan of @%s: %s", f->name, "out of memory");
    planner_free(&p);
    return rc;
}

int memplan_function(const Function *f, MemPlan *plan, Diag *d) {
    Schedule s;
    if (schedule_build(f, &s, d) != 0) {
        memset(plan, 0, sizeof *plan);
        return -1;
    }
    int rc = memplan_schedule(&s, plan, d);
    schedule_free(&s);
    return rc;
}

/* ---- the checker -------------------------------------------------------------------------- */

typedef struct Checker {
    const Function *f;
    const Schedule *s;
    const MemPlan *plan;
    Liveness live;
    int *cls;     /* per value id: the first value of its view class (views join operand's) */
    int *cls_end; /* per class: last read of any member */
    int *written_by; /* per value id: the step that writes it, or -1 */
    const char **state_name; /* per value id: state_output_name() (one pass, not one per value) */
    char *err;
    size_t err_size;
} Checker;

static int check_fail(Checker *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int check_fail(Checker *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(c->err, c->err_size, "@%s: ", c->f->name);
    if (n >= 0 && (size_t)n < c->err_size) vsnprintf(c->err + n, c->err_size - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* A value outside the arena must be an input, a param, a view of outside memory, a new state
 * value, or a value no step writes (it lives inside its fused group's kernel, or nothing
 * reads it). */
static int check_outside(Checker *c, const Value *v) {
    const MemPlan *plan = c->plan;
    const Op *op = v->def;
    if (plan->alias_of[v->id] >= 0)
        return check_fail(c, "%%%s is outside the arena but declares an alias", v->name);
    if (op == NULL || op->kind == OP_PARAM || c->written_by[v->id] < 0) return 0;
    if (op_is_view(op) && plan->offsets[op->inputs[0]->id] < 0) return 0;
    if (c->state_name[v->id] != NULL) return 0;
    return check_fail(c, "%%%s has no memory: neither in the arena nor caller/state memory",
                      v->name);
}

/* An in-place alias must be an aligned read of the step that writes v, of v's size. */
static int check_step_alias(Checker *c, const Value *v, const Value *src) {
    int st = c->written_by[v->id];
    if (st < 0) return check_fail(c, "%%%s aliases %%%s but no step writes it", v->name, src->name);
    const Step *step = &c->s->steps[st];
    for (int k = 0; k < step->n_reads; k++) {
        if (step->reads[k] != src) continue;
        if (step->read_aligned[k] && src->dtype == v->dtype &&
            shape_numel(&src->shape) == shape_numel(&v->shape))
            return 0;
        break;
    }
    return check_fail(c, "%%%s cannot be computed in place of %%%s", v->name, src->name);
}

/* An alias must be an operand that this op may share bytes with, at the same offset. */
static int check_alias(Checker *c, const Value *v) {
    int u = c->plan->alias_of[v->id];
    if (u < 0) return 0;
    const Value *src = c->f->values[u];
    const Op *op = v->def;
    int64_t at = op != NULL && op_is_view(op) ? op_view_offset(op) * dtype_size(src->dtype) : 0;
    if (c->plan->offsets[u] + at != c->plan->offsets[v->id])
        return check_fail(c, "%%%s aliases %%%s at another offset", v->name, src->name);
    if (op != NULL && op_is_view(op)) {
        if (op->inputs[0] != src)
            return check_fail(c, "%%%s aliases %%%s, which is not its operand", v->name,
                              src->name);
        return 0;
    }
    return check_step_alias(c, v, src);
}

static int check_value(Checker *c, const Value *v) {
    int64_t off = c->plan->offsets[v->id], bytes = value_bytes(v);
    if (v->def == NULL && off >= 0)
        return check_fail(c, "input %%%s is placed in the arena", v->name);
    if (off < 0) return check_outside(c, v);
    if (bytes < 0) return check_fail(c, "%%%s has no known size", v->name);
    bool view = v->def != NULL && op_is_view(v->def); /* a slice starts inside its root */
    if ((!view && off % MEMPLAN_ALIGN != 0) || off + bytes > c->plan->peak_bytes)
        return check_fail(c, "%%%s at offset %lld (%lld bytes) is misaligned or outside the "
                          "%lld-byte arena", v->name, (long long)off, (long long)bytes,
                          (long long)c->plan->peak_bytes);
    return check_alias(c, v);
}

static void build_classes(Checker *c) {
    const Function *f = c->f;
    for (int v = 0; v < f->n_values; v++) c->cls[v] = v, c->cls_end[v] = -1;
    for (int i = 0; i < f->n_ops; i++) {
        const Op *op = f->ops[i];
        int r = op->result->id, u = c->plan->alias_of[r];
        if (u >= 0 && op_is_view(op)) c->cls[r] = c->cls[u];
        c->cls_end[c->cls[r]] = max_int(c->cls_end[c->cls[r]], c->live.last_use[r]);
    }
}

/* Classes a (defined first) and b may share bytes while both live only when b is computed in
 * place over a member of a, at the op where a is read for the last time. */
static int check_pair(Checker *c, int a, int b) {
    const MemPlan *plan = c->plan;
    const Value *va = c->f->values[a], *vb = c->f->values[b];
    int64_t lo = max64(plan->offsets[a], plan->offsets[b]);
    int64_t hi_a = plan->offsets[a] + value_bytes(va), hi_b = plan->offsets[b] + value_bytes(vb);
    if (lo >= (hi_a < hi_b ? hi_a : hi_b)) return 0; /* no shared bytes */
    int sa = c->live.def_index[a], sb = c->live.def_index[b];
    if (c->cls_end[a] < sb || c->cls_end[b] < sa) return 0; /* never live together */
    int u = plan->alias_of[b];
    if (u >= 0 && c->cls[u] == a && c->cls_end[a] == sb) return 0; /* in place */
    return check_fail(c, "%%%s [%d,%d] and %%%s [%d,%d] share bytes from %lld while both live",
                      va->name, sa, c->cls_end[a], vb->name, sb, c->cls_end[b], (long long)lo);
}

/* The classes live at the current op, by offset: a treap over value ids keyed by their
 * offsets (pairwise disjoint bytes, so distinct offsets), with fixed pseudo-random priorities.
 * A sorted array cost a memmove of the live set per class, and a deep model's backward pass
 * keeps thousands of activations live: quadratic in depth. */
typedef struct Live {
    const int64_t *key; /* the plan's offsets */
    int *left, *right;  /* per value id */
    int root;           /* -1: empty */
} Live;

static uint32_t live_prio(int v) {
    uint32_t x = (uint32_t)v * 2654435761u + 0x9E3779B9u;
    x ^= x >> 16, x *= 0x85EBCA6Bu, x ^= x >> 13;
    return x;
}

/* Splits x into the nodes with key < at (<= at when `after`) in *lo and the rest in *hi. */
static void live_split(Live *t, int x, int64_t at, bool after, int *lo, int *hi) {
    if (x < 0) {
        *lo = *hi = -1;
    } else if (t->key[x] < at || (after && t->key[x] == at)) {
        live_split(t, t->right[x], at, after, &t->right[x], hi);
        *lo = x;
    } else {
        live_split(t, t->left[x], at, after, lo, &t->left[x]);
        *hi = x;
    }
}

/* Joins a and b, every key in a at most every key in b. */
static int live_merge(Live *t, int a, int b) {
    if (a < 0) return b;
    if (b < 0) return a;
    if (live_prio(a) > live_prio(b)) {
        t->right[a] = live_merge(t, t->right[a], b);
        return a;
    }
    t->left[b] = live_merge(t, a, t->left[b]);
    return b;
}

/* The live class with the highest offset below `below`, or -1. */
static int live_below(const Live *t, int64_t below) {
    int found = -1;
    for (int x = t->root; x >= 0;) {
        if (t->key[x] < below) {
            found = x;
            x = t->right[x];
        } else {
            x = t->left[x];
        }
    }
    return found;
}

static void live_insert(Live *t, int r) {
    int lo, hi;
    live_split(t, t->root, t->key[r], true, &lo, &hi);
    t->left[r] = t->right[r] = -1;
    t->root = live_merge(t, live_merge(t, lo, r), hi);
}

/* Removes r when it is the first live class at its offset (not there: already removed). */
static void live_remove(Live *t, int r) {
    int lo, mid, hi;
    live_split(t, t->root, t->key[r], false, &lo, &mid);
    live_split(t, mid, t->key[r], true, &mid, &hi); /* mid: the classes at r's offset */
    int first = mid, parent = -1;
    while (first >= 0 && t->left[first] >= 0) parent = first, first = t->left[first];
    if (first == r) {
        if (parent < 0) mid = t->right[r];
        else t->left[parent] = t->right[r];
    }
    t->root = live_merge(t, live_merge(t, lo, mid), hi);
}

/* roots[0..n) into by_end, ascending by last read (a counting sort: ends are op indices in
 * [0, n_ops]); -1 when out of memory. */
static int sort_by_end(const Checker *c, const int *roots, int n, int *by_end) {
    int n_ends = c->f->n_ops + 2;
    int *first = calloc((size_t)n_ends + 1, sizeof *first);
    if (first == NULL) return -1;
    for (int i = 0; i < n; i++) first[c->cls_end[roots[i]] + 1]++;
    for (int e = 1; e <= n_ends; e++) first[e] += first[e - 1];
    for (int i = 0; i < n; i++) by_end[first[c->cls_end[roots[i]]]++] = roots[i];
    free(first);
    return 0;
}

/* A sweep over the classes in the order they are defined. `live` holds the classes live at
 * the current op, sorted by offset; as no two of them may share bytes, a new class can only
 * clash with the one just below it (the last one starting before its end). Before a class is
 * added, the classes that ended earlier leave, and so does the class it is computed in place
 * over (legal only when that class's last read is here, so nothing later can clash with it;
 * check_pair decides). A clash found is reported by check_pair. */
static int check_overlaps(Checker *c) {
    const Function *f = c->f;
    const MemPlan *plan = c->plan;
    size_t cap = (size_t)f->n_ops + 1, nv = (size_t)f->n_values + 1;
    int *roots = malloc(sizeof(int) * cap), *by_end = malloc(sizeof(int) * cap);
    Live live = {plan->offsets, malloc(sizeof(int) * nv), malloc(sizeof(int) * nv), -1};
    if (roots == NULL || by_end == NULL || live.left == NULL || live.right == NULL) {
        free(roots), free(by_end), free(live.left), free(live.right);
        return check_fail(c, "out of memory");
    }
    int n = 0, rc = 0;
    for (int i = 0; i < f->n_ops; i++) {
        int r = f->ops[i]->result->id;
        if (c->cls[r] == r && plan->offsets[r] >= 0 && value_bytes(f->values[r]) > 0)
            roots[n++] = r; /* an empty value shares no bytes */
    }
    if (sort_by_end(c, roots, n, by_end) != 0) rc = check_fail(c, "out of memory");
    ir_work_add(n); /* the sweep: each class enters and leaves the live set once */
    int gone = 0; /* by_end[0..gone) have left `live` */
    for (int i = 0; i < n && rc == 0; i++) {
        int b = roots[i], sb = c->live.def_index[b];
        for (; gone < n && c->cls_end[by_end[gone]] < sb; gone++) live_remove(&live, by_end[gone]);
        int u = plan->alias_of[b];
        if (u >= 0 && c->cls_end[c->cls[u]] == sb) {
            int a = c->cls[u];
            rc = check_pair(c, a, b); /* in place over a: fine, else a clash */
            live_remove(&live, a);
        }
        int64_t hi = plan->offsets[b] + value_bytes(f->values[b]);
        int below = live_below(&live, hi); /* the last class starting below b's end */
        if (rc == 0 && below >= 0) rc = check_pair(c, below, b);
        if (rc == 0) live_insert(&live, b);
    }
    free(roots), free(by_end), free(live.left), free(live.right);
    return rc;
}

int memplan_check_schedule(const Schedule *s, const MemPlan *plan, char *err,
                           size_t err_size) {
    const Function *f = s->f;
    Checker c = {.f = f, .s = s, .plan = plan, .err = err, .err_size = err_size};
    if (plan->n_values != f->n_values || plan->offsets == NULL || plan->alias_of == NULL)
        return check_fail(&c, "the plan is for another function (%d values, not %d)",
                          plan->n_values, f->n_values);
    int rc = -1;
    c.cls = malloc(sizeof(int) * ((size_t)f->n_values + 1));
    c.cls_end = malloc(sizeof(int) * ((size_t)f->n_values + 1));
    c.written_by = malloc(sizeof(int) * ((size_t)f->n_values + 1));
    c.state_name = state_output_names(f);
    ir_work_add((int64_t)f->n_values + f->n_ops);
    if (c.cls == NULL || c.cls_end == NULL || c.written_by == NULL || c.state_name == NULL ||
        liveness_compute(s, &c.live) != 0) {
        check_fail(&c, "out of memory");
    } else {
        for (int v = 0; v < f->n_values; v++) c.written_by[v] = -1;
        for (int st = 0; st < s->n_steps; st++)
            for (int w = 0; w < s->steps[st].n_writes; w++)
                c.written_by[s->steps[st].writes[w]->id] = st;
        rc = 0;
        for (int v = 0; v < f->n_values && rc == 0; v++) rc = check_value(&c, f->values[v]);
        if (rc == 0) build_classes(&c);
        if (rc == 0) rc = check_overlaps(&c);
    }
    liveness_free(&c.live);
    free(c.cls);
    free(c.cls_end);
    free(c.written_by);
    free(c.state_name);
    return rc;
}

int memplan_check(const Function *f, const MemPlan *plan, char *err, size_t err_size) {
    Schedule s;
    Diag d = {0};
    if (schedule_build(f, &s, &d) != 0) {
        snprintf(err, err_size, "%s", d.msg);
        return -1;
    }
    int rc = memplan_check_schedule(&s, plan, err, err_size);
    schedule_free(&s);
    return rc;
}

/* ---- reports ------------------------------------------------------------------------------ */

/* Why a value outside the arena is there, or how an arena value shares its bytes. */
static void value_note(const Function *f, const MemPlan *plan, const char **state_name,
                       const Value *v, char *buf, size_t size) {
    int u = plan->alias_of[v->id];
    const char *state = state_name != NULL ? state_name[v->id] : state_output_name(f, v);
    buf[0] = '\0';
    if (v->def == NULL) snprintf(buf, size, "input");
    else if (v->def->kind == OP_PARAM) snprintf(buf, size, "param %s", op_string(v->def, "name"));
    else if (u >= 0)
        snprintf(buf, size, "%s %%%s", op_is_view(v->def) ? "view of" : "in place of",
                 f->values[u]->name);
    else if (op_is_view(v->def) && plan->offsets[v->id] < 0)
        snprintf(buf, size, "view of %%%s", v->def->inputs[0]->name);
    else if (state != NULL && plan->offsets[v->id] < 0) snprintf(buf, size, "state @%s", state);
    else if (v->def->group >= 0 && plan->offsets[v->id] < 0)
        snprintf(buf, size, "inside fused.%s", f->groups[v->def->group].pattern);
}

void memplan_print(FILE *out, const Function *f, const MemPlan *plan) {
    fprintf(out, "function @%s\n", f->name);
    fprintf(out, "  peak bytes:  %lld\n", (long long)plan->peak_bytes);
    fprintf(out, "  naive bytes: %lld\n", (long long)plan->naive_bytes);
    fprintf(out, "  ratio:       %.1f%%\n",
            plan->naive_bytes > 0 ? 100.0 * (double)plan->peak_bytes / (double)plan->naive_bytes
                                  : 0.0);
    fprintf(out, "  %-44s %12s %12s %13s\n", "value", "bytes", "offset", "[start,end]");
    const char **state_name = state_output_names(f); /* NULL (no memory): a scan per value */
    for (int id = 0; id < f->n_values; id++) {
        const Value *v = f->values[id];
        char note[256], off[32] = "-", life[32] = "-";
        value_note(f, plan, state_name, v, note, sizeof note);
        if (plan->offsets[id] >= 0) {
            snprintf(off, sizeof off, "%lld", (long long)plan->offsets[id]);
            snprintf(life, sizeof life, "[%d,%d]", plan->starts[id], plan->ends[id]);
        }
        fprintf(out, "  %%%-43s %12lld %12s %13s%s%s\n", v->name, (long long)value_bytes(v), off,
                life, note[0] ? "  " : "", note);
    }
    free(state_name);
}
