/* train_program.c — the training program (docs/training.md): from `forward`, builds
 *
 *   eval_loss   forward with every batch_norm in eval mode (running statistics) and every
 *               dropout at p = 0: the same outputs as forward.
 *   train_step  (only with a "train" section) forward + backward (autodiff_append) + global
 *               grad-norm clipping + Adam/AdamW with per-group lr and weight decay and the LR
 *               schedule computed in the IR from the step counter + BatchNorm running
 *               statistics updated as PyTorch does in training mode.
 *   train_grads, eval_grads  (with a "train" section) the loss and `grad.<param>` for every
 *               trainable weight, in training / eval mode, without an update; train_grads
 *               then has `running.<buffer>` for every training-mode batch_norm's running
 *               statistic: the value train_step would store (from this batch), not stored.
 *   apply_grads (with a "train" section) train_step's update without the forward and
 *               backward: inputs `loss`, `grad.<param>` and `running.<buffer>` (train_grads'
 *               outputs, or their mean over data-parallel ranks: docs/distributed.md);
 *               outputs `lr`, `grad_norm` and the same `@X` as train_step, built by the same
 *               code (clipping, Adam/AdamW, the schedule, the step counter, the guard), so
 *               train_grads then apply_grads on one batch is train_step.
 *
 * What it keeps true: every op it builds has its shape inferred (op_infer) and both functions
 * verify with shapes; forward is left untouched; train_step's outputs are `loss`, `lr`,
 * `grad_norm`, then `@X` for every state X it updates (docs/ir.md): each trainable weight
 * that gets a gradient, its `adam.m.*` / `adam.v.*` moments (PARAM_STATE, zeros), `step`
 * (f32[], the number of updates done so far), then the running statistics of every
 * training-mode batch_norm. The learning rates (top-level, per group, and warmup_cosine's
 * min_lr) are `hparam` params ("train.lr", "train.group<i>.lr", "train.min_lr"): runtime
 * values in the state table, so an lr change rebuilds no kernel; the other hyperparameters
 * (betas, eps, weight decay, clipping, warmup/total/step_size/gamma) are compiled in as
 * constants, because they shape the arithmetic itself and are rarely swept (docs/training.md).
 * Each state output is guarded: where(step_is_finite, new, old), so
 * a step with a non-finite loss or gradient norm changes nothing. Running the pass again (a
 * module parsed from a dump) changes nothing.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build.h"
#include "diag.h"
#include "ops.h"
#include "passes.h"

static const double PI = 3.14159265358979323846;

/* ---- building ops (ir/build.h): the first failure is kept, later calls still return a value */

typedef struct Builder {
    IrBuilder ir;  /* every op at no location, results named by each call */
    Diag *d;
    bool reported; /* d holds the first failure */
} Builder;

static Builder builder_begin(Function *f, Diag *d) {
    Builder b = {irb_begin(f, SRCLOC_NONE, NULL), d, false};
    return b;
}

/* The pass's status after building: -1 if anything failed. A type the builder could not
 * infer (a bug in this pass) is reported unless another failure was. */
static int builder_status(Builder *b, int rc) {
    if (rc) return -1;
    if (!b->ir.failed) return 0;
    if (!b->reported) diag_internal(b->d, b->ir.loc, "training program: %s", b->ir.err);
    return -1;
}

static Value *plus_const(Builder *b, Value *x, double c, const char *name) {
    return irb_binary(&b->ir, OP_ADD, x, irb_scalar(&b->ir, c, NULL), name);
}

/* sum(x * x) over every axis: a scalar. */
static Value *sum_of_squares(Builder *b, Value *x) {
    Value *sq = irb_binary(&b->ir, OP_MUL, x, x, NULL);
    if (sq->shape.rank <= 0) return sq;
    int64_t axes[IR_MAX_RANK];
    for (int i = 0; i < sq->shape.rank; i++) axes[i] = i;
    return irb_reduce(&b->ir, OP_SUM, sq, axes, sq->shape.rank, false, NULL);
}

static char *name_with(char *buf, size_t size, const char *a, const char *b) {
    snprintf(buf, size, "%s%s", a, b);
    return buf;
}

static int fail(Diag *d, SrcLoc loc, const char *fmt, const char *arg) {
    diag_set(d, loc, fmt, arg);
    return -1;
}

/* ---- eval_loss ---------------------------------------------------------------------------- */

static void build_eval_loss(Function *forward) {
    Function *f = func_clone(forward, "eval_loss");
    IR_ASSERT(f); /* the caller checked that the name is free */
    for (int i = 0; i < f->n_ops; i++) {
        Op *op = f->ops[i];
        if (op->kind == OP_BATCH_NORM) op_set_bool(op, "training", false);
        if (op->kind == OP_DROPOUT) op_set_float(op, "p", 0.0);
    }
}

/* ---- state -------------------------------------------------------------------------------- */

/* The state tensor `name` shaped like `like` (declared on first use; zeros). */
static int ensure_state(Module *m, const char *name, const Shape *shape, SrcLoc loc, Diag *d) {
    Param *p = module_find_param(m, name);
    if (!p) {
        module_add_param(m, name, DT_F32, *shape, PARAM_STATE, false, "zeros", loc);
        return 0;
    }
    if (p->kind != PARAM_STATE || p->dtype != DT_F32 || !shape_equal(&p->shape, shape))
        return fail(d, p->loc, "training program: '%s' is already declared as something else",
                    name);
    return 0;
}

/* The hyperparameter `name` (an f32 scalar state whose value is its init string, docs/ir.md)
 * read as value `value_name`: declared on first use. The learning rates are read this way
 * rather than built as constants so that a different lr changes the artifact's state table
 * and no kernel's source (a compiled kernel stays valid for any lr: the kernel cache). */
static Value *read_hparam(Builder *b, const char *name, double value, const char *value_name) {
    Module *m = b->ir.f->module;
    Param *p = module_find_param(m, name);
    char init[64];
    hparam_init_string(value, init, sizeof init);
    if (!p) {
        module_add_param(m, name, DT_F32, shape_scalar(), PARAM_HPARAM, false, init, SRCLOC_NONE);
    } else if (p->kind != PARAM_HPARAM || strcmp(p->init, init) != 0) {
        if (!b->ir.failed) {
            fail(b->d, p->loc, "training program: '%s' is already declared as something else",
                 name);
            b->reported = true;
        }
        b->ir.failed = true;
    }
    return irb_param(&b->ir, name, value_name);
}

/* ---- BatchNorm running statistics --------------------------------------------------------- */

/* For a training-mode batch_norm: running = (1 - momentum) running + momentum batch_stat,
 * with the unbiased batch variance for running_var (PyTorch). Adds the two outputs, named
 * prefix + buffer: "@" (train_step: a state update) or "running." (train_grads: a plain
 * output apply_grads takes in). */
static int update_running_stats(Builder *b, const Op *bn, const char *prefix) {
    Value *x = bn->inputs[0], *rm = bn->inputs[3], *rv = bn->inputs[4];
    if (!rm->def || rm->def->kind != OP_PARAM || !rv->def || rv->def->kind != OP_PARAM)
        return fail(b->d, bn->loc, "training program: a training-mode batch_norm's running "
                    "statistics must be buffers read with `param` (%s)", bn->result->name);
    const Shape *xs = &x->shape;
    int64_t axes[IR_MAX_RANK], n = 1;
    int n_axes = 0;
    for (int i = 0; i < xs->rank; i++)
        if (i != 1) {
            axes[n_axes++] = i;
            n *= xs->dims[i];
        }
    double mom = op_float(bn, "momentum");
    char name[600];
    const char *bn_name = bn->result->name;
    Value *mean = irb_reduce(&b->ir, OP_MEAN, x, axes, n_axes, true,
                             name_with(name, sizeof name, bn_name, ".batch_mean"));
    Value *centered = irb_binary(&b->ir, OP_SUB, x, mean, NULL);
    Value *var =
        irb_reduce(&b->ir, OP_MEAN, irb_binary(&b->ir, OP_MUL, centered, centered, NULL), axes,
                   n_axes, false, name_with(name, sizeof name, bn_name, ".batch_var"));
    /* n = 1 would divide by zero; PyTorch refuses to train BN on one value per channel. */
    Value *unbiased = n > 1 ? irb_scale(&b->ir, var, (double)n / (double)(n - 1), NULL) : var;
    Value *mean_c = irb_shape_op(&b->ir, OP_RESHAPE, mean, &rm->shape, NULL);
    const char *rm_name = op_string(rm->def, "name"), *rv_name = op_string(rv->def, "name");
    Value *new_rm = irb_binary(&b->ir, OP_ADD, irb_scale(&b->ir, rm, 1.0 - mom, NULL),
                               irb_scale(&b->ir, mean_c, mom, NULL),
                               name_with(name, sizeof name, rm_name, ".new"));
    Value *new_rv = irb_binary(&b->ir, OP_ADD, irb_scale(&b->ir, rv, 1.0 - mom, NULL),
                               irb_scale(&b->ir, unbiased, mom, NULL),
                               name_with(name, sizeof name, rv_name, ".new"));
    func_add_output(b->ir.f, name_with(name, sizeof name, prefix, rm_name), new_rm);
    func_add_output(b->ir.f, name_with(name, sizeof name, prefix, rv_name), new_rv);
    return 0;
}

static int find_output(const Function *f, const char *name) {
    for (int i = 0; i < f->n_outputs; i++)
        if (strcmp(f->output_names[i], name) == 0) return i;
    return -1;
}

/* bn_ops: the training-mode batch_norms of forward's clone, found before autodiff. */
static int add_running_stats(Builder *b, Op **bn_ops, int n_bn, const char *prefix) {
    for (int i = 0; i < n_bn; i++) {
        const Value *rm_v = bn_ops[i]->inputs[3];
        const char *rm = rm_v->def && rm_v->def->kind == OP_PARAM ? op_string(rm_v->def, "name") : NULL;
        char out[600];
        snprintf(out, sizeof out, "%s%s", prefix, rm ? rm : "");
        if (rm && find_output(b->ir.f, out) >= 0)
            return fail(b->d, bn_ops[i]->loc, "training program: buffer '%s' is updated by two "
                        "training-mode batch_norms", rm);
        if (update_running_stats(b, bn_ops[i], prefix)) return -1;
    }
    return 0;
}

typedef struct Adam {
    const TrainSpec *t;
    Value *top;        /* lr(t) of parameters in no group: the `lr` output */
    Value *factor;     /* schedule factor f(t) for the groups, NULL = 1 (or see cosine_top) */
    Value *cosine_top, *base; /* warmup_cosine: lr(t) and lr, f(t) = lr(t) / lr; else NULL */
    Value *bc1, *bc2s; /* 1 - b1^t, sqrt(1 - b2^t) */
    Value *coef;       /* clipping coefficient, NULL = none */
    Value **lr_of_group; /* lr(t) per group, built on demand (no group: `top`) */
} Adam;

/* ---- LR schedule -------------------------------------------------------------------------- */

/* The schedule (docs/training.md) on the top-level lr `base` (the train.lr hparam): sets
 * a->top to lr(t) and a->factor to the groups' f(t) (NULL: constant, f = 1; warmup_cosine:
 * built by group_lr from cosine_top / base when a group needs it).
 * warmup_cosine is written on the rates themselves, lr(t) = warm (min_lr + (lr - min_lr)
 * (1 + cos)/2) as PyTorch's CosineAnnealingLR does, because min_lr and lr are runtime values
 * (hparams) here: the ratio r = min_lr / lr the docs' f(t) uses is no compile-time constant.
 * warmup_step's f(t) needs no lr at all and stays a product. */
static void schedule(Builder *b, Adam *a, Value *step, Value *base) {
    const TrainSpec *t = a->t;
    a->top = base;
    a->factor = NULL;
    if (t->schedule == LR_CONSTANT) return;
    Value *one = irb_scalar(&b->ir, 1.0, NULL), *zero = irb_scalar(&b->ir, 0.0, NULL);
    Value *warm = t->warmup > 0 ? irb_binary(&b->ir, OP_MINIMUM,
                                             irb_scale(&b->ir, step, 1.0 / (double)t->warmup, NULL),
                                             one, "lr.warmup")
                                : NULL;
    Value *after =
        irb_binary(&b->ir, OP_MAXIMUM, plus_const(b, step, -(double)t->warmup, NULL), zero, NULL);
    if (t->schedule == LR_WARMUP_COSINE) {
        Value *min_lr = read_hparam(b, "train.min_lr", t->min_lr, "min_lr");
        Value *p = irb_binary(&b->ir, OP_MINIMUM,
                              irb_scale(&b->ir, after, 1.0 / (double)(t->total - t->warmup), NULL),
                              one, NULL);
        Value *c = plus_const(b, irb_unary(&b->ir, OP_COS, irb_scale(&b->ir, p, PI, NULL), NULL),
                              1.0, NULL);
        Value *span = irb_binary(&b->ir, OP_SUB, base, min_lr, NULL);
        Value *cosine =
            irb_binary(&b->ir, OP_ADD, min_lr,
                       irb_binary(&b->ir, OP_MUL, span, irb_scale(&b->ir, c, 0.5, NULL), NULL),
                       warm ? "lr.cosine" : "lr");
        a->top = warm ? irb_binary(&b->ir, OP_MUL, warm, cosine, "lr") : cosine;
        /* Groups keep f(t) = lr(t) / lr, so a group's minimum stays lr_group * min_lr / lr
         * (docs/training.md); group_lr builds the division only when a group needs it. */
        a->cosine_top = a->top;
        a->base = base;
        return;
    }
    Value *k = irb_unary(&b->ir, OP_FLOOR,
                         irb_scale(&b->ir, after, 1.0 / (double)t->step_size, NULL), NULL);
    Value *decay = irb_unary(&b->ir, OP_EXP, irb_scale(&b->ir, k, log(t->gamma), NULL), "lr.decay");
    a->factor = warm ? irb_binary(&b->ir, OP_MUL, warm, decay, "lr.factor") : decay;
    a->top = irb_binary(&b->ir, OP_MUL, a->factor, base, "lr");
}

/* ---- Adam --------------------------------------------------------------------------------- */

static int group_of(const TrainSpec *t, const char *name) {
    for (int i = 0; i < t->n_groups; i++)
        if (name_has_prefix(name, t->groups[i].prefix)) return i;
    return -1;
}

/* lr(t) of group g (-1: no group): lr_group * f(t), lr_group the group's hparam
 * "train.group<g>.lr" (named by index: a prefix may hold characters a name cannot). */
static Value *group_lr(Builder *b, Adam *a, int g) {
    if (g < 0) return a->top;
    if (!a->lr_of_group[g]) {
        char name[64], value[64];
        snprintf(name, sizeof name, "train.group%d.lr", g);
        snprintf(value, sizeof value, "lr.group%d", g);
        Value *lr = read_hparam(b, name, a->t->groups[g].lr, value);
        if (a->cosine_top && !a->factor)
            a->factor = irb_binary(&b->ir, OP_DIV, a->cosine_top, a->base, "lr.factor");
        a->lr_of_group[g] = a->factor ? irb_binary(&b->ir, OP_MUL, a->factor, lr, NULL) : lr;
    }
    return a->lr_of_group[g];
}

/* 1 - beta^t as exp(t ln beta); beta = 0 gives 1. */
static Value *bias_correction(Builder *b, Value *step, double beta, const char *name) {
    if (beta == 0.0) return irb_scalar(&b->ir, 1.0, name);
    Value *pow_t = irb_unary(&b->ir, OP_EXP, irb_scale(&b->ir, step, log(beta), NULL), NULL);
    return irb_binary(&b->ir, OP_SUB, irb_scalar(&b->ir, 1.0, NULL), pow_t, name);
}

/* One parameter's update; adds @param, @adam.m.param, @adam.v.param. */
static int adam_update(Builder *b, Adam *a, const Param *p, Value *grad) {
    Module *m = b->ir.f->module;
    const TrainSpec *t = a->t;
    char mname[600], vname[600], buf[620];
    snprintf(mname, sizeof mname, "adam.m.%s", p->name);
    snprintf(vname, sizeof vname, "adam.v.%s", p->name);
    if (ensure_state(m, mname, &p->shape, p->loc, b->d) || ensure_state(m, vname, &p->shape, p->loc, b->d))
        return -1;
    int g = group_of(t, p->name);
    double wd = g < 0 ? t->weight_decay : t->groups[g].weight_decay;
    Value *lr = group_lr(b, a, g);
    Value *w = irb_param(&b->ir, p->name, p->name);
    if (a->coef) grad = irb_binary(&b->ir, OP_MUL, grad, a->coef, NULL);
    if (wd > 0 && t->optimizer == OPT_ADAM)
        grad = irb_binary(&b->ir, OP_ADD, grad, irb_scale(&b->ir, w, wd, NULL), NULL);
    if (wd > 0 && t->optimizer == OPT_ADAMW) {
        Value *keep = irb_binary(&b->ir, OP_SUB, irb_scalar(&b->ir, 1.0, NULL),
                                 irb_scale(&b->ir, lr, wd, NULL), NULL);
        w = irb_binary(&b->ir, OP_MUL, w, keep, NULL);
    }
    Value *m_old = irb_param(&b->ir, mname, mname), *v_old = irb_param(&b->ir, vname, vname);
    Value *m_new = irb_binary(&b->ir, OP_ADD, irb_scale(&b->ir, m_old, t->beta1, NULL),
                              irb_scale(&b->ir, grad, 1.0 - t->beta1, NULL),
                              name_with(buf, sizeof buf, mname, ".new"));
    Value *v_new = irb_binary(
        &b->ir, OP_ADD, irb_scale(&b->ir, v_old, t->beta2, NULL),
        irb_scale(&b->ir, irb_binary(&b->ir, OP_MUL, grad, grad, NULL), 1.0 - t->beta2, NULL),
        name_with(buf, sizeof buf, vname, ".new"));
    /* PyTorch: denom = sqrt(v) / sqrt(bc2) + eps; p -= (lr / bc1) * m / denom. */
    Value *denom = plus_const(
        b, irb_binary(&b->ir, OP_DIV, irb_unary(&b->ir, OP_SQRT, v_new, NULL), a->bc2s, NULL),
        t->eps, NULL);
    Value *step_size = irb_binary(&b->ir, OP_DIV, lr, a->bc1, NULL);
    Value *delta =
        irb_binary(&b->ir, OP_MUL, irb_binary(&b->ir, OP_DIV, m_new, denom, NULL), step_size, NULL);
    Value *w_new =
        irb_binary(&b->ir, OP_SUB, w, delta, name_with(buf, sizeof buf, p->name, ".new"));
    func_add_output(b->ir.f, name_with(buf, sizeof buf, "@", p->name), w_new);
    func_add_output(b->ir.f, name_with(buf, sizeof buf, "@", mname), m_new);
    func_add_output(b->ir.f, name_with(buf, sizeof buf, "@", vname), v_new);
    return 0;
}

/* ---- train_step --------------------------------------------------------------------------- */

/* The gradient-norm (always computed, for logs) and clipping coefficient (when clipping). */
static Value *global_grad_norm(Builder *b, int n_params, Value **grads, const bool *updated) {
    Value *total = NULL;
    for (int i = 0; i < n_params; i++) {
        if (!updated[i]) continue;
        Value *s = sum_of_squares(b, grads[i]);
        total = total ? irb_binary(&b->ir, OP_ADD, total, s, NULL) : s;
    }
    if (!total) return irb_scalar(&b->ir, 0.0, "grad_norm");
    return irb_unary(&b->ir, OP_SQRT, total, "grad_norm");
}

/* Clipping coefficient, schedule and bias corrections: the scalars every update shares. */
static void adam_prepare(Builder *b, Adam *a, Value *step, Value *norm) {
    const TrainSpec *t = a->t;
    if (t->clip_grad_norm > 0) {
        /* torch.nn.utils.clip_grad_norm_: coef = min(1, max_norm / (norm + 1e-6)). */
        Value *ratio = irb_binary(&b->ir, OP_DIV, irb_scalar(&b->ir, t->clip_grad_norm, NULL),
                              plus_const(b, norm, 1e-6, NULL), NULL);
        a->coef = irb_binary(&b->ir, OP_MINIMUM, ratio, irb_scalar(&b->ir, 1.0, NULL), "clip_coef");
    }
    schedule(b, a, step, read_hparam(b, "train.lr", t->lr, t->schedule == LR_CONSTANT ? "lr" : "lr.base"));
    a->bc1 = bias_correction(b, step, t->beta1, "adam.bias_correction1");
    a->bc2s = irb_unary(&b->ir, OP_SQRT,
                        bias_correction(b, step, t->beta2, "adam.bias_correction2"), NULL);
}

/* grads has one entry per param that existed before this pass added state (n_params). */
static int add_optimizer(Builder *b, const TrainSpec *t, Value **grads) {
    Module *m = b->ir.f->module;
    const int n_params = m->n_params;
    Shape scalar_shape = shape_scalar();
    if (ensure_state(m, "step", &scalar_shape, SRCLOC_NONE, b->d)) return -1;
    bool *updated = calloc((size_t)(n_params ? n_params : 1), sizeof *updated);
    Adam a = {.t = t, .lr_of_group = calloc((size_t)t->n_groups + 1, sizeof(Value *))};
    int rc = updated && a.lr_of_group ? 0 : fail(b->d, SRCLOC_NONE, "%s: out of memory", "training program");
    for (int i = 0; !rc && i < n_params; i++)
        updated[i] = m->params[i]->kind == PARAM_WEIGHT && m->params[i]->trainable && grads[i];
    if (!rc) {
        Value *step = plus_const(b, irb_param(&b->ir, "step", "step"), 1.0, "step.new");
        Value *norm = global_grad_norm(b, n_params, grads, updated);
        adam_prepare(b, &a, step, norm);
        func_add_output(b->ir.f, "lr", group_lr(b, &a, -1));
        func_add_output(b->ir.f, "grad_norm", norm);
        for (int i = 0; !rc && i < n_params; i++)
            if (updated[i]) rc = adam_update(b, &a, m->params[i], grads[i]);
        if (!rc) func_add_output(b->ir.f, "@step", step);
    }
    free(a.lr_of_group);
    free(updated);
    return rc;
}

/* The forward output named spec->loss, checked to be an f32 scalar. */
static Value *loss_value(Function *f, const TrainSpec *t, Diag *d) {
    int i = find_output(f, t->loss);
    if (i < 0) {
        fail(d, SRCLOC_NONE, "training program: the train loss '%s' is not an output of forward", t->loss);
        return NULL;
    }
    Value *v = f->outputs[i];
    if (v->dtype != DT_F32 || v->shape.rank != 0) {
        fail(d, v->def ? v->def->loc : SRCLOC_NONE,
             "training program: the train loss '%s' must be an f32 scalar", t->loss);
        return NULL;
    }
    return v;
}

/* Training-mode batch_norms of f (malloc'd array; caller frees). */
static Op **training_batch_norms(const Function *f, int *n) {
    Op **list = malloc(sizeof *list * (size_t)(f->n_ops ? f->n_ops : 1));
    IR_ASSERT(list);
    *n = 0;
    for (int i = 0; i < f->n_ops; i++)
        if (f->ops[i]->kind == OP_BATCH_NORM && op_bool(f->ops[i], "training")) list[(*n)++] = f->ops[i];
    return list;
}

/* The guard (docs/training.md, "Non-finite steps"): a step whose loss or gradient norm is not
 * finite changes no state. ok = [(loss - loss) + (norm - norm) == 0], 1 exactly when both are
 * finite (x - x is NaN for NaN and the infinities); every `@X` output becomes
 * where(ok, new X, X), so parameters, Adam moments, the step counter and BatchNorm running
 * statistics all keep their values, whatever NaN the rejected values hold. */
static void guard_state_updates(Builder *b, Value *loss) {
    Function *f = b->ir.f;
    int at = find_output(f, "grad_norm");
    IR_ASSERT(at >= 0);
    Value *norm = f->outputs[at];
    Value *excess = irb_binary(&b->ir, OP_ADD, irb_binary(&b->ir, OP_SUB, loss, loss, NULL),
                           irb_binary(&b->ir, OP_SUB, norm, norm, NULL), NULL);
    Value *ok =
        irb_binary(&b->ir, OP_EQUAL, excess, irb_scalar(&b->ir, 0.0, NULL), "step_is_finite");
    char name[620];
    for (int i = 0; i < f->n_outputs; i++) {
        const char *out = f->output_names[i];
        if (out[0] != '@') continue;
        Value *ins[3] = {ok, f->outputs[i], irb_param(&b->ir, out + 1, out + 1)};
        f->outputs[i] =
            irb_finish(&b->ir, irb_start(&b->ir, OP_WHERE, ins, 3,
                                         name_with(name, sizeof name, out + 1, ".next")));
    }
}

static int build_train_step(Module *m, Function *forward, Diag *d) {
    const TrainSpec *t = m->train;
    Function *f = func_clone(forward, "train_step");
    IR_ASSERT(f);
    Value *loss = loss_value(f, t, d);
    if (!loss) return -1;
    f->n_outputs = 0; /* outputs are rebuilt: loss first, then logs and state */
    func_add_output(f, "loss", loss);
    int n_bn;
    Op **bns = training_batch_norms(f, &n_bn);
    Value **grads = NULL;
    int rc = autodiff_append(f, loss, &grads, d);
    Builder b = builder_begin(f, d);
    if (!rc) rc = add_optimizer(&b, t, grads);
    if (!rc) rc = add_running_stats(&b, bns, n_bn, "@");
    if (!rc) guard_state_updates(&b, loss);
    free(bns);
    free(grads);
    return builder_status(&b, rc);
}

/* `train_grads` / `eval_grads`: the loss and the gradient of every trainable weight, without
 * an update, from a clone of `from` (forward: training mode; eval_loss: eval mode). `cap loss
 * --grads` and the golden tests read them; outputs are `loss` then `grad.<param>`. */
static int build_grads_entry(Module *m, Function *from, const char *name, const char *loss_name,
                             Diag *d) {
    Function *f = func_clone(from, name);
    IR_ASSERT(f);
    int i = find_output(f, loss_name);
    if (i < 0) return fail(d, SRCLOC_NONE, "training program: no output '%s' to differentiate", loss_name);
    Value *loss = f->outputs[i];
    f->n_outputs = 0;
    func_add_output(f, "loss", loss);
    int n_bn;
    Op **bns = training_batch_norms(f, &n_bn);
    Value **grads = NULL;
    int rc = autodiff_append(f, loss, &grads, d);
    for (int p = 0; !rc && p < m->n_params; p++) {
        if (!grads[p]) continue;
        char out_name[512];
        snprintf(out_name, sizeof out_name, "grad.%s", m->params[p]->name);
        func_add_output(f, out_name, grads[p]);
    }
    /* After every gradient, so that readers of `loss` + `grad.*` stop at the first other
     * name; eval_grads has no training-mode batch_norm and gets none. */
    Builder b = builder_begin(f, d);
    if (!rc) rc = add_running_stats(&b, bns, n_bn, "running.");
    free(bns);
    free(grads);
    return builder_status(&b, rc);
}

/* `apply_grads`: train_step's update from given gradients (see the top of the file). Its
 * inputs are train_grads' outputs by name, `loss` the f32 scalar the guard checks; the
 * optimizer and guard are the very functions train_step uses, so the two cannot drift. */
static int build_apply_grads(Module *m, Diag *d) {
    const Function *tg = module_find_function(m, "train_grads");
    IR_ASSERT(tg);
    if (module_find_function(m, "apply_grads"))
        return fail(d, SRCLOC_NONE, "training program: '%s' is already a function", "apply_grads");
    Function *f = module_add_function(m, "apply_grads");
    Builder b = builder_begin(f, d);
    Value *loss = func_add_input(f, "loss", DT_F32, shape_scalar());
    const int n_params = m->n_params;
    Value **grads = calloc((size_t)(n_params ? n_params : 1), sizeof *grads);
    if (!grads) return fail(d, SRCLOC_NONE, "%s: out of memory", "training program");
    int first_running = tg->n_outputs;
    for (int i = 0; i < tg->n_outputs; i++) {
        const char *name = tg->output_names[i];
        const Value *v = tg->outputs[i];
        if (strncmp(name, "running.", 8) == 0 && first_running == tg->n_outputs) first_running = i;
        if (strncmp(name, "grad.", 5) != 0) continue;
        int p = module_param_index(m, name + 5);
        if (p >= 0) grads[p] = func_add_input(f, name, v->dtype, v->shape);
    }
    int rc = add_optimizer(&b, m->train, grads);
    /* The running statistics come in as computed on this rank's batch and are stored as
     * they are (guarded like train_step's): per-rank statistics, as DistributedDataParallel
     * without SyncBatchNorm keeps them. */
    for (int i = first_running; !rc && i < tg->n_outputs; i++) {
        const char *name = tg->output_names[i];
        const Value *v = tg->outputs[i];
        char out[600];
        Value *in = func_add_input(f, name, v->dtype, v->shape);
        func_add_output(f, name_with(out, sizeof out, "@", name + 8), in);
    }
    if (!rc) guard_state_updates(&b, loss);
    free(grads);
    return builder_status(&b, rc);
}

int pass_build_training_program(Module *m, const PassOptions *opts, Diag *d) {
    (void)opts;
    Function *forward = module_find_function(m, "forward");
    /* Nothing to build from (a hand-written IR file), or built already (a parsed dump). */
    if (!forward || module_find_function(m, "eval_loss") || module_find_function(m, "train_step") ||
        module_find_function(m, "train_grads"))
        return 0;
    build_eval_loss(forward);
    if (m->train && build_train_step(m, forward, d)) return -1;
    if (m->train) {
        const char *loss = m->train->loss;
        if (build_grads_entry(m, forward, "train_grads", loss, d)) return -1;
        if (build_grads_entry(m, module_find_function(m, "eval_loss"), "eval_grads", loss, d))
            return -1;
        if (build_apply_grads(m, d)) return -1;
    }
    return 0;
}
