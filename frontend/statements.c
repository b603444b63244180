/* statements.c — runs the statements of a body (docs/model-format.md, "Statements"):
 * op, param, use, block call, scope, repeat, if.
 *
 * Expansion is direct: a block call runs the block's body with a fresh name environment and
 * variable chain, a repeat runs its body count times, so the IR comes out already flat. The
 * statement's kind is the first of its kind keys present; any other key the kind does not
 * know is an error, which also catches two kind keys in one statement.
 */
#include <stdlib.h>
#include <string.h>

#include "fe_internal.h"

/* ---- name environment ----------------------------------------------------------------- */

Value *fe_env_find(const Env *env, const char *name) {
    for (int i = 0; i < env->n; i++)
        if (strcmp(env->items[i].name, name) == 0) return env->items[i].value;
    return NULL;
}

int fe_env_bind(Env *env, const char *name, Value *v) {
    for (int i = 0; i < env->n; i++)
        if (strcmp(env->items[i].name, name) == 0) {
            env->items[i].value = v; /* rebinding: `h = relu(h)` */
            return 0;
        }
    if (env->n == env->cap) {
        int cap = env->cap ? 2 * env->cap : 16;
        Binding *p = realloc(env->items, (size_t)cap * sizeof *p);
        if (!p) return -1;
        env->items = p;
        env->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) return -1;
    env->items[env->n++] = (Binding){copy, v};
    return 0;
}

void fe_env_free(Env *env) {
    for (int i = 0; i < env->n; i++) free(env->items[i].name);
    free(env->items);
    *env = (Env){0};
}

/* ---- helpers -------------------------------------------------------------------------- */

/* "prefix.name", or name at the top; malloc'd. */
static char *qualify(const char *prefix, const char *name) {
    size_t a = strlen(prefix), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s) return NULL;
    if (a) {
        memcpy(s, prefix, a);
        s[a] = '.';
        memcpy(s + a + 1, name, b + 1);
    } else {
        memcpy(s, name, b + 1);
    }
    return s;
}

/* A name string from the model that must be printable in the IR. */
static char *checked_name(const Ctx *c, const cJSON *node, const char *what) {
    char *s = fe_name(c, node, what);
    if (s && !fe_valid_name(s)) {
        fe_error_at(c->fe, node, "bad %s '%s': %s", what, s, fe_name_rule(s));
        free(s);
        return NULL;
    }
    return s;
}

static Value *lookup_value(const Ctx *c, const cJSON *node) {
    char *name = fe_name(c, node, "value name");
    if (!name) return NULL;
    Value *v = fe_env_find(c->env, name);
    if (!v) fe_error_at(c->fe, node, "undefined value '%s'", name);
    free(name);
    return v;
}

/* Binds the statement's `out` to v. */
static int bind_out(const Ctx *c, const cJSON *out, Value *v) {
    char *name = checked_name(c, out, "'out' name");
    if (!name) return -1;
    int rc = fe_env_bind(c->env, name, v);
    free(name);
    return rc ? fe_error(c->fe, SRCLOC_NONE, "out of memory") : 0;
}

static int count_op(const Ctx *c, const cJSON *at) {
    if (++c->fe->n_ops > FE_MAX_OPS)
        return fe_error_at(c->fe, at, "the model expands to more than %d ops", FE_MAX_OPS);
    return 0;
}

/* ---- op ------------------------------------------------------------------------------- */

static int arity_error(const Ctx *c, const cJSON *at, const OpInfo *info, int n) {
    if (info->max_inputs < 0)
        return fe_error_at(c->fe, at, "op '%s' takes at least %d input%s, got %d", info->name,
                           info->min_inputs, info->min_inputs == 1 ? "" : "s", n);
    if (info->min_inputs == info->max_inputs)
        return fe_error_at(c->fe, at, "op '%s' takes %d input%s, got %d", info->name,
                           info->min_inputs, info->min_inputs == 1 ? "" : "s", n);
    return fe_error_at(c->fe, at, "op '%s' takes %d to %d inputs, got %d", info->name,
                       info->min_inputs, info->max_inputs, n);
}

/* Resolves the "in" list into a malloc'd array (at least one slot). */
static Value **op_inputs(const Ctx *c, const cJSON *in, const cJSON *op_node, const OpInfo *info,
                         int *n_out) {
    if (in && !cJSON_IsArray(in)) {
        fe_error_at(c->fe, in, "'in' of an op must be a list of value names, got %s", json_type_name(in));
        return NULL;
    }
    int n = in ? cJSON_GetArraySize(in) : 0;
    if (n < info->min_inputs || (info->max_inputs >= 0 && n > info->max_inputs)) {
        arity_error(c, in ? in : op_node, info, n);
        return NULL;
    }
    Value **vals = calloc((size_t)n + 1, sizeof *vals);
    if (!vals) {
        fe_error(c->fe, SRCLOC_NONE, "out of memory");
        return NULL;
    }
    int k = 0;
    for (const cJSON *e = in ? in->child : NULL; e; e = e->next)
        if (!(vals[k++] = lookup_value(c, e))) {
            free(vals);
            return NULL;
        }
    *n_out = n;
    return vals;
}

static int run_op(const Ctx *c, const cJSON *s) {
    static const char *const keys[] = {"op", "in", "attrs", "out", "fn", "args", NULL};
    Frontend *fe = c->fe;
    int rc = 0;
    const cJSON *op_node = fe_member(fe, s, "op", true, "an op statement", &rc);
    const cJSON *in = fe_member(fe, s, "in", false, "", &rc);
    const cJSON *attrs = fe_member(fe, s, "attrs", false, "", &rc);
    if (fe_check_keys(fe, s, keys, "an op statement")) return -1;
    if (!cJSON_IsString(op_node))
        return fe_error_at(fe, op_node, "'op' must be a string naming an op, got %s", json_type_name(op_node));
    int kind = op_kind_from_name(op_node->valuestring);
    if (kind < 0) return fe_error_at(fe, op_node, "unknown op '%s'", op_node->valuestring);
    if (kind == OP_PARAM)
        return fe_error_at(fe, op_node, "op 'param' is not written directly: use a param or use statement");
    const cJSON *out = fe_member(fe, s, "out", true, "an op statement", &rc);
    const cJSON *fn = fe_member(fe, s, "fn", kind == OP_CALL, "a call", &rc);
    if (rc || count_op(c, op_node)) return -1;
    const cJSON *args = fe_member(fe, s, "args", false, "", &rc);
    if (rc) return -1;
    if (fn && kind != OP_CALL) return fe_error_key(fe, fn, "'fn' belongs to op 'call' only");
    if (args && kind != OP_CALL) return fe_error_key(fe, args, "'args' belongs to op 'call' only");
    const cJSON *attr_fn = cJSON_IsObject(attrs) ? cJSON_GetObjectItemCaseSensitive(attrs, "fn") : NULL;
    if (kind == OP_CALL && attr_fn)
        return fe_error_key(fe, attr_fn, "the C function is named by the statement's 'fn', not an "
                            "attribute");
    const cJSON *attr_args = cJSON_IsObject(attrs) ? cJSON_GetObjectItemCaseSensitive(attrs, "args") : NULL;
    if (kind == OP_CALL && attr_args)
        return fe_error_key(fe, attr_args, "a call's scalar arguments are the statement's 'args', "
                            "not an attribute");
    if (fn && !cJSON_IsString(fn))
        return fe_error_at(fe, fn, "'fn' must name a C function, got %s", json_type_name(fn));
    int n = 0;
    Value **inputs = op_inputs(c, in, op_node, op_info(kind), &n);
    if (!inputs) return -1;
    char *out_name = checked_name(c, out, "'out' name");
    char *value_name = out_name ? qualify(c->prefix, out_name) : NULL;
    Op *op = value_name ? func_add_op(fe->fn, kind, inputs, n, value_name, fe_ir_loc(fe, op_node)) : NULL;
    free(inputs);
    free(value_name);
    free(out_name);
    if (!op) return -1;
    if (fn) {
        /* the scalar arguments are evaluated first: the gradient check runs at their values */
        op_set_string(op, "fn", fn->valuestring);
        if (args && fe_set_call_args(c, op, args)) return -1;
        int n_args = 0;
        const double *vals = op_floats(op, "args", &n_args);
        if (fe_use_function(fe, fn, fn->valuestring, n, vals, n_args)) return -1;
    }
    if (fe_set_attrs(c, op, attrs, op_node)) return -1;
    return bind_out(c, out, op->result);
}

/* ---- param and use -------------------------------------------------------------------- */

/* "backbone.layer1" freezes "backbone.layer1" and "backbone.layer1.*", not "backbone.layer10". */
static bool is_frozen(const Frontend *fe, const char *name) {
    for (const cJSON *p = fe->frozen ? fe->frozen->child : NULL; p; p = p->next) {
        size_t n = strlen(p->valuestring);
        if (strncmp(name, p->valuestring, n) == 0 && (name[n] == '\0' || name[n] == '.')) return true;
    }
    return false;
}

typedef struct InitSpec {
    const char *name;
    int n_args;
} InitSpec;

static const InitSpec INITS[] = {
    {"zeros", 0}, {"ones", 0}, {"normal", 2}, {"uniform", 2}, {"kaiming_uniform", 0},
    {"kaiming_normal_fan_out", 0}, {"xavier_uniform", 0}, {"linear_bias", 1},
};

/* Evaluates "name(arg, ...)" into its canonical text "name(v,...)" (args evaluated), in buf. */
static int parse_init(const Ctx *c, const cJSON *node, char *buf, size_t size) {
    if (!cJSON_IsString(node))
        return fe_error_at(c->fe, node, "'init' must be a string, got %s", json_type_name(node));
    const char *text = node->valuestring;
    size_t name_len = strcspn(text, "(");
    const InitSpec *spec = NULL;
    for (size_t i = 0; i < sizeof INITS / sizeof INITS[0]; i++)
        if (strlen(INITS[i].name) == name_len && strncmp(INITS[i].name, text, name_len) == 0) spec = &INITS[i];
    if (!spec)
        return fe_error_at(c->fe, node, "unknown initializer '%.*s' (known: zeros, ones, normal, uniform, "
                           "kaiming_uniform, kaiming_normal_fan_out, xavier_uniform, linear_bias)",
                           (int)name_len, text);
    size_t len = (size_t)snprintf(buf, size, "%s", spec->name);
    int n_args = 0;
    if (text[name_len] == '(') {
        size_t rparen = strlen(text);
        while (rparen > name_len && text[rparen - 1] == ' ') rparen--;
        if (text[--rparen] != ')')
            return fe_error_at(c->fe, node, "initializer '%s' lacks its closing ')'", spec->name);
        /* Split the arguments at top-level commas and evaluate each. */
        size_t start = name_len + 1;
        int depth = 0;
        for (size_t i = start; i <= rparen; i++) {
            if (i < rparen && (text[i] != ',' || depth > 0)) {
                depth += text[i] == '(' ? 1 : text[i] == ')' ? -1 : 0;
                continue;
            }
            if (i == rparen && i == start && n_args == 0) break; /* "name()" */
            char arg[256];
            snprintf(arg, sizeof arg, "%.*s", (int)(i - start), text + start);
            cJSON tmp = {.type = cJSON_String, .valuestring = arg};
            ExprValue v;
            /* The temporary node has no position: errors point at the init string. */
            if (fe_eval(c, &tmp, "initializer argument", &v)) {
                c->fe->d->loc = json_loc(fe_doc(c->fe, node), node);
                return -1;
            }
            char num[64];
            expr_format(v, num, sizeof num);
            len += (size_t)snprintf(buf + len, len < size ? size - len : 0, "%s%s", n_args ? "," : "(", num);
            n_args++;
            start = i + 1;
        }
        if (n_args) snprintf(buf + len, len < size ? size - len : 0, ")");
    } else if (text[name_len] != '\0') {
        return fe_error_at(c->fe, node, "bad initializer '%s'", text);
    }
    if (n_args != spec->n_args)
        return fe_error_at(c->fe, node, "initializer '%s' takes %d argument%s, got %d", spec->name,
                           spec->n_args, spec->n_args == 1 ? "" : "s", n_args);
    return 0;
}

/* Emits the `param` op reading full_name and binds it to out. */
static int emit_param_op(const Ctx *c, const cJSON *at, const char *full_name, const cJSON *out) {
    if (count_op(c, at)) return -1;
    Op *op = func_add_op(c->fe->fn, OP_PARAM, NULL, 0, full_name, fe_ir_loc(c->fe, at));
    op_set_string(op, "name", full_name);
    return bind_out(c, out, op->result);
}

static int param_fields(const Ctx *c, const cJSON *s, Shape *shape, DType *dtype, bool *buffer,
                        char *init, size_t init_size) {
    Frontend *fe = c->fe;
    int rc = 0;
    const cJSON *shape_node = fe_member(fe, s, "shape", true, "a param statement", &rc);
    if (rc || fe_shape(c, shape_node, "param shape", false, shape)) return -1;
    const cJSON *dt = fe_member(fe, s, "dtype", false, "", &rc);
    *dtype = DT_F32;
    if (dt && (!cJSON_IsString(dt) || !dtype_from_name(dt->valuestring, dtype) ||
               (*dtype != DT_F32 && *dtype != DT_I32)))
        return fe_error_at(fe, dt, "'dtype' must be \"f32\" or \"i32\"");
    const cJSON *buf = fe_member(fe, s, "buffer", false, "", &rc);
    if (buf && !cJSON_IsBool(buf))
        return fe_error_at(fe, buf, "'buffer' must be true or false, got %s", json_type_name(buf));
    *buffer = buf && cJSON_IsTrue(buf);
    const cJSON *init_node = fe_member(fe, s, "init", false, "", &rc);
    if (!init_node) {
        snprintf(init, init_size, "zeros");
        return 0;
    }
    return parse_init(c, init_node, init, init_size);
}

static int run_param(const Ctx *c, const cJSON *s) {
    static const char *const keys[] = {"param", "shape", "init", "buffer", "dtype", "out", NULL};
    Frontend *fe = c->fe;
    if (fe_check_keys(fe, s, keys, "a param statement")) return -1;
    const cJSON *name_node = cJSON_GetObjectItemCaseSensitive(s, "param");
    Shape shape;
    DType dtype;
    bool buffer = false;
    char init[512];
    if (param_fields(c, s, &shape, &dtype, &buffer, init, sizeof init)) return -1;
    char *name = checked_name(c, name_node, "parameter name");
    char *full = name ? qualify(c->prefix, name) : NULL;
    free(name);
    if (!full) return -1;
    int rc = 0;
    if (fe->in_entry) { /* an entry binds forward's parameter (entries.c) */
        const cJSON *out = cJSON_GetObjectItemCaseSensitive(s, "out");
        rc = fe_entry_param(c, name_node, full, dtype, &shape);
        if (!rc && out) rc = emit_param_op(c, name_node, full, out);
    } else if (module_find_param(fe->m, full)) {
        const Param *first = module_find_param(fe->m, full);
        rc = fe_error_at(fe, name_node, "duplicate parameter '%s' (first declared at line %d)", full,
                         first->loc.line);
    } else {
        module_add_param(fe->m, full, dtype, shape, buffer ? PARAM_BUFFER : PARAM_WEIGHT,
                         !buffer && !is_frozen(fe, full), init, fe_ir_loc(fe, name_node));
        const cJSON *out = cJSON_GetObjectItemCaseSensitive(s, "out");
        if (out) rc = emit_param_op(c, name_node, full, out);
    }
    free(full);
    return rc;
}

static int run_use(const Ctx *c, const cJSON *s) {
    static const char *const keys[] = {"use", "out", NULL};
    Frontend *fe = c->fe;
    int rc = 0;
    if (fe_check_keys(fe, s, keys, "a use statement")) return -1;
    const cJSON *name_node = cJSON_GetObjectItemCaseSensitive(s, "use");
    const cJSON *out = fe_member(fe, s, "out", true, "a use statement", &rc);
    if (rc) return -1;
    char *name = fe_name(c, name_node, "parameter name");
    if (!name) return -1;
    if (!module_find_param(fe->m, name)) rc = fe_error_at(fe, name_node, "undefined parameter '%s'", name);
    else rc = emit_param_op(c, name_node, name, out);
    free(name);
    return rc;
}

/* ---- block call ----------------------------------------------------------------------- */

/* A block input written "mask?" is optional: a call may leave it out, and the body then
 * sees no value of that name (an `if` decides whether it is used). */
static bool is_optional(const char *decl) {
    size_t n = strlen(decl);
    return n > 1 && decl[n - 1] == '?';
}

static size_t name_len(const char *decl) { return strlen(decl) - is_optional(decl); }

static const cJSON *find_member(const cJSON *obj, const char *name, size_t n) {
    for (const cJSON *m = obj ? obj->child : NULL; m; m = m->next)
        if (strlen(m->string) == n && strncmp(m->string, name, n) == 0) return m;
    return NULL;
}

/* Checks that the call's object (in or args) names exactly the block's list `want`. */
static int match_names(const Ctx *c, const cJSON *given, const cJSON *want, const char *block,
                       const cJSON *call_node, const char *what) {
    Frontend *fe = c->fe;
    if (given && !cJSON_IsObject(given))
        return fe_error_at(fe, given, "'%s' of a block call must be an object, got %s", what,
                           json_type_name(given));
    for (const cJSON *g = given ? given->child : NULL; g; g = g->next) {
        bool found = false;
        for (const cJSON *w = want ? want->child : NULL; w && !found; w = w->next)
            found = name_len(w->valuestring) == strlen(g->string) &&
                    strncmp(w->valuestring, g->string, strlen(g->string)) == 0;
        if (!found)
            return fe_error_key(fe, g, "block '%s' has no %s '%s'", block,
                                strcmp(what, "in") == 0 ? "input" : "argument", g->string);
    }
    for (const cJSON *w = want ? want->child : NULL; w; w = w->next) {
        size_t n = name_len(w->valuestring);
        if (!find_member(given, w->valuestring, n) && !is_optional(w->valuestring))
            return fe_error_at(fe, call_node, "block '%s' needs %s '%.*s'", block,
                               strcmp(what, "in") == 0 ? "input" : "argument", (int)n, w->valuestring);
    }
    return 0;
}

static int report_recursion(const Ctx *c, const cJSON *at, const char *block) {
    const CallFrame *chain[256];
    int n = 0;
    for (const CallFrame *f = c->calls; f && n < 256; f = f->caller) {
        chain[n++] = f;
        if (strcmp(f->block, block) == 0) break;
    }
    char path[768] = "";
    size_t len = 0;
    for (int i = n - 1; i >= 0; i--)
        len += (size_t)snprintf(path + len, len < sizeof path ? sizeof path - len : 0, "%s -> ",
                                chain[i]->block);
    if (len < sizeof path) snprintf(path + len, sizeof path - len, "%s", block);
    return fe_error_at(c->fe, at, "recursive block: %s", path);
}

/* Runs the block body in a fresh environment; *result is its output value. */
static int expand_block(const Ctx *c, const cJSON *s, const cJSON *def, const char *block,
                        const char *prefix, Value **result) {
    Frontend *fe = c->fe;
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(s, "in");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(s, "args");
    const cJSON *want_args = cJSON_GetObjectItemCaseSensitive(def, "args");
    int n_args = want_args ? cJSON_GetArraySize(want_args) : 0;
    VarFrame *frames = calloc((size_t)n_args + 1, sizeof *frames);
    Env env = {0};
    int rc = frames ? 0 : fe_error(fe, SRCLOC_NONE, "out of memory");
    const VarFrame *vars = NULL;
    int k = 0;
    for (const cJSON *a = want_args ? want_args->child : NULL; a && !rc; a = a->next, k++) {
        char what[160];
        snprintf(what, sizeof what, "argument '%s' of block '%s'", a->valuestring, block);
        frames[k].name = a->valuestring;
        frames[k].parent = vars;
        rc = fe_eval(c, cJSON_GetObjectItemCaseSensitive(args, a->valuestring), what, &frames[k].value);
        vars = &frames[k];
    }
    const cJSON *want_in = cJSON_GetObjectItemCaseSensitive(def, "inputs");
    for (const cJSON *w = want_in ? want_in->child : NULL; w && !rc; w = w->next) {
        size_t n = name_len(w->valuestring);
        const cJSON *given = find_member(in, w->valuestring, n);
        if (!given) continue; /* an optional input left out */
        Value *v = lookup_value(c, given);
        rc = !v ? -1 : fe_env_bind(&env, given->string, v) ? fe_error(fe, SRCLOC_NONE, "out of memory") : 0;
    }
    CallFrame frame = {block, c->calls};
    Ctx inner = {fe, &env, prefix, vars, &frame};
    if (!rc) rc = fe_run_body(&inner, cJSON_GetObjectItemCaseSensitive(def, "body"), "block body");
    if (!rc) {
        const cJSON *output = cJSON_GetObjectItemCaseSensitive(def, "output");
        *result = lookup_value(&inner, output);
        if (!*result) rc = -1;
    }
    fe_env_free(&env);
    free(frames);
    return rc;
}

static int run_block_call(const Ctx *c, const cJSON *s) {
    static const char *const keys[] = {"block", "scope", "in", "args", "out", NULL};
    Frontend *fe = c->fe;
    if (fe_check_keys(fe, s, keys, "a block call")) return -1;
    const cJSON *name_node = cJSON_GetObjectItemCaseSensitive(s, "block");
    if (!cJSON_IsString(name_node))
        return fe_error_at(fe, name_node, "'block' must be a string naming a block, got %s",
                           json_type_name(name_node));
    const char *block = name_node->valuestring;
    const cJSON *def = fe_find_block(fe, block);
    if (!def) return fe_error_at(fe, name_node, "undefined block '%s'", block);
    for (const CallFrame *f = c->calls; f; f = f->caller)
        if (strcmp(f->block, block) == 0) return report_recursion(c, name_node, block);
    if (match_names(c, cJSON_GetObjectItemCaseSensitive(s, "in"),
                    cJSON_GetObjectItemCaseSensitive(def, "inputs"), block, name_node, "in") ||
        match_names(c, cJSON_GetObjectItemCaseSensitive(s, "args"),
                    cJSON_GetObjectItemCaseSensitive(def, "args"), block, name_node, "args"))
        return -1;
    const cJSON *scope = cJSON_GetObjectItemCaseSensitive(s, "scope");
    char *prefix;
    if (scope) {
        char *sname = checked_name(c, scope, "scope name");
        prefix = sname ? qualify(c->prefix, sname) : NULL;
        free(sname);
    } else {
        prefix = strdup(c->prefix);
    }
    if (!prefix) return -1;
    Value *result = NULL;
    int rc = expand_block(c, s, def, block, prefix, &result);
    free(prefix);
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(s, "out");
    if (!rc && out) rc = bind_out(c, out, result);
    return rc;
}

/* ---- scope, repeat, if ---------------------------------------------------------------- */

static int run_scope(const Ctx *c, const cJSON *s) {
    static const char *const keys[] = {"scope", "body", NULL};
    int rc = 0;
    if (fe_check_keys(c->fe, s, keys, "a scope statement")) return -1;
    const cJSON *body = fe_member(c->fe, s, "body", true, "a scope statement", &rc);
    if (rc) return -1;
    char *name = checked_name(c, cJSON_GetObjectItemCaseSensitive(s, "scope"), "scope name");
    char *prefix = name ? qualify(c->prefix, name) : NULL;
    free(name);
    if (!prefix) return -1;
    Ctx inner = *c;
    inner.prefix = prefix;
    rc = fe_run_body(&inner, body, "scope body");
    free(prefix);
    return rc;
}

static int run_repeat(const Ctx *c, const cJSON *s) {
    static const char *const keys[] = {"repeat", "var", "body", NULL};
    Frontend *fe = c->fe;
    int rc = 0;
    if (fe_check_keys(fe, s, keys, "a repeat statement")) return -1;
    const cJSON *count_node = cJSON_GetObjectItemCaseSensitive(s, "repeat");
    const cJSON *var = fe_member(fe, s, "var", false, "", &rc);
    const cJSON *body = fe_member(fe, s, "body", true, "a repeat statement", &rc);
    int64_t count;
    if (rc || fe_eval_int(c, count_node, "repeat count", &count)) return -1;
    if (count < 0) return fe_error_at(fe, count_node, "repeat count %lld is negative", (long long)count);
    if (count > FE_MAX_REPEAT)
        return fe_error_at(fe, count_node, "repeat count %lld is too large (at most %d)", (long long)count,
                           FE_MAX_REPEAT);
    if (var && (!cJSON_IsString(var) || !expr_is_name(var->valuestring)))
        return fe_error_at(fe, var, "'var' must be a name of letters, digits and '_'");
    VarFrame frame = {var ? var->valuestring : "", expr_int(0), c->vars};
    Ctx inner = *c;
    if (var) inner.vars = &frame;
    for (int64_t i = 0; i < count && !rc; i++) {
        frame.value = expr_int(i);
        rc = fe_run_body(&inner, body, "repeat body");
    }
    return rc;
}

static int run_if(const Ctx *c, const cJSON *s) {
    static const char *const keys[] = {"if", "body", "else", NULL};
    Frontend *fe = c->fe;
    int rc = 0;
    if (fe_check_keys(fe, s, keys, "an if statement")) return -1;
    const cJSON *body = fe_member(fe, s, "body", true, "an if statement", &rc);
    const cJSON *els = fe_member(fe, s, "else", false, "", &rc);
    ExprValue cond;
    if (rc || fe_eval(c, cJSON_GetObjectItemCaseSensitive(s, "if"), "'if' condition", &cond)) return -1;
    if (expr_truthy(cond)) return fe_run_body(c, body, "if body");
    return els ? fe_run_body(c, els, "else body") : 0;
}

/* ---- dispatch ------------------------------------------------------------------------- */

typedef struct StmtKind {
    const char *key;
    int (*run)(const Ctx *c, const cJSON *s);
} StmtKind;

static const StmtKind STMT_KINDS[] = {
    {"op", run_op},       {"param", run_param}, {"use", run_use}, {"block", run_block_call},
    {"repeat", run_repeat}, {"if", run_if},     {"scope", run_scope},
};

static int run_stmt(const Ctx *c, const cJSON *s) {
    if (!cJSON_IsObject(s))
        return fe_error_at(c->fe, s, "a statement must be an object, got %s", json_type_name(s));
    for (size_t i = 0; i < sizeof STMT_KINDS / sizeof STMT_KINDS[0]; i++)
        if (cJSON_GetObjectItemCaseSensitive(s, STMT_KINDS[i].key)) return STMT_KINDS[i].run(c, s);
    return fe_error_at(c->fe, s, "statement has none of the keys op, param, use, block, scope, repeat, if");
}

int fe_run_body(const Ctx *c, const cJSON *body, const char *what) {
    if (!cJSON_IsArray(body))
        return fe_error_at(c->fe, body, "%s must be a list of statements, got %s", what, json_type_name(body));
    for (const cJSON *s = body->child; s; s = s->next)
        if (run_stmt(c, s)) return -1;
    return 0;
}

/* ---- block definitions ---------------------------------------------------------------- */

static int check_name_list(Frontend *fe, const cJSON *list, const char *what, bool expr_names) {
    if (!list) return 0;
    if (!cJSON_IsArray(list))
        return fe_error_at(fe, list, "%s must be a list of names, got %s", what, json_type_name(list));
    for (const cJSON *e = list->child; e; e = e->next) {
        bool ok = cJSON_IsString(e);
        if (ok && expr_names) {
            ok = expr_is_name(e->valuestring);
        } else if (ok) { /* inputs may end in '?' (optional) */
            char *base = strndup(e->valuestring, name_len(e->valuestring));
            ok = base && fe_valid_name(base);
            free(base);
        }
        if (!ok) return fe_error_at(fe, e, "%s must be names of letters, digits and '_'", what);
        for (const cJSON *p = list->child; p != e; p = p->next)
            if (strcmp(p->valuestring, e->valuestring) == 0)
                return fe_error_at(fe, e, "duplicate name '%s' in %s", e->valuestring, what);
    }
    return 0;
}

int fe_check_block_def(Frontend *fe, const cJSON *def) {
    static const char *const keys[] = {"inputs", "args", "body", "output", NULL};
    if (!cJSON_IsObject(def))
        return fe_error_at(fe, def, "block '%s' must be an object, got %s", def->string, json_type_name(def));
    if (!fe_valid_name(def->string))
        return fe_error_key(fe, def, "bad block name '%s'", def->string);
    int rc = 0;
    if (fe_check_keys(fe, def, keys, "a block definition")) return -1;
    const cJSON *body = fe_member(fe, def, "body", true, "a block definition", &rc);
    const cJSON *output = fe_member(fe, def, "output", true, "a block definition", &rc);
    if (rc) return -1;
    if (!cJSON_IsArray(body))
        return fe_error_at(fe, body, "block body must be a list of statements, got %s", json_type_name(body));
    if (!cJSON_IsString(output))
        return fe_error_at(fe, output, "'output' must be a value name, got %s", json_type_name(output));
    if (check_name_list(fe, cJSON_GetObjectItemCaseSensitive(def, "inputs"), "block inputs", false) ||
        check_name_list(fe, cJSON_GetObjectItemCaseSensitive(def, "args"), "block args", true))
        return -1;
    return 0;
}
