/* lower.c — a function's schedule -> one kernel description per step (lower.h lists who does
 * what). Steps that write nothing (dead code) get no kernel; `param` and views are no steps.
 *
 * A kernel's arguments are its step's writes, then its reads, each value once, so a fused
 * group's kernel sees exactly the memory the memory plan gives it. Its name is
 * "<function>_<first op index>_<pattern or op>", its comment names its ops, and every
 * argument's type, as every generated kernel's header does (render.c). The descriptions stay
 * alive until packaging, where identical ones are merged by their structure (kd_equal).
 */
#include <stdlib.h>
#include <string.h>

#include "codegen.h"
#include "diag.h"
#include "lower.h"
#include "strbuf.h"

/* ---- names and comments ------------------------------------------------------------------ */

/* "<function>_<op index>_<what>", with anything but [A-Za-z0-9_] turned into '_'. */
static void kernel_name(const Function *f, const Step *st, char *buf, size_t size) {
    const char *what = st->group >= 0 ? f->groups[st->group].pattern
                                      : op_info(f->ops[st->first_op]->kind)->name;
    snprintf(buf, size, "%s_%d_%s", f->name, st->first_op, what);
    for (char *p = buf; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            *p = '_';
    if (buf[0] >= '0' && buf[0] <= '9') buf[0] = '_';
}

/* "conv2d %x" for one op; "fused.P: conv2d %x, relu %y, ..." for a group (the first ops, then
 * how many there are). malloc'd. */
static char *source_ops(const Function *f, const Step *st) {
    enum { SHOWN = 8 };
    size_t size = 160;
    int shown = st->n_ops < SHOWN ? st->n_ops : SHOWN;
    for (int i = st->first_op; i < st->first_op + shown; i++)
        size += strlen(f->ops[i]->result->name) + 40;
    char *s = malloc(size);
    if (s == NULL) return NULL;
    size_t n = 0;
    if (st->group >= 0) n += (size_t)snprintf(s, size, "fused.%s: ", f->groups[st->group].pattern);
    for (int i = st->first_op; i < st->first_op + shown; i++)
        n += (size_t)snprintf(s + n, size - n, "%s%s %%%s", i > st->first_op ? ", " : "",
                              op_info(f->ops[i]->kind)->name, f->ops[i]->result->name);
    if (shown < st->n_ops) snprintf(s + n, size - n, ", ... (%d ops)", st->n_ops);
    return s;
}

/* "%name f32[2,3]" (cut off to size - 1 bytes, as snprintf would). */
static void describe(const Value *v, char *buf, size_t size) {
    char type[128];
    type_format(v->dtype, &v->shape, type, sizeof type);
    StrBuf b;
    strbuf_init_fixed(&b, buf, size);
    strbuf_putc(&b, '%');
    strbuf_puts(&b, v->name);
    strbuf_putc(&b, ' ');
    strbuf_puts(&b, type);
}

KernelDesc *lower_clone_args(const KernelDesc *kd) {
    KernelDesc *copy = kd_new(kd->name);
    if (copy == NULL) return NULL;
    kd_set_comment(copy, kd->comment);
    for (int i = 0; i < kd->n_args; i++)
        kd_arg(copy, kd->bufs[i].what, kd->bufs[i].type, kd->bufs[i].numel, kd->bufs[i].written);
    return copy;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

/* Ops no fused group holds: window and whole-tensor reductions, scatter_add. */
static bool runs_alone(const Op *op) {
    bool reduced[IR_MAX_RANK];
    FusionKind k = op_fusion(op);
    return (k == FUSE_REDUCTION && !op_reduced_axes(op, reduced)) || k == FUSE_OPAQUE;
}

int lower_alone(LowerCtx *c) {
    const Step *st = &c->s->steps[c->step];
    const Op *op = c->s->f->ops[st->first_op];
    OpBufs b = {c->buf_of[op->result->id], {0}};
    for (int i = 0; i < op->n_inputs && i < 8; i++) b.in[i] = c->buf_of[op->inputs[i]->id];
    switch (op->kind) {
    case OP_MAX_POOL2D:
    case OP_MAX_POOL2D_GRAD:
    case OP_ADAPTIVE_AVG_POOL2D:
    case OP_ADAPTIVE_AVG_POOL2D_GRAD: return lower_pool_op(c->kd, op, &b, c->err, c->err_size);
    case OP_CROSS_ENTROPY:
    case OP_CROSS_ENTROPY_GRAD: return lower_cross_entropy_op(c->kd, op, &b, c->err, c->err_size);
    case OP_SCATTER_ADD: return lower_scatter_add_op(c->kd, op, &b, c->err, c->err_size);
    default:
        snprintf(c->err, c->err_size, "no kernel lowering for op %s (codegen/lower.c)",
                 op_info(op->kind)->name);
        return -1;
    }
}

static int lower_step_desc(LowerCtx *c) {
    const Function *f = c->s->f;
    const Step *st = &c->s->steps[c->step];
    if (st->group >= 0 && strncmp(f->groups[st->group].pattern, "attention", 9) == 0)
        return lower_attention(c);
    int n_contract = 0, n_reduce = 0, n_alone = 0;
    for (int i = st->first_op; i < st->first_op + st->n_ops; i++) {
        const Op *op = f->ops[i];
        bool reduced[IR_MAX_RANK];
        if (op_is_view(op)) continue;
        if (runs_alone(op)) n_alone++;
        else if (op_reduced_axes(op, reduced)) n_reduce++;
        else if (op_fusion(op) == FUSE_CONTRACTION) n_contract++;
    }
    if (n_alone > 0) {
        if (st->n_ops != 1) {
            snprintf(c->err, c->err_size, "an op that runs alone is inside a fused group");
            return -1;
        }
        return lower_alone(c);
    }
    if (n_contract > 0 && n_reduce > 0) {
        snprintf(c->err, c->err_size, "a fused group holds a contraction and a reduction");
        return -1;
    }
    if (n_contract > 0) return lower_contraction(c);
    if (n_reduce > 0) return lower_rows(c);
    return lower_pointwise(c);
}

/* ---- the kernel list ---------------------------------------------------------------------- */

static void kernel_free(LoweredKernel *k) {
    if (!k->shared) {
        kd_free(k->desc);
        kd_free(k->cuda);
    }
    free((void *)k->args);
    free(k->source_ops);
}

void function_kernels_free(FunctionKernels *fk) {
    if (fk == NULL) return;
    for (int i = 0; i < fk->n_kernels; i++) kernel_free(&fk->kernels[i]);
    free(fk->kernels);
    schedule_free(&fk->schedule);
    memset(fk, 0, sizeof *fk);
}

/* Declares the step's writes then reads as kd's arguments; buf_of maps them. */
static int declare_args(const Step *st, KernelDesc *kd, LoweredKernel *k, int *buf_of) {
    k->n_args = st->n_writes + st->n_reads;
    k->args = malloc(sizeof *k->args * (size_t)(k->n_args + 1));
    if (k->args == NULL) return -1;
    for (int i = 0; i < k->n_args; i++) {
        bool written = i < st->n_writes;
        const Value *v = written ? st->writes[i] : st->reads[i - st->n_writes];
        char what[256];
        describe(v, what, sizeof what);
        buf_of[v->id] = kd_arg(kd, what, ktype_of(v->dtype), numel_of(v), written);
        k->args[i] = v;
    }
    return 0;
}

static int lower_step(const Schedule *s, int step, LoweredKernel *k, int *buf_of, Diag *d) {
    const Function *f = s->f;
    const Step *st = &s->steps[step];
    char name[256], err[768] = "";
    kernel_name(f, st, name, sizeof name);
    memset(k, 0, sizeof *k);
    k->step = step;
    k->artifact = -1;
    k->desc = kd_new(name);
    k->source_ops = source_ops(f, st);
    if (k->desc == NULL || k->source_ops == NULL || declare_args(st, k->desc, k, buf_of) != 0) {
        diag_msg(d, "out of memory");
        return -1;
    }
    kd_set_comment(k->desc, k->source_ops);
    LowerCtx c = {s, step, buf_of, k->desc, NULL, err, sizeof err};
    int rc = lower_step_desc(&c);
    k->cuda = c.cuda;
    for (int i = 0; i < k->n_args; i++) buf_of[k->args[i]->id] = -1;
    if (rc != 0) {
        const Op *op = f->ops[st->first_op];
        diag_internal(d, op->loc, "lowering %s of @%s: %s", k->source_ops, f->name, err);
    }
    return rc;
}

static int check_shapes(const Function *f, Diag *d) {
    for (int i = 0; i < f->n_values; i++)
        if (!shape_known(&f->values[i]->shape)) {
            diag_msg(d, "%%%s: shapes must be inferred before codegen",
                     f->values[i]->name);
            return -1;
        }
    return 0;
}

/* Step i's kernel taken from `same` (an earlier step of the same structure: lower_key.c): its
 * descriptions borrowed, its arguments the step's own writes, then reads, as declare_args
 * makes them. */
static int reuse_step(const Schedule *s, int step, LoweredKernel *k, const LoweredKernel *same,
                      Diag *d) {
    const Step *st = &s->steps[step];
    memset(k, 0, sizeof *k);
    k->step = step;
    k->artifact = -1;
    k->n_args = st->n_writes + st->n_reads;
    k->args = malloc(sizeof *k->args * (size_t)(k->n_args + 1));
    if (k->args == NULL) {
        diag_msg(d, "out of memory");
        return -1;
    }
    memcpy(k->args, st->writes, sizeof *k->args * (size_t)st->n_writes);
    memcpy(k->args + st->n_writes, st->reads, sizeof *k->args * (size_t)st->n_reads);
    k->desc = same->desc;
    k->cuda = same->cuda;
    k->shared = true;
    k->same_as = same;
    return 0;
}

static int lower_function(const Function *f, FunctionKernels *fk, LowerCache *cache, Diag *d) {
    memset(fk, 0, sizeof *fk);
    fk->f = f;
    if (check_shapes(f, d) != 0 || schedule_build(f, &fk->schedule, d) != 0) return -1;
    const Schedule *s = &fk->schedule;
    fk->kernels = calloc((size_t)s->n_steps + 1, sizeof *fk->kernels);
    int *buf_of = malloc(sizeof *buf_of * ((size_t)f->n_values + 1));
    int rc = 0;
    if (fk->kernels == NULL || buf_of == NULL || (cache && lower_cache_begin(cache, f) != 0)) {
        diag_msg(d, "out of memory");
        rc = -1;
    }
    for (int v = 0; rc == 0 && v < f->n_values; v++) buf_of[v] = -1;
    for (int i = 0; rc == 0 && i < s->n_steps; i++) {
        if (s->steps[i].n_writes == 0) continue; /* nothing reads what it computes */
        LoweredKernel *k = &fk->kernels[fk->n_kernels];
        const LoweredKernel *same = NULL;
        uint64_t key = 0;
        if (cache != NULL && lower_cache_lookup(cache, s, i, &same, &key) != 0) {
            diag_msg(d, "out of memory");
            rc = -1;
            break;
        }
        rc = same != NULL ? reuse_step(s, i, k, same, d) : lower_step(s, i, k, buf_of, d);
        fk->n_kernels++; /* counted even on failure, so its parts are freed */
        if (rc == 0 && cache != NULL && same == NULL && lower_cache_add(cache, key, k) != 0) {
            diag_msg(d, "out of memory");
            rc = -1;
        }
    }
    free(buf_of);
    /* The evaluator's per-value scratch (eval.c) serves lowering only. */
    if (fk->schedule.scratch_free != NULL) fk->schedule.scratch_free(fk->schedule.scratch);
    fk->schedule.scratch = NULL;
    fk->schedule.scratch_free = NULL;
    return rc;
}

int codegen_lower_function(const Function *f, FunctionKernels *fk, Diag *d) {
    return lower_function(f, fk, NULL, d);
}

int codegen_lower_function_cached(const Function *f, FunctionKernels *fk, LowerCache *cache,
                                  Diag *d) {
    return lower_function(f, fk, cache, d);
}

void function_kernels_trim(FunctionKernels *fk) {
    for (int i = 0; i < fk->n_kernels; i++) {
        LoweredKernel *k = &fk->kernels[i];
        free((void *)k->args);
        free(k->source_ops);
        k->args = NULL;
        k->n_args = 0;
        k->source_ops = NULL;
    }
    schedule_free(&fk->schedule);
}

int codegen_check_kernels(const FunctionKernels *fk, Diag *d) {
    for (int i = 0; i < fk->n_kernels; i++) {
        const LoweredKernel *k = &fk->kernels[i];
        if (k->shared) continue; /* checked as its owner */
        if (kd_check(k->desc, k->cuda == NULL, d) != 0) return -1;
        if (k->cuda != NULL && kd_check(k->cuda, true, d) != 0) return -1;
    }
    return 0;
}
