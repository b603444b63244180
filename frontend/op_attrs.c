/* op_attrs.c — an op statement's "attrs" object -> the op's attributes, checked against the
 * op table's schema (ops.c): unknown names, missing required ones and wrong JSON types are
 * errors at the offending node. Numbers may be written as expressions.
 *
 * A few values are checked here although the shape pass would reject them later, because
 * here the error can point at the exact number: sizes that must be positive (shapes of full,
 * reshape, broadcast; table lengths) and dropout's probability.
 */
#include <stdlib.h>
#include <string.h>

#include "fe_internal.h"

static const char *kind_phrase(AttrKind k) {
    switch (k) {
    case ATTR_INT: return "an int";
    case ATTR_FLOAT: return "a number";
    case ATTR_BOOL: return "a bool";
    case ATTR_INTS: return "an int list";
    case ATTR_STRING: return "a string";
    case ATTR_FLOATS: return "a list of numbers";
    }
    return "?";
}

static int wrong_type(const Ctx *c, const cJSON *node, const Op *op, const AttrSpec *spec) {
    return fe_error_at(c->fe, node, "attribute '%s' of %s expects %s, got %s", spec->name,
                       op_info(op->kind)->name, kind_phrase(spec->kind), json_type_name(node));
}

static bool is_numeric_json(const cJSON *n) { return cJSON_IsNumber(n) || cJSON_IsString(n); }

/* Attributes holding a size that must be positive; "shape" of reshape may hold one -1. */
static bool is_size_attr(int kind, const char *name) {
    if (strcmp(name, "shape") == 0) return true;
    return (kind == OP_SINUSOID_TABLE && (!strcmp(name, "length") || !strcmp(name, "dim"))) ||
           (kind == OP_CAUSAL_MASK && !strcmp(name, "size")) ||
           (kind == OP_SCATTER_ADD && !strcmp(name, "num"));
}

static int set_int(const Ctx *c, Op *op, const AttrSpec *spec, const cJSON *v) {
    char what[160];
    snprintf(what, sizeof what, "attribute '%s' of %s", spec->name, op_info(op->kind)->name);
    int64_t i;
    if (!is_numeric_json(v)) return wrong_type(c, v, op, spec);
    if (fe_eval_int(c, v, what, &i)) return -1;
    if (is_size_attr(op->kind, spec->name) && (i <= 0 || i > IR_MAX_NUMEL))
        return fe_error_at(c->fe, v, "%s is %lld; it must be positive and at most 2^40", what, (long long)i);
    op_set_int(op, spec->name, i);
    return 0;
}

static int set_float(const Ctx *c, Op *op, const AttrSpec *spec, const cJSON *v) {
    char what[160];
    snprintf(what, sizeof what, "attribute '%s' of %s", spec->name, op_info(op->kind)->name);
    ExprValue x;
    if (!is_numeric_json(v)) return wrong_type(c, v, op, spec);
    if (fe_eval(c, v, what, &x)) return -1;
    double f = expr_to_double(x);
    if (op->kind == OP_DROPOUT && strcmp(spec->name, "p") == 0 && !(f >= 0.0 && f < 1.0))
        return fe_error_at(c->fe, v, "dropout probability %g is outside [0, 1)", f);
    op_set_float(op, spec->name, f);
    return 0;
}

static int set_bool(const Ctx *c, Op *op, const AttrSpec *spec, const cJSON *v) {
    if (cJSON_IsBool(v)) {
        op_set_bool(op, spec->name, cJSON_IsTrue(v));
        return 0;
    }
    /* A condition such as "training" (a block argument) is allowed too. */
    if (!cJSON_IsString(v)) return wrong_type(c, v, op, spec);
    char what[160];
    snprintf(what, sizeof what, "attribute '%s' of %s", spec->name, op_info(op->kind)->name);
    ExprValue x;
    if (fe_eval(c, v, what, &x)) return -1;
    op_set_bool(op, spec->name, expr_truthy(x));
    return 0;
}

static int set_ints(const Ctx *c, Op *op, const AttrSpec *spec, const cJSON *v) {
    if (!cJSON_IsArray(v)) return wrong_type(c, v, op, spec);
    char what[160];
    snprintf(what, sizeof what, "attribute '%s' of %s", spec->name, op_info(op->kind)->name);
    if (is_size_attr(op->kind, spec->name)) {
        Shape s;
        if (fe_shape(c, v, what, op->kind == OP_RESHAPE, &s)) return -1;
        op_set_ints(op, spec->name, s.dims, s.rank);
        return 0;
    }
    int n = cJSON_GetArraySize(v), k = 0;
    int64_t *vals = calloc((size_t)n + 1, sizeof *vals);
    if (!vals) return fe_error(c->fe, SRCLOC_NONE, "out of memory");
    for (const cJSON *e = v->child; e; e = e->next, k++) {
        if (!is_numeric_json(e)) {
            free(vals);
            return fe_error_at(c->fe, e, "%s expects a list of ints, got %s in it", what, json_type_name(e));
        }
        if (fe_eval_int(c, e, what, &vals[k])) {
            free(vals);
            return -1;
        }
    }
    op_set_ints(op, spec->name, vals, n);
    free(vals);
    return 0;
}

/* A list of numbers, each a config expression evaluated like a float attribute. */
static int eval_floats(const Ctx *c, const cJSON *v, const char *what, Op *op, const char *name) {
    int n = cJSON_GetArraySize(v), k = 0;
    if (n > 64) return fe_error_at(c->fe, v, "%s: %d values, at most 64", what, n);
    double vals[64];
    for (const cJSON *e = v->child; e; e = e->next, k++) {
        if (!is_numeric_json(e))
            return fe_error_at(c->fe, e, "%s expects a list of numbers, got %s in it", what,
                               json_type_name(e));
        ExprValue x;
        if (fe_eval(c, e, what, &x)) return -1;
        vals[k] = expr_to_double(x);
    }
    op_set_floats(op, name, vals, n);
    return 0;
}

static int set_floats(const Ctx *c, Op *op, const AttrSpec *spec, const cJSON *v) {
    if (!cJSON_IsArray(v)) return wrong_type(c, v, op, spec);
    char what[160];
    snprintf(what, sizeof what, "attribute '%s' of %s", spec->name, op_info(op->kind)->name);
    return eval_floats(c, v, what, op, spec->name);
}

int fe_set_call_args(const Ctx *c, Op *op, const cJSON *args) {
    if (!cJSON_IsArray(args))
        return fe_error_at(c->fe, args, "'args' of a call must be a list of numbers or config "
                           "expressions, got %s", json_type_name(args));
    char what[300];
    snprintf(what, sizeof what, "'args' of call '%s'", op_string(op, "fn"));
    return eval_floats(c, args, what, op, "args");
}

static int set_string(const Ctx *c, Op *op, const AttrSpec *spec, const cJSON *v) {
    if (!cJSON_IsString(v)) return wrong_type(c, v, op, spec);
    DType dt;
    if (strcmp(spec->name, "dtype") == 0 &&
        (!dtype_from_name(v->valuestring, &dt) || (dt != DT_F32 && dt != DT_I32)))
        return fe_error_at(c->fe, v, "attribute 'dtype' of %s must be \"f32\" or \"i32\", got '%s'",
                           op_info(op->kind)->name, v->valuestring);
    op_set_string(op, spec->name, v->valuestring);
    return 0;
}

static int set_attr(const Ctx *c, Op *op, const AttrSpec *spec, const cJSON *v) {
    switch (spec->kind) {
    case ATTR_INT: return set_int(c, op, spec, v);
    case ATTR_FLOAT: return set_float(c, op, spec, v);
    case ATTR_BOOL: return set_bool(c, op, spec, v);
    case ATTR_INTS: return set_ints(c, op, spec, v);
    case ATTR_STRING: return set_string(c, op, spec, v);
    case ATTR_FLOATS: return set_floats(c, op, spec, v);
    }
    return -1;
}

int fe_set_attrs(const Ctx *c, Op *op, const cJSON *attrs, const cJSON *op_node) {
    Frontend *fe = c->fe;
    const OpInfo *info = op_info(op->kind);
    if (attrs && !cJSON_IsObject(attrs))
        return fe_error_at(fe, attrs, "'attrs' must be an object, got %s", json_type_name(attrs));
    for (const cJSON *a = attrs ? attrs->child : NULL; a; a = a->next) {
        int idx = op_attr_index(op->kind, a->string);
        if (idx < 0) return fe_error_key(fe, a, "unknown attribute '%s' of %s", a->string, info->name);
        if (set_attr(c, op, &info->attrs[idx], a)) return -1;
    }
    for (int i = 0; i < info->n_attrs; i++) {
        const AttrSpec *spec = &info->attrs[i];
        bool given = attrs && cJSON_GetObjectItemCaseSensitive(attrs, spec->name);
        if (given) continue;
        if (!spec->default_text)
            return fe_error_at(fe, op_node, "missing attribute '%s' of %s", spec->name, info->name);
        /* Each dropout site draws its own mask unless the model pins the stream. */
        if (op->kind == OP_DROPOUT && strcmp(spec->name, "stream") == 0)
            op_set_int(op, "stream", fe->next_stream++);
    }
    return 0;
}
