/* verify.c — checks a module against the IR's invariants (ir.h) and the op table (ops.def):
 * operand counts and attribute kinds per the schema, SSA (each value defined once, operands
 * defined earlier in the same function, outputs defined), `param` ops naming a declared
 * parameter with its dtype and shape, and — when shapes are required — every value's shape
 * known and equal to what the op's shape rule computes from its operands.
 *
 * Fused groups (passes/fuse.c) must be contiguous runs of ops that agree with op->group, and
 * hold no `param` op (state is read outside any kernel).
 *
 * The verifier only reads; passes run it between stages so that a broken invariant is
 * reported at the pass that broke it. The first problem found is reported.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cfunc.h"
#include "diag.h"
#include "ops.h"

enum { TYPE_BUF = 32 + IR_MAX_RANK * 24 };

typedef struct Checker {
    const Function *f;
    bool require_shapes;
    Diag *d;
    bool *defined; /* by value id: defined so far in program order */
} Checker;

static int report(Checker *c, const Op *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int report(Checker *c, const Op *op, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    diag_set(c->d, op ? op->loc : SRCLOC_NONE, "@%s: %s", c->f->name, msg);
    return -1;
}

static const char *op_name(const Op *op) { return op_info(op->kind)->name; }

/* The value table must describe exactly the function's values, by dense id. */
static int check_value_table(Checker *c) {
    const Function *f = c->f;
    for (int i = 0; i < f->n_values; i++) {
        const Value *v = f->values[i];
        if (!v || v->id != i || v->fn != f)
            return report(c, NULL, "value table entry %d is inconsistent (id or function)", i);
    }
    for (int i = 0; i < f->n_inputs; i++) {
        const Value *v = f->inputs[i];
        if (!v || v->fn != f || v->def || f->values[v->id] != v)
            return report(c, NULL, "input %d is not a value of this function", i);
        if (c->defined[v->id]) return report(c, NULL, "input %%%s listed twice", v->name);
        c->defined[v->id] = true;
        if (c->require_shapes && !shape_known(&v->shape))
            return report(c, NULL, "input %%%s has an unknown shape", v->name);
    }
    return 0;
}

static int check_operands(Checker *c, const Op *op) {
    const OpInfo *info = op_info(op->kind);
    if (op->n_inputs < info->min_inputs ||
        (info->max_inputs >= 0 && op->n_inputs > info->max_inputs)) {
        if (info->max_inputs < 0)
            return report(c, op, "%s %%%s has %d operands, needs at least %d", info->name,
                          op->result->name, op->n_inputs, info->min_inputs);
        if (info->min_inputs == info->max_inputs)
            return report(c, op, "%s %%%s has %d operands, needs %d", info->name,
                          op->result->name, op->n_inputs, info->min_inputs);
        return report(c, op, "%s %%%s has %d operands, needs %d to %d", info->name,
                      op->result->name, op->n_inputs, info->min_inputs, info->max_inputs);
    }
    for (int i = 0; i < op->n_inputs; i++) {
        const Value *v = op->inputs[i];
        if (!v) return report(c, op, "%s %%%s: operand %d is NULL", info->name,
                              op->result->name, i);
        if (v->fn != c->f)
            return report(c, op, "%s %%%s uses %%%s of function @%s", info->name,
                          op->result->name, v->name, v->fn ? v->fn->name : "?");
        if (v->id < 0 || v->id >= c->f->n_values || c->f->values[v->id] != v)
            return report(c, op, "%s %%%s uses a value missing from the value table",
                          info->name, op->result->name);
        if (!c->defined[v->id])
            return report(c, op, "%s %%%s uses %%%s before its definition", info->name,
                          op->result->name, v->name);
    }
    return 0;
}

static int check_attrs(Checker *c, const Op *op) {
    const OpInfo *info = op_info(op->kind);
    if (info->n_attrs > 0 && !op->attrs)
        return report(c, op, "%s %%%s has no attribute array", info->name, op->result->name);
    for (int i = 0; i < info->n_attrs; i++) {
        const AttrValue *a = &op->attrs[i];
        const AttrSpec *spec = &info->attrs[i];
        if (a->kind != spec->kind)
            return report(c, op, "%s %%%s: attribute '%s' is %s, the schema says %s",
                          info->name, op->result->name, spec->name, attr_kind_name(a->kind),
                          attr_kind_name(spec->kind));
        if ((a->kind == ATTR_INTS && (a->n_ints < 0 || (a->n_ints > 0 && !a->ints))) ||
            (a->kind == ATTR_FLOATS && (a->n_floats < 0 || (a->n_floats > 0 && !a->floats))) ||
            (a->kind == ATTR_STRING && !a->s))
            return report(c, op, "%s %%%s: attribute '%s' has no value", info->name,
                          op->result->name, spec->name);
    }
    return 0;
}

static int check_param_op(Checker *c, const Op *op) {
    const char *name = op_string(op, "name");
    const Param *p = module_find_param(c->f->module, name);
    const Value *r = op->result;
    if (!p) return report(c, op, "param %%%s names undeclared parameter @%s", r->name, name);
    if (!shape_known(&r->shape)) return 0; /* shapes not inferred yet: checked later */
    if (r->dtype != p->dtype || !shape_equal(&r->shape, &p->shape)) {
        char have[TYPE_BUF], want[TYPE_BUF];
        return report(c, op, "param %%%s is %s but @%s is declared %s", r->name,
                      type_format(r->dtype, &r->shape, have, sizeof have), name,
                      type_format(p->dtype, &p->shape, want, sizeof want));
    }
    return 0;
}

/* Re-runs the op's shape rule and compares with what the op records. */
static int check_shape_rule(Checker *c, const Op *op) {
    const Value *r = op->result;
    if (!shape_known(&r->shape))
        return report(c, op, "%s %%%s has an unknown shape", op_name(op), r->name);
    DType dtype = DT_F32;
    Shape shape = shape_unknown();
    char err[512] = "";
    if (op_info(op->kind)->infer_shape(op, &dtype, &shape, err, sizeof err) != 0)
        return report(c, op, "%s %%%s: %s", op_name(op), r->name, err);
    if (dtype != r->dtype || !shape_equal(&shape, &r->shape)) {
        char have[TYPE_BUF], want[TYPE_BUF];
        return report(c, op, "%s %%%s is recorded as %s but its shape rule gives %s",
                      op_name(op), r->name, type_format(r->dtype, &r->shape, have, sizeof have),
                      type_format(dtype, &shape, want, sizeof want));
    }
    return 0;
}

static int check_op(Checker *c, const Op *op) {
    const Function *f = c->f;
    if (!op || op->kind < 0 || op->kind >= OP_COUNT)
        return report(c, op, "op with an invalid kind");
    const Value *r = op->result;
    if (!r || r->def != op || r->fn != f || r->id < 0 || r->id >= f->n_values ||
        f->values[r->id] != r)
        return report(c, op, "%s op's result is not a value of this function", op_name(op));
    if (op->fn != f) return report(c, op, "%s %%%s belongs to another function", op_name(op),
                                   r->name);
    if (c->defined[r->id]) return report(c, op, "%%%s is defined twice", r->name);
    if (check_operands(c, op) || check_attrs(c, op)) return -1;
    if (op->kind == OP_PARAM && check_param_op(c, op)) return -1;
    if (c->require_shapes && check_shape_rule(c, op)) return -1;
    c->defined[r->id] = true;
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* No output name twice: sorted, then neighbours compared (a training step returns thousands). */
static int check_output_names_unique(Checker *c) {
    const Function *f = c->f;
    const char **names = malloc(sizeof *names * ((size_t)f->n_outputs + 1));
    if (names == NULL) return report(c, NULL, "out of memory checking outputs");
    int n = 0;
    for (int i = 0; i < f->n_outputs; i++)
        if (f->output_names[i]) names[n++] = f->output_names[i];
    qsort(names, (size_t)n, sizeof *names, cmp_name);
    int rc = 0;
    for (int i = 1; i < n && rc == 0; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            rc = report(c, NULL, "output '%s' returned twice", names[i]);
    free(names);
    return rc;
}

static int check_outputs(Checker *c) {
    const Function *f = c->f;
    for (int i = 0; i < f->n_outputs; i++) {
        const Value *v = f->outputs[i];
        const char *name = f->output_names[i] ? f->output_names[i] : "";
        if (!v || v->fn != f || v->id < 0 || v->id >= f->n_values || f->values[v->id] != v)
            return report(c, NULL, "output '%s' is not a value of this function", name);
        if (!c->defined[v->id])
            return report(c, NULL, "output '%s' = %%%s is never defined", name, v->name);
    }
    return check_output_names_unique(c);
}

/* Every group is a non-empty contiguous run whose ops name it; no other op names a group. */
static int check_groups(Checker *c) {
    const Function *f = c->f;
    for (int g = 0; g < f->n_groups; g++) {
        const FusedGroup *grp = &f->groups[g];
        if (!grp->pattern || !grp->pattern[0] || grp->n_ops < 1 || grp->first_op < 0 ||
            grp->first_op + grp->n_ops > f->n_ops)
            return report(c, NULL, "fused group %d is malformed (empty, unnamed or out of range)",
                          g);
        for (int i = grp->first_op; i < grp->first_op + grp->n_ops; i++) {
            const Op *op = f->ops[i];
            if (op->group != g)
                return report(c, op, "%%%s lies inside fused.%s but does not belong to it",
                              op->result->name, grp->pattern);
            if (op->kind == OP_PARAM)
                return report(c, op, "param %%%s is inside fused.%s (state is read outside "
                              "kernels)", op->result->name, grp->pattern);
        }
    }
    for (int i = 0; i < f->n_ops; i++) {
        int g = f->ops[i]->group;
        if (g >= f->n_groups || (g >= 0 && (i < f->groups[g].first_op ||
                                            i >= f->groups[g].first_op + f->groups[g].n_ops)))
            return report(c, f->ops[i], "%%%s names fused group %d, which does not hold it",
                          f->ops[i]->result->name, g);
    }
    return 0;
}

int ir_verify_function(const Function *f, bool require_shapes, Diag *d) {
    Diag scratch;
    Checker c = {f, require_shapes, d ? d : &scratch, NULL};
    diag_clear(c.d);
    c.defined = calloc((size_t)(f->n_values > 0 ? f->n_values : 1), sizeof *c.defined);
    if (!c.defined) return report(&c, NULL, "out of memory");
    int rc = check_value_table(&c);
    for (int i = 0; rc == 0 && i < f->n_ops; i++) rc = check_op(&c, f->ops[i]);
    if (rc == 0) rc = check_outputs(&c);
    if (rc == 0) rc = check_groups(&c);
    /* Every value is an input or an op result: a value with neither was never defined. */
    for (int i = 0; rc == 0 && i < f->n_values; i++)
        if (!c.defined[i])
            rc = report(&c, NULL, "%%%s is in the value table but never defined",
                        f->values[i]->name);
    free(c.defined);
    return rc;
}

static int module_error(Diag *d, SrcLoc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int module_error(Diag *d, SrcLoc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    diag_vmsg(d, fmt, ap);
    va_end(ap);
    d->loc = loc;
    return -1;
}

/* The C function table: each tree well formed, each gradient a function of the same
 * parameters plus dy. */
static int verify_cfuncs(const Module *m, Diag *d) {
    char err[512];
    for (int i = 0; i < m->n_cfuncs; i++) {
        const CFunc *f = m->cfuncs[i];
        if (cfunc_check(f, err, sizeof err)) return module_error(d, f->loc, "%s", err);
        for (int k = 0; k < f->n_params; k++) {
            if (!f->grads[k]) continue;
            const CFunc *g = module_find_cfunc(m, f->grads[k]);
            if (!g || g->n_params != f->n_params + 1)
                return module_error(d, f->loc, "cfunc @%s: gradient @%s is not a cfunc of %d "
                                    "parameters", f->name, f->grads[k], f->n_params + 1);
        }
    }
    return 0;
}

int ir_verify_module(const Module *m, bool require_shapes, Diag *d) {
    Diag scratch;
    if (!d) d = &scratch;
    diag_clear(d);
    for (int i = 0; i < m->n_params; i++) {
        const Param *p = m->params[i];
        if (!shape_known(&p->shape) || shape_numel(&p->shape) < 0)
            return module_error(d, p->loc, "parameter @%s has no valid shape", p->name);
        if (p->kind == PARAM_BUFFER && p->trainable)
            return module_error(d, p->loc, "buffer @%s is marked trainable", p->name);
        double v;
        /* The runtime and the interpreter read a hyperparameter's value from its init string
         * alone, as one f32: anything else there has no value to give. */
        if (p->kind == PARAM_HPARAM &&
            (p->dtype != DT_F32 || p->shape.rank != 0 || p->trainable || !param_hparam_value(p, &v)))
            return module_error(d, p->loc, "hparam @%s must be an f32[] with init=\"const(V)\", "
                                "V a finite number", p->name);
        if (module_find_param(m, p->name) != p) /* the name index knows one param per name */
            return module_error(d, p->loc, "parameter @%s declared twice", p->name);
    }
    if (verify_cfuncs(m, d)) return -1;
    for (int i = 0; i < m->n_funcs; i++) {
        for (int j = 0; j < i; j++)
            if (strcmp(m->funcs[j]->name, m->funcs[i]->name) == 0)
                return module_error(d, SRCLOC_NONE, "function @%s defined twice",
                                    m->funcs[i]->name);
        if (m->funcs[i]->module != m)
            return module_error(d, SRCLOC_NONE, "function @%s belongs to another module",
                                m->funcs[i]->name);
        if (ir_verify_function(m->funcs[i], require_shapes, d) != 0) return -1;
    }
    return 0;
}
