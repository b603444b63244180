/* cfunc.h — scalar functions written in C (docs/custom-ops.md), as the module stores them.
 *
 * A model file may name C sources ("functions") whose pure scalar functions
 * `float NAME(float a, ...)` the `call {fn="NAME"}` op applies elementwise. The frontend reads
 * each body with libclang (frontend/cfunc_clang.c) and turns it into the straight-line
 * expression DAG below: locals become shared nodes, if/else and ?: become selects, calls to
 * other accepted functions are inlined. Everything downstream works from this one form: the
 * IR text prints and parses it (`cfunc @NAME(...) { ... }`), the reference interpreter
 * evaluates it in float64, the kernel hook (codegen/op_exprs.c) renders it through the kernel
 * description, and the gradient rule calls the functions it derives from it.
 *
 * Nodes are in topological order (operands before users); the last node is the result. Every
 * node is either a float or a bool (comparisons, &&, ||, !, isnan); CF_SELECT takes a bool
 * and two floats, and the frontend inserts the conversions C does implicitly.
 */
#ifndef CAPC_CFUNC_H
#define CAPC_CFUNC_H

#include "ir.h"

#define CF_KINDS(X)                                                                        \
    X(CONST, "const", 0, false) X(ARG, "arg", 0, false)                                    \
    X(ADD, "add", 2, false) X(SUB, "sub", 2, false) X(MUL, "mul", 2, false)                \
    X(DIV, "div", 2, false)                                                                \
    X(LT, "lt", 2, true) X(LE, "le", 2, true) X(GT, "gt", 2, true) X(GE, "ge", 2, true)     \
    X(EQ, "eq", 2, true) X(NE, "ne", 2, true)                                              \
    X(AND, "and", 2, true) X(OR, "or", 2, true) X(NOT, "not", 1, true)                     \
    X(NEG, "neg", 1, false) X(EXP, "exp", 1, false) X(LOG, "log", 1, false)                \
    X(SQRT, "sqrt", 1, false) X(TANH, "tanh", 1, false) X(SIN, "sin", 1, false)             \
    X(COS, "cos", 1, false) X(FLOOR, "floor", 1, false) X(ISNAN, "isnan", 1, true)          \
    X(SELECT, "select", 3, false)

typedef enum {
#define CF_ENUM(E, name, arity, is_bool) CF_##E,
    CF_KINDS(CF_ENUM)
#undef CF_ENUM
    CF_KIND_COUNT
} CfKind;

typedef struct CfNode {
    CfKind kind;
    int a, b, c;  /* operand node indices (-1 unused); CF_ARG: a = parameter index */
    double value; /* CF_CONST */
} CfNode;

const char *cf_kind_name(CfKind k);
int cf_kind_from_name(const char *name); /* -1 if unknown */
int cf_arity(CfKind k);                  /* operands: 0 for const and arg */
bool cf_is_bool(CfKind k);               /* result is a bool (comparison, logic, isnan) */

typedef struct CFunc {
    const char *name;
    const char **params; /* n_params names (printing and error messages) */
    int n_params;
    const CfNode *nodes; /* topological; nodes[n_nodes - 1] is the result */
    int n_nodes;
    SrcLoc loc;          /* the C definition (for a gradient: what it was derived from) */
    /* grads[i]: the function computing dy * d(this)/d(param i); NULL entries (or grads NULL)
     * where no gradient is known. A call binds its tensor operands to the first parameters
     * and its scalar arguments (the op's "args") to the rest; the gradient of a function
     * called with n_tensor operands takes (tensor params..., dy, scalar params...), so the
     * gradient's own call binds the same way: operands (x..., dy), the same args. With no
     * scalars that is (params..., dy). Parameters passed as scalars have no gradient. */
    const char **grads;
} CFunc;

/* ---- building (a growable node list, malloc'd; free with cfb_free) ---- */
typedef struct CfBuilder {
    CfNode *nodes;
    int n, cap;
    bool failed; /* out of memory, or past CF_MAX_NODES */
} CfBuilder;

/* Bodies that inline and branch can grow; past this a function is refused, not compiled. */
#define CF_MAX_NODES 100000

/* Appends a node and returns its index (-1 once failed). Constant operands of arithmetic do
 * NOT fold: the tree keeps what the C source said, so f32 rendering matches C's. */
int cfb_node(CfBuilder *b, CfKind kind, int a, int bb, int c);
int cfb_const(CfBuilder *b, double v);
int cfb_arg(CfBuilder *b, int index);
/* Copies src's nodes into b with its arguments replaced by the nodes args[i] (inlining);
 * returns the index of src's result in b. */
int cfb_splice(CfBuilder *b, const CfNode *src, int n_src, const int *args);
void cfb_free(CfBuilder *b);

/* ---- the module's table ---- */
/* Copies name, params and nodes into m (grads start NULL). NULL if the name is taken. */
CFunc *module_add_cfunc(Module *m, const char *name, int n_params, const char *const *params,
                        const CfNode *nodes, int n_nodes, SrcLoc loc);
const CFunc *module_find_cfunc(const Module *m, const char *name);
/* Sets f->grads[i] (the name is copied into m). */
void cfunc_set_grad(Module *m, CFunc *f, int i, const char *grad_name);

/* Structural check (operand indices in range and before their user, kinds and bool/float
 * types agree, result a float, args in range). 0, or -1 with a message. */
int cfunc_check(const CFunc *f, char *err, size_t err_size);

/* float64 evaluation: vals must hold n_nodes doubles; returns the result. A select reads
 * only its chosen side, and no node traps, so evaluating every node is safe. */
double cfunc_eval(const CfNode *nodes, int n_nodes, const double *args, double *vals);

/* Derivative: into out (empty) the nodes of dy * d(f)/d(param wrt) as a function of
 * (f's params..., dy), dy being parameter n_params. Forward rules per node; a select
 * differentiates by branch, comparisons and floor have zero derivative. Returns 0 or -1 (out
 * of memory / too large). */
int cfunc_derive(const CfNode *nodes, int n_nodes, int n_params, int wrt, CfBuilder *out);
/* Renumbers the CF_ARG nodes of b: parameter k becomes map[k]. */
void cfb_remap_args(CfBuilder *b, const int *map);
/* Keeps the nodes that root uses (root included, in their order), so root becomes the last
 * node: the result. Returns 0, or -1 (failed builder, root out of range). */
int cfb_prune(CfBuilder *b, int root);

/* Compares each grads[i] (i < n_tensor) of f, called with n_tensor tensor operands and the
 * scalar arguments scalars[0 .. n_params - n_tensor) for its other parameters (dy = 1),
 * against central finite differences of f at a few fixed points where both are finite: the
 * tensor operands vary over the points, the scalars keep their values. Returns 0, or -1 with
 * *bad = the operand and a message naming the operand, the point and both values. */
int cfunc_check_grads(const Module *m, const CFunc *f, int n_tensor, const double *scalars,
                      int *bad, char *err, size_t err_size);

#endif
