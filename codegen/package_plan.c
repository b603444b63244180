/* package_plan.c — each entry point as a straight list of kernel steps over buffers.
 *
 * Needs: a module whose functions are verified with every shape known.
 * pkg_lower: every function's schedule lowered to kernels (codegen_lower_function_cached: a
 * step shaped like an earlier one, in any entry point, takes that one's kernel).
 * pkg_plan: every function's memory planned (memplan_schedule, always checked by
 * memplan_check_schedule), its kernels added to the package's table (identical ones merged),
 * and every kernel argument given a place (a CapBufRef):
 *
 *   a function input          -> CAP_BUF_INPUT  i (the caller's tensor)
 *   a `param` result          -> CAP_BUF_STATE  index of the param in the module's table
 *   a view (reshape, contiguous slice) -> the place of its operand, transitively, plus the
 *                               slice's offset: the same bytes
 *   a planned value           -> CAP_BUF_ARENA  at the plan's offset
 *   an "@X" output the plan left out of the arena (written straight into X)
 *                             -> CAP_BUF_STATE  X
 *
 * The entry ends with copies: every plain output ("loss") into CAP_BUF_OUTPUT i, then every
 * "@X" output into state X unless its value already lives there. Plain outputs go first and
 * state write-backs last, so every read of an old state value (by a kernel or an output copy)
 * happens before X is overwritten. Among the write-backs, one that reads state Y (`@X = old
 * Y`) goes before the one that overwrites Y; a cycle of them (two states swapped) would need
 * a temporary and is reported as an internal error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diag.h"
#include "ops.h"
#include "package.h"
#include "passes.h"

typedef struct EntryCtx {
    Package *p;
    const Function *f;
    const MemPlan *plan;
    PkgEntry *e;
    Diag *d;
    /* Per value id: the state X of its first "@X" output, and its first input position (-1:
     * none); built once per entry (entry_index), as scanning the outputs per kernel argument
     * was quadratic in the number of parameters. */
    int *state_of, *input_of;
    /* Per value id: its place once found (placed[id]); a value is an argument of several
     * kernels, and a param's place is a lookup by name. */
    CapBufRef *place_of;
    bool *placed;
} EntryCtx;

static int out_of_memory(Diag *d) {
    diag_set(d, SRCLOC_NONE, "out of memory while packaging");
    return -1;
}

int pkg_state_index(const Module *m, const char *name) { return module_param_index(m, name); }

bool pkg_cap_dtype(DType dt, int32_t *out) {
    if (dt == DT_F32) *out = CAP_DT_F32;
    else if (dt == DT_I32) *out = CAP_DT_I32;
    else return false;
    return true;
}

static int64_t value_bytes(const Value *v) {
    return shape_numel(&v->shape) * dtype_size(v->dtype);
}

/* Fills c->state_of and c->input_of; -1 when out of memory. */
static int entry_index(EntryCtx *c) {
    const Function *f = c->f;
    size_t n = (size_t)f->n_values + 1;
    c->state_of = malloc(sizeof(int) * n);
    c->input_of = malloc(sizeof(int) * n);
    c->place_of = malloc(sizeof *c->place_of * n);
    c->placed = calloc(n, sizeof *c->placed);
    if (c->state_of == NULL || c->input_of == NULL || c->place_of == NULL || c->placed == NULL)
        return -1;
    ir_work_add((int64_t)n + f->n_outputs + f->n_inputs);
    for (int v = 0; v < f->n_values; v++) c->state_of[v] = c->input_of[v] = -1;
    for (int i = f->n_outputs - 1; i >= 0; i--) /* backwards: the first one wins */
        if (f->output_names[i][0] == '@')
            c->state_of[f->outputs[i]->id] = pkg_state_index(f->module, f->output_names[i] + 1);
    for (int i = f->n_inputs - 1; i >= 0; i--) c->input_of[f->inputs[i]->id] = i;
    return 0;
}

/* The state X of an output "@X" whose value is v, or -1. */
static int state_written_by(const EntryCtx *c, const Value *v) { return c->state_of[v->id]; }

static int input_index(const EntryCtx *c, const Value *v) { return c->input_of[v->id]; }

/* Where base (a value that is not a view) lives. */
static int place_base(const EntryCtx *c, const Value *base, CapBufRef *ref) {
    if (base->def == NULL) {
        ref->space = CAP_BUF_INPUT;
        ref->index = input_index(c, base);
        if (ref->index < 0)
            return diag_internal(c->d, SRCLOC_NONE, "%%%s is not an input of @%s", base->name,
                                 c->f->name);
        return 0;
    }
    if (base->def->kind == OP_PARAM) {
        const char *name = op_string(base->def, "name");
        ref->space = CAP_BUF_STATE;
        ref->index = pkg_state_index(c->f->module, name);
        if (ref->index < 0)
            return diag_internal(c->d, SRCLOC_NONE, "param '%s' is not in the module", name);
        return 0;
    }
    int64_t offset = c->plan->offsets[base->id];
    if (offset >= 0) {
        ref->space = CAP_BUF_ARENA;
        ref->offset = offset;
        return 0;
    }
    ref->space = CAP_BUF_STATE;
    ref->index = state_written_by(c, base);
    if (ref->index < 0)
        return diag_internal(c->d, SRCLOC_NONE, "%%%s of @%s has no place: not in the arena, "
                             "not an input, param or \"@X\" output", base->name, c->f->name);
    return 0;
}

/* Fills ref with v's place; views resolve to their operand's bytes. */
static int place_value(const EntryCtx *c, const Value *v, CapBufRef *ref) {
    memset(ref, 0, sizeof *ref);
    if (v == NULL || v->fn != c->f || v->id < 0 || v->id >= c->plan->n_values)
        return diag_internal(c->d, SRCLOC_NONE,
                             "a kernel of @%s reads a value of another function", c->f->name);
    if (c->placed[v->id]) {
        *ref = c->place_of[v->id];
        return 0;
    }
    const Value *base = v;
    int64_t in_base = 0; /* bytes: a slice view starts inside its base */
    while (base->def != NULL && op_is_view(base->def)) {
        in_base += op_view_offset(base->def) * dtype_size(base->dtype);
        base = base->def->inputs[0];
    }
    if (place_base(c, base, ref) != 0) return -1;
    ref->offset += in_base;
    ref->bytes = value_bytes(v);
    if (ref->space == CAP_BUF_ARENA && ref->offset + ref->bytes > c->e->arena_bytes)
        return diag_internal(c->d, SRCLOC_NONE,
                             "%%%s (%lld bytes at %lld) lies outside the arena of @%s (%lld bytes)",
                             v->name, (long long)ref->bytes, (long long)ref->offset, c->f->name,
                             (long long)c->e->arena_bytes);
    c->place_of[v->id] = *ref;
    c->placed[v->id] = true;
    return 0;
}

static PkgStep *append_step(PkgEntry *e, int kernel, int n_args) {
    if (e->n_steps == e->cap_steps) {
        int cap = e->cap_steps == 0 ? 64 : e->cap_steps * 2;
        PkgStep *s = realloc(e->steps, (size_t)cap * sizeof *s);
        if (s == NULL) return NULL;
        e->steps = s;
        e->cap_steps = cap;
    }
    PkgStep *s = &e->steps[e->n_steps];
    s->kernel = kernel;
    s->n_args = n_args;
    s->args = calloc((size_t)(n_args > 0 ? n_args : 1), sizeof *s->args);
    if (s->args == NULL) return NULL;
    e->n_steps++;
    return s;
}

/* One step per lowered kernel, in program order. */
static int add_kernel_steps(const EntryCtx *c, FunctionKernels *fk) {
    for (int k = 0; k < fk->n_kernels; k++) {
        LoweredKernel *lk = &fk->kernels[k];
        int index = pkg_add_kernel(c->p, lk);
        if (index < 0) return out_of_memory(c->d);
        PkgStep *step = append_step(c->e, index, lk->n_args);
        if (step == NULL) return out_of_memory(c->d);
        for (int j = 0; j < lk->n_args; j++)
            if (place_value(c, lk->args[j], &step->args[j]) != 0) return -1;
    }
    c->p->n_lowered += fk->n_kernels;
    return 0;
}

static int add_copy(const EntryCtx *c, const Value *v, const CapBufRef *dst) {
    int kernel = pkg_copy_kernel(c->p, v->dtype, shape_numel(&v->shape));
    if (kernel < 0) return out_of_memory(c->d);
    PkgStep *step = append_step(c->e, kernel, 2);
    if (step == NULL) return out_of_memory(c->d);
    step->args[0] = *dst;
    c->e->n_copies++;
    return place_value(c, v, &step->args[1]);
}

/* A pending "@X" write-back: copy src into state `state`. */
typedef struct WriteBack {
    const Value *v;
    CapBufRef src;
    int state;
    bool done;
} WriteBack;

/* The "@X" output i: record X; returns 1 with *wb filled when a copy is needed, 0 when the
 * value already lives in X, -1 on error. */
static int plan_writeback(const EntryCtx *c, int i, WriteBack *wb) {
    const Function *f = c->f;
    const Value *v = f->outputs[i];
    int state = pkg_state_index(f->module, f->output_names[i] + 1);
    if (state < 0)
        return diag_internal(c->d, SRCLOC_NONE, "output '%s' of @%s names no module state",
                             f->output_names[i], f->name);
    const Param *param = f->module->params[state];
    if (param->dtype != v->dtype || shape_numel(&param->shape) != shape_numel(&v->shape))
        return diag_internal(c->d, SRCLOC_NONE,
                             "output '%s' of @%s does not match the state's type",
                             f->output_names[i], f->name);
    c->e->output_state[i] = state;
    wb->v = v;
    wb->state = state;
    wb->done = false;
    if (place_value(c, v, &wb->src) != 0) return -1;
    return wb->src.space == CAP_BUF_STATE && wb->src.index == state ? 0 : 1;
}

/* True when a pending write-back other than wbs[k] still reads the state wbs[k] writes.
 * readers[X]: how many pending write-backs read state X. */
static bool state_still_read(const WriteBack *wbs, const int *readers, int k) {
    const WriteBack *w = &wbs[k];
    bool self = w->src.space == CAP_BUF_STATE && w->src.index == w->state;
    return readers[w->state] - (self ? 1 : 0) > 0;
}

/* Emits the write-backs so that each state is read before it is overwritten. */
static int emit_writebacks(const EntryCtx *c, WriteBack *wbs, int n) {
    int *readers = calloc((size_t)c->f->module->n_params + 1, sizeof *readers);
    if (readers == NULL) return out_of_memory(c->d);
    for (int k = 0; k < n; k++)
        if (wbs[k].src.space == CAP_BUF_STATE) readers[wbs[k].src.index]++;
    int rc = 0;
    for (int emitted = 0; emitted < n && rc == 0;) {
        int progress = 0;
        for (int k = 0; k < n && rc == 0; k++) {
            if (wbs[k].done || state_still_read(wbs, readers, k)) continue;
            CapBufRef dst = {.space = CAP_BUF_STATE, .index = wbs[k].state,
                             .bytes = value_bytes(wbs[k].v)};
            if (add_copy(c, wbs[k].v, &dst) != 0) {
                rc = -1;
                break;
            }
            wbs[k].done = true;
            if (wbs[k].src.space == CAP_BUF_STATE) readers[wbs[k].src.index]--;
            progress++;
        }
        if (rc == 0 && progress == 0)
            rc = diag_internal(c->d, SRCLOC_NONE, "the state write-backs of @%s form a cycle "
                               "(states exchanged); the packager cannot order them", c->f->name);
        emitted += progress;
    }
    free(readers);
    return rc;
}

static int add_output_copies(const EntryCtx *c) {
    const Function *f = c->f;
    for (int i = 0; i < f->n_outputs; i++) {
        c->e->output_state[i] = -1;
        if (f->output_names[i][0] == '@') continue;
        CapBufRef dst = {.space = CAP_BUF_OUTPUT, .index = i, .bytes = value_bytes(f->outputs[i])};
        if (add_copy(c, f->outputs[i], &dst) != 0) return -1;
    }
    WriteBack *wbs = calloc((size_t)f->n_outputs + 1, sizeof *wbs);
    if (wbs == NULL) return out_of_memory(c->d);
    int n = 0, rc = 0;
    for (int i = 0; i < f->n_outputs && rc >= 0; i++) {
        if (f->output_names[i][0] != '@') continue;
        rc = plan_writeback(c, i, &wbs[n]);
        if (rc > 0) n++;
    }
    if (rc >= 0) rc = emit_writebacks(c, wbs, n);
    free(wbs);
    return rc < 0 ? -1 : 0;
}

static double seconds_since(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

static int build_steps(const EntryCtx *c, FunctionKernels *fk) {
    if (add_kernel_steps(c, fk) != 0) return -1;
    c->e->output_state = calloc((size_t)(c->f->n_outputs + 1), sizeof *c->e->output_state);
    if (c->e->output_state == NULL) return out_of_memory(c->d);
    return add_output_copies(c);
}

/* The plan's own checker, always: a plan it rejects is a bug in the planner. */
static int check_plan(const Schedule *s, const MemPlan *plan, Diag *d) {
    char err[512];
    if (memplan_check_schedule(s, plan, err, sizeof err) == 0) return 0;
    return diag_internal(d, SRCLOC_NONE, "invalid memory plan: %s", err);
}

/* Entry i's memory plan, then its steps over the kernel table. */
static int plan_entry(Package *p, int i, Diag *d) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    FunctionKernels *fk = &p->fk[i];
    PkgEntry *e = &p->entries[i];
    MemPlan *plan = &p->plans[i];
    int n_kernels = fk->n_kernels;
    int rc = memplan_schedule(&fk->schedule, plan, d);
    if (rc == 0) rc = check_plan(&fk->schedule, plan, d);
    if (rc == 0) {
        e->arena_bytes = plan->peak_bytes;
        e->naive_bytes = plan->naive_bytes;
        e->n_kernels = n_kernels;
        EntryCtx c = {.p = p, .f = fk->f, .plan = plan, .e = e, .d = d};
        rc = entry_index(&c) != 0 ? out_of_memory(d) : build_steps(&c, fk);
        free(c.state_of);
        free(c.input_of);
        free(c.place_of);
        free(c.placed);
        /* The steps are built: of fk, later entries need only what trim keeps. */
        if (rc == 0) function_kernels_trim(fk);
    }
    if (rc == 0 && p->verbose)
        fprintf(stderr, "capc: %s: %d kernels, %d launches, arena %lld bytes (%.3fs)\n",
                fk->f->name, n_kernels, e->n_steps, (long long)e->arena_bytes,
                seconds_since(&t0));
    return rc;
}

/* Every state tensor must be a dtype the artifact can hold. */
static int check_state_dtypes(const Module *m, Diag *d) {
    for (int i = 0; i < m->n_params; i++) {
        int32_t dt;
        if (!pkg_cap_dtype(m->params[i]->dtype, &dt)) {
            diag_set(d, m->params[i]->loc, "'%s' has dtype %s, which cap.so cannot hold (f32 "
                     "and i32 only)", m->params[i]->name, dtype_name(m->params[i]->dtype));
            return -1;
        }
    }
    return 0;
}

/* ... and so must every entry point's inputs and outputs. */
static int check_io_dtypes(const Function *f, Diag *d) {
    for (int i = 0; i < f->n_inputs + f->n_outputs; i++) {
        const Value *v = i < f->n_inputs ? f->inputs[i] : f->outputs[i - f->n_inputs];
        const char *name = i < f->n_inputs ? v->name : f->output_names[i - f->n_inputs];
        int32_t dt;
        if (!pkg_cap_dtype(v->dtype, &dt)) {
            diag_set(d, SRCLOC_NONE, "@%s: '%s' has dtype %s, which cap.so cannot pass "
                     "(f32 and i32 only)", f->name, name, dtype_name(v->dtype));
            return -1;
        }
    }
    return 0;
}

void pkg_lower_done(Package *p) {
    lower_cache_free(p->lower_cache);
    p->lower_cache = NULL;
}

int pkg_lower(Package *p, Diag *d) {
    const Module *m = p->m;
    if (check_state_dtypes(m, d) != 0) return -1;
    for (int i = 0; i < m->n_funcs; i++)
        if (check_io_dtypes(m->funcs[i], d) != 0) return -1;
    size_t n = (size_t)(m->n_funcs > 0 ? m->n_funcs : 1);
    p->fk = calloc(n, sizeof *p->fk);
    p->plans = calloc(n, sizeof *p->plans);
    p->entries = calloc(n, sizeof *p->entries);
    if (p->fk == NULL || p->plans == NULL || p->entries == NULL) return out_of_memory(d);
    if ((p->lower_cache = lower_cache_new()) == NULL) return out_of_memory(d);
    for (int i = 0; i < m->n_funcs; i++) {
        p->n_entries++;
        p->entries[i].f = m->funcs[i];
        if (codegen_lower_function_cached(m->funcs[i], &p->fk[i], p->lower_cache, d) != 0)
            return -1;
    }
    pkg_lower_done(p);
    if (p->verbose) {
        int n = 0, reused = 0;
        for (int i = 0; i < m->n_funcs; i++)
            for (int k = 0; k < p->fk[i].n_kernels; k++) {
                n++;
                reused += p->fk[i].kernels[k].source_ops == NULL;
            }
        fprintf(stderr, "capc: %d kernels, %d lowered (the rest took the kernel of an earlier "
                "step of the same structure)\n", n, n - reused);
    }
    return 0;
}

int pkg_plan(Package *p, Diag *d) {
    for (int i = 0; i < p->n_entries; i++)
        if (plan_entry(p, i, d) != 0) return -1;
    return 0;
}

void pkg_free(Package *p) {
    for (int i = 0; i < p->n_entries; i++) {
        PkgEntry *e = &p->entries[i];
        for (int s = 0; s < e->n_steps; s++) free(e->steps[s].args);
        free(e->steps);
        free(e->output_state);
        function_kernels_free(&p->fk[i]);
        memplan_free(&p->plans[i]);
    }
    free(p->entries);
    free(p->fk);
    free(p->plans);
    pkg_kernels_free(p);
    pkg_lower_done(p);
    memset(p, 0, sizeof *p);
}
