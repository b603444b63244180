/* cfunc.c — the module's table of C scalar functions (cfunc.h): building, checking, float64
 * evaluation, differentiation, the finite-difference check of gradients, and printing.
 *
 * Every operation here is one pass over the node list, so a function's cost stays linear in
 * its size however it is used.
 */
#include "cfunc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

typedef struct CfKindInfo {
    const char *name;
    int arity;
    bool is_bool;
} CfKindInfo;

static const CfKindInfo KINDS[CF_KIND_COUNT] = {
#define CF_INFO(E, name, arity, is_bool) [CF_##E] = {name, arity, is_bool},
    CF_KINDS(CF_INFO)
#undef CF_INFO
};

const char *cf_kind_name(CfKind k) { return k < CF_KIND_COUNT ? KINDS[k].name : "?"; }
int cf_arity(CfKind k) { return k < CF_KIND_COUNT ? KINDS[k].arity : 0; }
bool cf_is_bool(CfKind k) { return k < CF_KIND_COUNT && KINDS[k].is_bool; }

int cf_kind_from_name(const char *name) {
    for (int k = 0; k < CF_KIND_COUNT; k++)
        if (strcmp(KINDS[k].name, name) == 0) return k;
    return -1;
}

/* ---- building ------------------------------------------------------------------------- */

static int push(CfBuilder *b, CfNode n) {
    if (b->failed) return -1;
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 32;
        CfNode *p = cap <= CF_MAX_NODES * 2 ? realloc(b->nodes, (size_t)cap * sizeof *p) : NULL;
        if (!p || b->n >= CF_MAX_NODES) {
            b->failed = true;
            return -1;
        }
        b->nodes = p;
        b->cap = cap;
    }
    b->nodes[b->n] = n;
    return b->n++;
}

int cfb_node(CfBuilder *b, CfKind kind, int a, int bb, int c) {
    if (a < -1 || bb < -1 || c < -1) b->failed = true; /* an operand that failed to build */
    return push(b, (CfNode){kind, a, bb, c, 0});
}

int cfb_const(CfBuilder *b, double v) { return push(b, (CfNode){CF_CONST, -1, -1, -1, v}); }
int cfb_arg(CfBuilder *b, int index) { return push(b, (CfNode){CF_ARG, index, -1, -1, 0}); }

int cfb_splice(CfBuilder *b, const CfNode *src, int n_src, const int *args) {
    int *map = malloc((size_t)(n_src ? n_src : 1) * sizeof *map);
    if (!map) {
        b->failed = true;
        return -1;
    }
    int last = -1;
    for (int i = 0; i < n_src; i++) {
        CfNode n = src[i];
        if (n.kind == CF_ARG) {
            last = map[i] = args[n.a];
            continue;
        }
        if (n.a >= 0) n.a = map[n.a];
        if (n.b >= 0) n.b = map[n.b];
        if (n.c >= 0) n.c = map[n.c];
        last = map[i] = push(b, n);
    }
    free(map);
    return b->failed ? -1 : last;
}

void cfb_free(CfBuilder *b) {
    free(b->nodes);
    *b = (CfBuilder){0};
}

void cfb_remap_args(CfBuilder *b, const int *map) {
    for (int i = 0; i < b->n; i++)
        if (b->nodes[i].kind == CF_ARG) b->nodes[i].a = map[b->nodes[i].a];
}

int cfb_prune(CfBuilder *b, int root) {
    if (b->failed || b->n == 0 || root < 0 || root >= b->n) return -1;
    b->n = root + 1; /* nothing after the root is reachable from it */
    bool *live = calloc((size_t)b->n, sizeof *live);
    int *map = malloc((size_t)b->n * sizeof *map);
    if (!live || !map) {
        free(live);
        free(map);
        return -1;
    }
    live[b->n - 1] = true;
    for (int i = b->n - 1; i >= 0; i--) {
        if (!live[i]) continue;
        const CfNode *n = &b->nodes[i];
        if (n->kind == CF_ARG) continue;
        if (n->a >= 0) live[n->a] = true;
        if (n->b >= 0) live[n->b] = true;
        if (n->c >= 0) live[n->c] = true;
    }
    int k = 0;
    for (int i = 0; i < b->n; i++) {
        if (!live[i]) continue;
        CfNode n = b->nodes[i];
        if (n.kind != CF_ARG) {
            if (n.a >= 0) n.a = map[n.a];
            if (n.b >= 0) n.b = map[n.b];
            if (n.c >= 0) n.c = map[n.c];
        }
        map[i] = k;
        b->nodes[k++] = n;
    }
    b->n = k;
    free(live);
    free(map);
    return 0;
}

/* ---- the table ------------------------------------------------------------------------ */

CFunc *module_add_cfunc(Module *m, const char *name, int n_params, const char *const *params,
                        const CfNode *nodes, int n_nodes, SrcLoc loc) {
    if (module_find_cfunc(m, name)) return NULL;
    CFunc *f = module_alloc(m, sizeof *f);
    f->name = module_strdup(m, name);
    f->n_params = n_params;
    f->params = module_alloc(m, sizeof *f->params * (size_t)(n_params ? n_params : 1));
    for (int i = 0; i < n_params; i++) f->params[i] = module_strdup(m, params[i]);
    CfNode *copy = module_alloc(m, sizeof *copy * (size_t)(n_nodes ? n_nodes : 1));
    memcpy(copy, nodes, sizeof *copy * (size_t)n_nodes);
    f->nodes = copy;
    f->n_nodes = n_nodes;
    f->loc = loc;
    if (loc.file) f->loc.file = module_strdup(m, loc.file);
    f->grads = module_alloc(m, sizeof *f->grads * (size_t)(n_params ? n_params : 1));
    if (m->n_cfuncs == m->cap_cfuncs) {
        int cap = m->cap_cfuncs ? 2 * m->cap_cfuncs : 8;
        CFunc **p = realloc(m->cfuncs, (size_t)cap * sizeof *p);
        if (!p) ir_bug("out of memory growing the function table");
        m->cfuncs = p;
        m->cap_cfuncs = cap;
    }
    m->cfuncs[m->n_cfuncs++] = f;
    return f;
}

/* A linear search: a model uses a handful of C functions. */
const CFunc *module_find_cfunc(const Module *m, const char *name) {
    for (int i = 0; i < m->n_cfuncs; i++)
        if (strcmp(m->cfuncs[i]->name, name) == 0) return m->cfuncs[i];
    return NULL;
}

void cfunc_set_grad(Module *m, CFunc *f, int i, const char *grad_name) {
    IR_ASSERT(i >= 0 && i < f->n_params);
    f->grads[i] = module_strdup(m, grad_name);
}

int cfunc_check(const CFunc *f, char *err, size_t err_size) {
    if (f->n_nodes <= 0) return snprintf(err, err_size, "function @%s has no nodes", f->name), -1;
    for (int i = 0; i < f->n_nodes; i++) {
        const CfNode *n = &f->nodes[i];
        if (n->kind >= CF_KIND_COUNT)
            return snprintf(err, err_size, "@%s %%%d: bad node kind", f->name, i), -1;
        if (n->kind == CF_ARG) {
            if (n->a < 0 || n->a >= f->n_params)
                return snprintf(err, err_size, "@%s %%%d: no parameter %d", f->name, i, n->a), -1;
            continue;
        }
        const int ops[3] = {n->a, n->b, n->c};
        for (int k = 0; k < cf_arity(n->kind); k++) {
            if (ops[k] < 0 || ops[k] >= i)
                return snprintf(err, err_size, "@%s %%%d: operand %d is not an earlier node",
                                f->name, i, k), -1;
            /* select's condition and the operands of and/or/not are bools, the rest floats */
            bool want_bool = n->kind == CF_AND || n->kind == CF_OR || n->kind == CF_NOT ||
                             (n->kind == CF_SELECT && k == 0);
            if (cf_is_bool(f->nodes[ops[k]].kind) != want_bool)
                return snprintf(err, err_size, "@%s %%%d (%s): operand %d must be a %s", f->name,
                                i, cf_kind_name(n->kind), k, want_bool ? "bool" : "float"), -1;
        }
    }
    if (cf_is_bool(f->nodes[f->n_nodes - 1].kind))
        return snprintf(err, err_size, "@%s: the result is a bool, not a float", f->name), -1;
    return 0;
}

/* ---- evaluation ----------------------------------------------------------------------- */

static double eval_node(const CfNode *n, const double *v, const double *args) {
    /* an arg's a is a parameter index, not a node: never read it from v */
    double a = n->a >= 0 && n->kind != CF_ARG ? v[n->a] : 0, b = n->b >= 0 ? v[n->b] : 0;
    switch (n->kind) {
    case CF_CONST: return n->value;
    case CF_ARG: return args[n->a];
    case CF_ADD: return a + b;
    case CF_SUB: return a - b;
    case CF_MUL: return a * b;
    case CF_DIV: return a / b;
    case CF_LT: return a < b;
    case CF_LE: return a <= b;
    case CF_GT: return a > b;
    case CF_GE: return a >= b;
    case CF_EQ: return a == b;
    case CF_NE: return a != b;
    case CF_AND: return a != 0 && b != 0;
    case CF_OR: return a != 0 || b != 0;
    case CF_NOT: return a == 0;
    case CF_NEG: return -a;
    case CF_EXP: return exp(a);
    case CF_LOG: return log(a);
    case CF_SQRT: return sqrt(a);
    case CF_TANH: return tanh(a);
    case CF_SIN: return sin(a);
    case CF_COS: return cos(a);
    case CF_FLOOR: return floor(a);
    case CF_ISNAN: return isnan(a);
    case CF_SELECT: return a != 0 ? b : v[n->c];
    case CF_KIND_COUNT: break;
    }
    return NAN;
}

double cfunc_eval(const CfNode *nodes, int n_nodes, const double *args, double *vals) {
    for (int i = 0; i < n_nodes; i++) vals[i] = eval_node(&nodes[i], vals, args);
    return n_nodes ? vals[n_nodes - 1] : NAN;
}

/* ---- differentiation ------------------------------------------------------------------ */

/* Derivative nodes with the zeros and ones simplified away, so a derived gradient reads like
 * one written by hand. ZERO stands for an exact zero derivative. */
enum { ZERO = -2 };

typedef struct Deriv {
    CfBuilder *b;
    int one;
} Deriv;

static bool is_const(const Deriv *d, int i, double v) {
    return i >= 0 && d->b->nodes[i].kind == CF_CONST && d->b->nodes[i].value == v;
}

static int d_mul(Deriv *d, int x, int y) {
    if (x == ZERO || y == ZERO) return ZERO;
    if (is_const(d, x, 1)) return y;
    if (is_const(d, y, 1)) return x;
    return cfb_node(d->b, CF_MUL, x, y, -1);
}

static int d_add(Deriv *d, int x, int y) {
    if (x == ZERO) return y;
    if (y == ZERO) return x;
    return cfb_node(d->b, CF_ADD, x, y, -1);
}

static int d_neg(Deriv *d, int x) { return x == ZERO ? ZERO : cfb_node(d->b, CF_NEG, x, -1, -1); }

static int d_sub(Deriv *d, int x, int y) {
    if (y == ZERO) return x;
    if (x == ZERO) return d_neg(d, y);
    return cfb_node(d->b, CF_SUB, x, y, -1);
}

static int d_div(Deriv *d, int x, int y) { return x == ZERO ? ZERO : cfb_node(d->b, CF_DIV, x, y, -1); }

/* The derivative of node i (value node i in d->b, operands' derivatives in dv). */
static int derive_node(Deriv *d, const CfNode *n, int i, const int *dv, int wrt) {
    CfBuilder *b = d->b;
    int da = n->a >= 0 && n->kind != CF_ARG ? dv[n->a] : ZERO;
    int db = n->b >= 0 ? dv[n->b] : ZERO;
    switch (n->kind) {
    case CF_ARG: return n->a == wrt ? d->one : ZERO;
    case CF_ADD: return d_add(d, da, db);
    case CF_SUB: return d_sub(d, da, db);
    case CF_MUL: return d_add(d, d_mul(d, da, n->b), d_mul(d, n->a, db));
    case CF_DIV: /* (da - y db) / b */
        return d_div(d, d_sub(d, da, d_mul(d, i, db)), n->b);
    case CF_NEG: return d_neg(d, da);
    case CF_EXP: return d_mul(d, da, i);
    case CF_LOG: return d_div(d, da, n->a);
    case CF_SQRT: /* da / (2 y) */
        return da == ZERO ? ZERO : d_div(d, da, cfb_node(b, CF_MUL, cfb_const(b, 2), i, -1));
    case CF_TANH: /* da (1 - y^2) */
        return da == ZERO ? ZERO
                          : d_mul(d, da, cfb_node(b, CF_SUB, d->one, cfb_node(b, CF_MUL, i, i, -1), -1));
    case CF_SIN: return da == ZERO ? ZERO : d_mul(d, da, cfb_node(b, CF_COS, n->a, -1, -1));
    case CF_COS:
        return da == ZERO ? ZERO : d_neg(d, d_mul(d, da, cfb_node(b, CF_SIN, n->a, -1, -1)));
    case CF_SELECT: {
        int dc = dv[n->c];
        if (db == ZERO && dc == ZERO) return ZERO;
        if (db == ZERO) db = cfb_const(b, 0);
        if (dc == ZERO) dc = cfb_const(b, 0);
        return cfb_node(b, CF_SELECT, n->a, db, dc);
    }
    default: return ZERO; /* constants, floor, and the bools: piecewise constant */
    }
}

int cfunc_derive(const CfNode *nodes, int n_nodes, int n_params, int wrt, CfBuilder *out) {
    /* The forward nodes keep their indices in out (derivative nodes follow them). */
    for (int i = 0; i < n_nodes; i++) push(out, nodes[i]);
    int *dv = malloc((size_t)(n_nodes ? n_nodes : 1) * sizeof *dv);
    if (!dv) return -1;
    Deriv d = {out, cfb_const(out, 1)};
    for (int i = 0; i < n_nodes; i++) dv[i] = derive_node(&d, &nodes[i], i, dv, wrt);
    int dy = cfb_arg(out, n_params);
    int g = dv[n_nodes - 1];
    /* dy * 0 would turn an infinite dy into NaN; the gradient of a constant is 0 */
    if (g == ZERO) cfb_const(out, 0);
    else cfb_node(out, CF_MUL, dy, g, -1);
    free(dv);
    if (out->failed) return -1;
    return cfb_prune(out, out->n - 1);
}

/* ---- the finite-difference check ------------------------------------------------------ */

/* Away from 0 and from each other, so a kink written at a round number (x < 0, x > 1) is never
 * within the step of a point. */
static const double FD_POINTS[] = {-2.37, -0.83, -0.19, 0.41, 1.13, 2.71};
#define N_FD_POINTS ((int)(sizeof FD_POINTS / sizeof FD_POINTS[0]))

/* f's arguments at point k: tensor operand i at a point of the list (shifted per operand, so
 * two operands do not move together), the scalars as given. */
static void fd_point(const CFunc *f, int n_tensor, const double *scalars, int k, double *args) {
    for (int i = 0; i < f->n_params; i++)
        args[i] = i < n_tensor ? FD_POINTS[(k + 2 * i) % N_FD_POINTS] : scalars[i - n_tensor];
}

static int check_one_grad(const CFunc *f, const CFunc *g, int n_tensor, const double *scalars,
                          int wrt, double *vals, char *err, size_t err_size) {
    double args[64], gargs[65];
    for (int k = 0; k < N_FD_POINTS; k++) {
        fd_point(f, n_tensor, scalars, k, args);
        /* the gradient's layout: (tensor params..., dy, scalar params...) */
        for (int i = 0; i < f->n_params; i++) gargs[i < n_tensor ? i : i + 1] = args[i];
        gargs[n_tensor] = 1.0; /* dy */
        double x = args[wrt], h = 1e-6 * fmax(1.0, fabs(x));
        double want_g = cfunc_eval(g->nodes, g->n_nodes, gargs, vals);
        args[wrt] = x + h;
        double up = cfunc_eval(f->nodes, f->n_nodes, args, vals);
        args[wrt] = x - h;
        double down = cfunc_eval(f->nodes, f->n_nodes, args, vals);
        args[wrt] = x;
        double fd = (up - down) / (2 * h);
        if (!isfinite(want_g) || !isfinite(fd)) continue; /* outside the function's domain */
        /* central differences in float64 are good to ~1e-9 here; 1e-5 relative separates a
         * wrong formula from rounding with a wide margin */
        if (fabs(want_g - fd) > 1e-5 * (1.0 + fabs(fd))) {
            int n = snprintf(err, err_size, "the gradient of %s with respect to '%s' disagrees "
                             "with finite differences at (", f->name, f->params[wrt]);
            for (int i = 0; i < f->n_params && n > 0 && (size_t)n < err_size; i++)
                n += snprintf(err + n, err_size - (size_t)n, "%s%s=%g", i ? ", " : "",
                              f->params[i], args[i]);
            if (n > 0 && (size_t)n < err_size)
                snprintf(err + n, err_size - (size_t)n, "): %.9g, finite differences %.9g",
                         want_g, fd);
            return -1;
        }
    }
    return 0;
}

int cfunc_check_grads(const Module *m, const CFunc *f, int n_tensor, const double *scalars,
                      int *bad, char *err, size_t err_size) {
    if (f->n_params >= 63) return snprintf(err, err_size, "%s has too many parameters", f->name), -1;
    if (n_tensor < 0 || n_tensor > f->n_params)
        return snprintf(err, err_size, "%s: %d tensor operands of %d parameters", f->name,
                        n_tensor, f->n_params), -1;
    for (int i = 0; i < n_tensor; i++) {
        const CFunc *g = f->grads && f->grads[i] ? module_find_cfunc(m, f->grads[i]) : NULL;
        if (!g) continue;
        if (g->n_params != f->n_params + 1) {
            *bad = i;
            return snprintf(err, err_size, "%s: gradient %s takes %d parameters, not %d", f->name,
                            g->name, g->n_params, f->n_params + 1), -1;
        }
        int n = f->n_nodes > g->n_nodes ? f->n_nodes : g->n_nodes;
        double *vals = malloc((size_t)n * sizeof *vals);
        if (!vals) return snprintf(err, err_size, "out of memory"), -1;
        int rc = check_one_grad(f, g, n_tensor, scalars, i, vals, err, err_size);
        free(vals);
        if (rc) {
            *bad = i;
            return -1;
        }
    }
    return 0;
}
