/* config.c — config variables and the evaluation of expressions found in the model file.
 *
 * Config values may refer to each other in any order, so they are evaluated on demand: the
 * name lookup of an expression evaluates a pending variable first (depth-first), and meeting
 * a variable that is still being evaluated is a cycle, reported with its path. -D overrides
 * replace a variable's value before anything is evaluated, so an overridden variable's own
 * expression is never looked at.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fe_internal.h"

/* Letters, digits, '_' and '.', where every '.' separates two non-empty parts: a scope "..."
 * would otherwise make names like "layer1.0.....weight" that no state_dict has. */
bool fe_valid_name(const char *s) {
    if (!s || !*s || *s == '.' || s[strlen(s) - 1] == '.' || strstr(s, "..")) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.'))
            return false;
    return true;
}

const char *fe_name_rule(const char *s) {
    for (const char *p = s ? s : ""; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.'))
            return "names may use letters, digits, '_' and '.'";
    return "a '.' must separate two non-empty parts of a name";
}

static int find_config(const Frontend *fe, const char *name) {
    for (int i = 0; i < fe->n_config; i++)
        if (strcmp(fe->config[i].node->string, name) == 0) return i;
    return -1;
}

static int eval_config(Frontend *fe, int idx);

/* Lookup context for expressions: variables first, then config. */
typedef struct Lookup {
    Frontend *fe;
    const VarFrame *vars;
} Lookup;

static int lookup_name(void *ctx, const char *name, ExprValue *out) {
    Lookup *lk = ctx;
    for (const VarFrame *f = lk->vars; f; f = f->parent)
        if (strcmp(f->name, name) == 0) {
            *out = f->value;
            return EXPR_FOUND;
        }
    int idx = find_config(lk->fe, name);
    if (idx < 0) return EXPR_UNDEFINED;
    if (eval_config(lk->fe, idx)) return EXPR_ABORT;
    *out = lk->fe->config[idx].value;
    return EXPR_FOUND;
}

/* "cycle in config: a -> b -> a", reported at the key of the first variable of the cycle. */
static int report_cycle(Frontend *fe, int idx) {
    char path[768] = "";
    size_t len = 0;
    int from = 0;
    while (fe->cfg_stack[from] != idx) from++;
    for (int i = from; i < fe->cfg_depth; i++)
        len += (size_t)snprintf(path + len, len < sizeof path ? sizeof path - len : 0, "%s -> ",
                                fe->config[fe->cfg_stack[i]].node->string);
    if (len < sizeof path) snprintf(path + len, sizeof path - len, "%s", fe->config[idx].node->string);
    return fe_error_key(fe, fe->config[idx].node, "cycle in config: %s", path);
}

static int eval_node(Frontend *fe, const VarFrame *vars, const cJSON *node, const char *what,
                     ExprValue *out) {
    if (cJSON_IsNumber(node)) {
        if (json_number_is_int(fe_doc(fe, node), node)) {
            if (!(node->valuedouble >= -9.2e18 && node->valuedouble <= 9.2e18))
                return fe_error_at(fe, node, "%s: integer too large", what);
            *out = expr_int((int64_t)node->valuedouble);
        } else {
            *out = expr_real(node->valuedouble);
        }
        return 0;
    }
    if (cJSON_IsBool(node)) {
        *out = expr_int(cJSON_IsTrue(node));
        return 0;
    }
    if (!cJSON_IsString(node))
        return fe_error_at(fe, node, "%s must be a number or an expression, got %s", what,
                           json_type_name(node));
    Lookup lk = {fe, vars};
    ExprError err;
    if (expr_eval(node->valuestring, lookup_name, &lk, out, &err) == 0) return 0;
    if (err.aborted) return -1;
    return fe_error(fe, json_string_loc(fe_doc(fe, node), node, err.offset), "%s", err.msg);
}

static int eval_config(Frontend *fe, int idx) {
    ConfigEntry *e = &fe->config[idx];
    if (e->state == CFG_DONE) return 0;
    if (e->state == CFG_EVALUATING) return report_cycle(fe, idx);
    e->state = CFG_EVALUATING;
    fe->cfg_stack[fe->cfg_depth++] = idx;
    char what[160];
    snprintf(what, sizeof what, "config variable '%s'", e->node->string);
    /* Config sees only config: no variables. */
    int rc = eval_node(fe, NULL, e->node, what, &e->value);
    fe->cfg_depth--;
    e->state = CFG_DONE;
    return rc;
}

/* "-D name=value": the name is what precedes '=' in o->name (which may point into the
 * whole argument), the value must be a plain number. */
static int apply_override(Frontend *fe, const ConfigOverride *o) {
    size_t n = strcspn(o->name, "=");
    int idx = -1;
    for (int i = 0; i < fe->n_config; i++)
        if (strlen(fe->config[i].node->string) == n && strncmp(fe->config[i].node->string, o->name, n) == 0)
            idx = i;
    if (idx < 0) {
        char known[600] = "";
        size_t len = 0;
        for (int i = 0; i < fe->n_config && len < sizeof known; i++)
            len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "",
                                    fe->config[i].node->string);
        return fe_error(fe, SRCLOC_NONE, "-D %.*s: no config variable '%.*s' in the model (it has: %s)",
                        (int)n, o->name, (int)n, o->name, fe->n_config ? known : "none");
    }
    const char *v = o->value;
    char *end;
    errno = 0;
    long long i = strtoll(v, &end, 10);
    ConfigEntry *e = &fe->config[idx];
    if (*v && *end == '\0' && errno == 0) {
        e->value = expr_int(i);
    } else {
        errno = 0;
        double f = strtod(v, &end);
        if (!*v || *end != '\0' || errno != 0 || !isfinite(f))
            return fe_error(fe, SRCLOC_NONE, "bad -D '%.*s=%s': the value must be a number", (int)n,
                            o->name, v);
        e->value = expr_real(f);
    }
    e->overridden = true;
    e->state = CFG_DONE;
    return 0;
}

/* A preset or an extending file's "config": its members replace the variables of their name. */
static int apply_layer(Frontend *fe, const cJSON *layer) {
    if (!cJSON_IsObject(layer))
        return fe_error_at(fe, layer, "'config' must be an object, got %s", json_type_name(layer));
    for (const cJSON *m = layer->child; m; m = m->next) {
        int idx = find_config(fe, m->string);
        if (idx < 0)
            return fe_error_key(fe, m, "'%s' is not a config variable of the model", m->string);
        fe->config[idx].node = m;
    }
    return 0;
}

int fe_load_config(Frontend *fe, const cJSON *config, const cJSON *const *layers, int n_layers,
                   const ConfigOverride *ov, int n_ov) {
    if (config && !cJSON_IsObject(config))
        return fe_error_at(fe, config, "'config' must be an object, got %s", json_type_name(config));
    int n = config ? cJSON_GetArraySize(config) : 0;
    fe->config = calloc((size_t)n + 1, sizeof *fe->config);
    fe->cfg_stack = calloc((size_t)n + 1, sizeof *fe->cfg_stack);
    if (!fe->config || !fe->cfg_stack) return fe_error(fe, SRCLOC_NONE, "out of memory");
    for (const cJSON *c = config ? config->child : NULL; c; c = c->next) {
        if (!expr_is_name(c->string))
            return fe_error_key(fe, c, "bad config variable name '%s': use letters, digits and '_'",
                                c->string);
        fe->config[fe->n_config++] = (ConfigEntry){c, CFG_PENDING, false, {0}};
    }
    for (int i = 0; i < n_layers; i++)
        if (apply_layer(fe, layers[i])) return -1;
    for (int i = 0; i < n_ov; i++)
        if (apply_override(fe, &ov[i])) return -1;
    for (int i = 0; i < fe->n_config; i++)
        if (eval_config(fe, i)) return -1;
    for (int i = 0; i < fe->n_config; i++) {
        const ConfigEntry *e = &fe->config[i];
        module_set_config(fe->m, e->node->string, expr_to_double(e->value), e->value.is_int);
    }
    return 0;
}

int fe_eval(const Ctx *c, const cJSON *node, const char *what, ExprValue *out) {
    return eval_node(c->fe, c->vars, node, what, out);
}

int fe_eval_int(const Ctx *c, const cJSON *node, const char *what, int64_t *out) {
    ExprValue v;
    if (fe_eval(c, node, what, &v)) return -1;
    if (!v.is_int) {
        char buf[64];
        expr_format(v, buf, sizeof buf);
        return fe_error_at(c->fe, node, "%s must be an integer, got %s", what, buf);
    }
    *out = v.i;
    return 0;
}

char *fe_name(const Ctx *c, const cJSON *node, const char *what) {
    if (!cJSON_IsString(node)) {
        fe_error_at(c->fe, node, "%s must be a string, got %s", what, json_type_name(node));
        return NULL;
    }
    Lookup lk = {c->fe, c->vars};
    ExprError err;
    char *s = expr_interpolate(node->valuestring, lookup_name, &lk, &err);
    if (!s) {
        if (!err.aborted)
            fe_error(c->fe, json_string_loc(fe_doc(c->fe, node), node, err.offset), "%s",
                     err.msg[0] ? err.msg : "out of memory");
        return NULL;
    }
    return s;
}

int fe_shape(const Ctx *c, const cJSON *node, const char *what, bool allow_infer, Shape *out) {
    if (!cJSON_IsArray(node))
        return fe_error_at(c->fe, node, "%s must be a list of dimensions, got %s", what,
                           json_type_name(node));
    int rank = cJSON_GetArraySize(node);
    if (rank > IR_MAX_RANK)
        return fe_error_at(c->fe, node, "%s has %d dimensions; at most %d are supported", what, rank,
                           IR_MAX_RANK);
    int64_t dims[IR_MAX_RANK];
    int64_t numel = 1;
    int k = 0, inferred = 0;
    for (const cJSON *e = node->child; e; e = e->next, k++) {
        if (fe_eval_int(c, e, what, &dims[k])) return -1;
        if (allow_infer && dims[k] == -1) {
            if (inferred++) return fe_error_at(c->fe, e, "%s: only one dimension may be -1", what);
            continue;
        }
        if (dims[k] <= 0)
            return fe_error_at(c->fe, e, "%s: dimension %d is %lld; dimensions must be positive", what,
                               k, (long long)dims[k]);
        if (__builtin_mul_overflow(numel, dims[k], &numel) || numel > IR_MAX_NUMEL)
            return fe_error_at(c->fe, node, "%s has more than 2^40 elements", what);
    }
    *out = shape_make(rank, dims);
    return 0;
}
