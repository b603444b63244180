/* cfunc_clang.c — the model file's "functions": C sources read with libclang
 * (docs/custom-ops.md).
 *
 * Each file is parsed as C11; libclang's own errors are reported at their position. Every
 * top-level item of the file must be a function of floats, and every definition's body is
 * translated into the module's expression form (ir/cfunc.h) once all files are parsed, so a
 * function may call one defined in another file of the list. Translation walks the AST:
 *
 *   - locals and parameters map to nodes (an environment, one slot per declaration);
 *     assignment rebinds the slot, so the result is straight-line SSA;
 *   - an if/else without a return in it runs both branches on copies of the environment and
 *     merges every slot that differs with a select;
 *   - an if/else that returns continues each branch with the statements after the if, so
 *     each path ends in its own return and the two results are selected (only the paths
 *     that need it are duplicated: `if (c) return a;` duplicates nothing);
 *   - calls to the math functions the kernel description knows become nodes, calls to other
 *     accepted functions are inlined (their own translation, spliced with the arguments).
 *
 * Anything else is refused at its FILE:LINE:COL. libclang 14 has no operator-kind query, so
 * an operator is read from the tokens between its operands.
 */
#include <clang-c/Index.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cfunc.h"
#include "fe_internal.h"

#define CS_MAX_LOCALS 256
#define CS_MAX_PARAMS 32

typedef enum { DEF_PENDING, DEF_BUSY, DEF_DONE } DefState;

typedef struct CDef {
    char *name;
    CXCursor cursor; /* the definition */
    int file;        /* index in CSources.paths */
    int line, col;
    int n_params;
    char *params[CS_MAX_PARAMS];
    DefState state;
    CfBuilder body; /* DEF_DONE: the translation, params as CF_ARG nodes, result last */
    /* Once called: how many leading parameters its calls pass as tensors (the rest are
     * scalar arguments), where it was first called, and the scalar values the gradients were
     * last checked at (a model repeating one call checks once). */
    int n_tensor;
    SrcLoc first_call;
    double checked[CS_MAX_PARAMS];
} CDef;

struct CSources {
    CXIndex index;
    CXTranslationUnit *tus;
    char **paths;
    int n_files;
    CDef *defs;
    int n_defs, cap_defs;
};

/* ---- errors at C positions ---------------------------------------------------------------- */

typedef struct Pos {
    const char *file;
    unsigned line, col;
} Pos;

static Pos cursor_pos(CXCursor c) {
    CXFile file;
    unsigned line = 0, col = 0;
    clang_getSpellingLocation(clang_getCursorLocation(c), &file, &line, &col, NULL);
    return (Pos){NULL, line, col};
}

static int cs_error_pos(Frontend *fe, const char *file, unsigned line, unsigned col,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int cs_error_pos(Frontend *fe, const char *file, unsigned line, unsigned col,
                        const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    diag_set_in_file(fe->d, file, (int)line, (int)col, "%s", msg);
    return -1;
}

/* The translation context: the function being translated and its environment. */
typedef struct Tr {
    Frontend *fe;
    CSources *cs;
    CDef *def;
    CXTranslationUnit tu;
    CfBuilder *b;
    CXCursor decls[CS_MAX_LOCALS]; /* slot -> its ParmDecl / VarDecl */
    int n_decls;
} Tr;

#define tr_error(t, cursor, ...)                                                           \
    cs_error_pos((t)->fe, (t)->cs->paths[(t)->def->file], cursor_pos(cursor).line,        \
                 cursor_pos(cursor).col, __VA_ARGS__)

static char *spelling(CXString s) {
    const char *c = clang_getCString(s);
    char *copy = strdup(c ? c : "");
    clang_disposeString(s);
    return copy;
}

/* ---- small AST helpers ---------------------------------------------------------------- */

typedef struct Kids {
    CXCursor items[64];
    int n;
} Kids;

static enum CXChildVisitResult collect(CXCursor c, CXCursor parent, CXClientData data) {
    (void)parent;
    Kids *k = data;
    if (k->n < 64) k->items[k->n] = c;
    k->n++;
    return CXChildVisit_Continue;
}

static int kids_of(CXCursor c, Kids *k) {
    k->n = 0;
    clang_visitChildren(c, collect, k);
    return k->n;
}

static enum CXTypeKind type_kind(CXType t) { return clang_getCanonicalType(t).kind; }
static enum CXTypeKind expr_type(CXCursor c) { return type_kind(clang_getCursorType(c)); }

/* The spelling of the first punctuation token at or after byte offset `from` in c's extent
 * (an operator between its operands), in buf. */
static void operator_after(CXTranslationUnit tu, CXCursor c, unsigned from, char *buf,
                           size_t size) {
    CXToken *toks = NULL;
    unsigned n = 0;
    buf[0] = '\0';
    clang_tokenize(tu, clang_getCursorExtent(c), &toks, &n);
    for (unsigned i = 0; i < n; i++) {
        unsigned off;
        clang_getSpellingLocation(clang_getTokenLocation(tu, toks[i]), NULL, NULL, NULL, &off);
        if (off < from || clang_getTokenKind(toks[i]) != CXToken_Punctuation) continue;
        char *s = spelling(clang_getTokenSpelling(tu, toks[i]));
        snprintf(buf, size, "%s", s ? s : "");
        free(s);
        break;
    }
    clang_disposeTokens(tu, toks, n);
}

static unsigned end_offset(CXCursor c) {
    unsigned off = 0;
    clang_getSpellingLocation(clang_getRangeEnd(clang_getCursorExtent(c)), NULL, NULL, NULL, &off);
    return off;
}

static unsigned start_offset(CXCursor c) {
    unsigned off = 0;
    clang_getSpellingLocation(clang_getRangeStart(clang_getCursorExtent(c)), NULL, NULL, NULL, &off);
    return off;
}

/* A binary operator's spelling: the first punctuation after its left operand. */
static void binary_op(Tr *t, CXCursor c, const Kids *k, char *buf, size_t size) {
    operator_after(t->tu, c, k->n > 0 ? end_offset(k->items[0]) : 0, buf, size);
}

/* A unary operator's spelling: its first token when prefix, else its last (postfix). */
static void unary_op(Tr *t, CXCursor c, const Kids *k, char *buf, size_t size, bool *postfix) {
    unsigned operand = k->n > 0 ? start_offset(k->items[0]) : 0;
    *postfix = operand == start_offset(c);
    operator_after(t->tu, c, *postfix ? end_offset(k->items[0]) : start_offset(c), buf, size);
}

/* ---- the environment ------------------------------------------------------------------ */

typedef struct CEnv {
    int node[CS_MAX_LOCALS]; /* -1: declared, not assigned yet */
} CEnv;

static int slot_of(const Tr *t, CXCursor decl) {
    for (int i = 0; i < t->n_decls; i++)
        if (clang_equalCursors(t->decls[i], decl)) return i;
    return -1;
}

/* A declaration's slot; one translated twice (the statements after a returning if, on each
 * path) keeps its slot. */
static int declare(Tr *t, CXCursor decl) {
    int old = slot_of(t, decl);
    if (old >= 0) return old;
    if (t->n_decls == CS_MAX_LOCALS)
        return tr_error(t, decl, "more than %d local variables", CS_MAX_LOCALS);
    t->decls[t->n_decls] = decl;
    return t->n_decls++;
}

/* ---- expressions ---------------------------------------------------------------------- */

/* A translated expression: its node and whether it is a bool (a comparison or logic). */
typedef struct TExpr {
    int node; /* -1: failed (the error is set) */
    bool is_bool;
} TExpr;

static const TExpr TFAIL = {-1, false};
static TExpr tr_expr(Tr *t, const CEnv *env, CXCursor c);

static int as_float(Tr *t, TExpr e) {
    if (e.node < 0 || !e.is_bool) return e.node;
    return cfb_node(t->b, CF_SELECT, e.node, cfb_const(t->b, 1), cfb_const(t->b, 0));
}

static int as_bool(Tr *t, TExpr e) {
    if (e.node < 0 || e.is_bool) return e.node;
    return cfb_node(t->b, CF_NE, e.node, cfb_const(t->b, 0), -1);
}

static int tr_float(Tr *t, const CEnv *env, CXCursor c) { return as_float(t, tr_expr(t, env, c)); }
static int tr_cond(Tr *t, const CEnv *env, CXCursor c) { return as_bool(t, tr_expr(t, env, c)); }

static TExpr fnode(Tr *t, int node) { return (TExpr){t->b->failed ? -1 : node, false}; }
static TExpr bnode(Tr *t, int node) { return (TExpr){t->b->failed ? -1 : node, true}; }

/* Where a double comes from in an expression of type double: the first double constant,
 * variable or call inside it, so the message points at the cause. */
typedef struct DoubleHunt {
    CXCursor found;
    bool any;
} DoubleHunt;

static enum CXChildVisitResult hunt_double(CXCursor c, CXCursor parent, CXClientData data) {
    (void)parent;
    DoubleHunt *h = data;
    enum CXCursorKind k = clang_getCursorKind(c);
    if ((k == CXCursor_FloatingLiteral || k == CXCursor_DeclRefExpr || k == CXCursor_CallExpr) &&
        expr_type(c) == CXType_Double) {
        h->found = c;
        h->any = true;
        return CXChildVisit_Break;
    }
    return CXChildVisit_Recurse;
}

static TExpr double_error(Tr *t, CXCursor c) {
    DoubleHunt h = {c, false};
    if (clang_getCursorKind(c) != CXCursor_FloatingLiteral) clang_visitChildren(c, hunt_double, &h);
    CXCursor at = h.any ? h.found : c;
    char *text = spelling(clang_getCursorSpelling(at));
    enum CXCursorKind k = clang_getCursorKind(at);
    if (k == CXCursor_FloatingLiteral)
        tr_error(t, at, "double constant: custom functions compute in float (write it with an f "
                 "suffix)");
    else if (k == CXCursor_CallExpr)
        tr_error(t, at, "'%s' returns double: custom functions compute in float (call %sf)", text,
                 text);
    else if (k == CXCursor_DeclRefExpr)
        tr_error(t, at, "'%s' is a double: custom functions compute in float", text);
    else
        tr_error(t, at, "double arithmetic: custom functions compute in float");
    free(text);
    return TFAIL;
}

static TExpr tr_literal(Tr *t, CXCursor c) {
    if (expr_type(c) == CXType_Double) return double_error(t, c);
    CXEvalResult r = clang_Cursor_Evaluate(c);
    if (!r) return tr_error(t, c, "cannot evaluate this constant"), TFAIL;
    double v = clang_EvalResult_getKind(r) == CXEval_Int ? (double)clang_EvalResult_getAsLongLong(r)
                                                         : clang_EvalResult_getAsDouble(r);
    clang_EvalResult_dispose(r);
    return fnode(t, cfb_const(t->b, v));
}

static bool is_global_var(CXCursor decl) {
    return clang_getCursorKind(decl) == CXCursor_VarDecl &&
           (clang_getCursorKind(clang_getCursorSemanticParent(decl)) == CXCursor_TranslationUnit ||
            clang_Cursor_getStorageClass(decl) == CX_SC_Static ||
            clang_Cursor_getStorageClass(decl) == CX_SC_Extern);
}

static TExpr tr_ref(Tr *t, const CEnv *env, CXCursor c) {
    CXCursor decl = clang_getCursorReferenced(c);
    char *name = spelling(clang_getCursorSpelling(c));
    int slot = slot_of(t, decl);
    TExpr r = TFAIL;
    if (slot >= 0 && env->node[slot] >= 0)
        r = fnode(t, env->node[slot]);
    else if (slot >= 0)
        tr_error(t, c, "'%s' is read before it is assigned", name);
    else if (is_global_var(decl))
        tr_error(t, c, "global variable '%s': custom functions read only their parameters and "
                 "locals", name);
    else if (clang_getCursorKind(decl) == CXCursor_FunctionDecl)
        tr_error(t, c, "function '%s' used as a value (only calls are accepted)", name);
    else
        tr_error(t, c, "'%s' is not a parameter or local variable", name);
    free(name);
    return r;
}

static TExpr tr_binary(Tr *t, const CEnv *env, CXCursor c) {
    Kids k;
    if (kids_of(c, &k) != 2) return tr_error(t, c, "unexpected operator form"), TFAIL;
    char op[8];
    binary_op(t, c, &k, op, sizeof op);
    static const struct { const char *op; CfKind kind; int cls; } OPS[] = {
        {"+", CF_ADD, 0}, {"-", CF_SUB, 0}, {"*", CF_MUL, 0}, {"/", CF_DIV, 0},
        {"<", CF_LT, 1}, {"<=", CF_LE, 1}, {">", CF_GT, 1}, {">=", CF_GE, 1},
        {"==", CF_EQ, 1}, {"!=", CF_NE, 1}, {"&&", CF_AND, 2}, {"||", CF_OR, 2}};
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++) {
        if (strcmp(OPS[i].op, op) != 0) continue;
        if (OPS[i].cls == 2) {
            int a = tr_cond(t, env, k.items[0]);
            int b = a < 0 ? -1 : tr_cond(t, env, k.items[1]);
            return b < 0 ? TFAIL : bnode(t, cfb_node(t->b, OPS[i].kind, a, b, -1));
        }
        if (OPS[i].cls == 0 && expr_type(c) != CXType_Float)
            return tr_error(t, c, "%s arithmetic: custom functions compute in float",
                            expr_type(c) == CXType_Int ? "int" : "non-float"), TFAIL;
        int a = tr_float(t, env, k.items[0]);
        int b = a < 0 ? -1 : tr_float(t, env, k.items[1]);
        if (b < 0) return TFAIL;
        TExpr r = {cfb_node(t->b, OPS[i].kind, a, b, -1), OPS[i].cls == 1};
        if (t->b->failed) r.node = -1;
        return r;
    }
    if (strcmp(op, "=") == 0)
        return tr_error(t, c, "assignment inside an expression (assign in a statement of its own)"), TFAIL;
    return tr_error(t, c, "operator '%s' is not accepted in a custom function", op), TFAIL;
}

static TExpr tr_unary(Tr *t, const CEnv *env, CXCursor c) {
    Kids k;
    if (kids_of(c, &k) != 1) return tr_error(t, c, "unexpected operator form"), TFAIL;
    char op[8];
    bool postfix;
    unary_op(t, c, &k, op, sizeof op, &postfix);
    if (!postfix && strcmp(op, "-") == 0) {
        int a = tr_float(t, env, k.items[0]);
        return a < 0 ? TFAIL : fnode(t, cfb_node(t->b, CF_NEG, a, -1, -1));
    }
    if (!postfix && strcmp(op, "+") == 0) return fnode(t, tr_float(t, env, k.items[0]));
    if (!postfix && strcmp(op, "!") == 0) {
        int a = tr_cond(t, env, k.items[0]);
        return a < 0 ? TFAIL : bnode(t, cfb_node(t->b, CF_NOT, a, -1, -1));
    }
    if (strcmp(op, "++") == 0 || strcmp(op, "--") == 0)
        return tr_error(t, c, "'%s' has a side effect (write x = x %c 1.0f)", op, op[0]), TFAIL;
    if (strcmp(op, "*") == 0 || strcmp(op, "&") == 0)
        return tr_error(t, c, "pointers are not accepted in a custom function"), TFAIL;
    return tr_error(t, c, "operator '%s' is not accepted in a custom function", op), TFAIL;
}

static TExpr tr_conditional(Tr *t, const CEnv *env, CXCursor c) {
    Kids k;
    if (kids_of(c, &k) != 3) return tr_error(t, c, "unexpected ?: form"), TFAIL;
    int cond = tr_cond(t, env, k.items[0]);
    int a = cond < 0 ? -1 : tr_float(t, env, k.items[1]);
    int b = a < 0 ? -1 : tr_float(t, env, k.items[2]);
    return b < 0 ? TFAIL : fnode(t, cfb_node(t->b, CF_SELECT, cond, a, b));
}

/* ---- calls ---------------------------------------------------------------------------- */

typedef struct MathFn {
    const char *name;
    int n_args;
    CfKind kind; /* CF_CONST: built from other nodes (fmaxf, fminf, fabsf) */
} MathFn;

static const MathFn MATH[] = {
    {"expf", 1, CF_EXP}, {"logf", 1, CF_LOG}, {"sqrtf", 1, CF_SQRT}, {"tanhf", 1, CF_TANH},
    {"sinf", 1, CF_SIN}, {"cosf", 1, CF_COS}, {"floorf", 1, CF_FLOOR},
    {"fmaxf", 2, CF_CONST}, {"fminf", 2, CF_CONST}, {"fabsf", 1, CF_CONST},
};

/* fmaxf/fminf as C defines them (a NaN operand yields the other one) and fabsf (+0 for -0),
 * from selects: their derivatives then follow by branch. */
static int math_composite(CfBuilder *b, const char *name, const int *a) {
    if (strcmp(name, "fabsf") == 0) {
        int neg = cfb_node(b, CF_LT, a[0], cfb_const(b, 0), -1);
        return cfb_node(b, CF_SELECT, neg, cfb_node(b, CF_NEG, a[0], -1, -1),
                        cfb_node(b, CF_ADD, a[0], cfb_const(b, 0), -1));
    }
    CfKind cmp = strcmp(name, "fmaxf") == 0 ? CF_GE : CF_LE;
    int keep_a = cfb_node(b, CF_OR, cfb_node(b, CF_ISNAN, a[1], -1, -1),
                          cfb_node(b, cmp, a[0], a[1], -1), -1);
    return cfb_node(b, CF_SELECT, keep_a, a[0], a[1]);
}

static const MathFn *find_math(const char *name) {
    for (size_t i = 0; i < sizeof MATH / sizeof MATH[0]; i++)
        if (strcmp(MATH[i].name, name) == 0) return &MATH[i];
    return NULL;
}

static CDef *find_def(CSources *cs, const char *name) {
    for (int i = 0; i < cs->n_defs; i++)
        if (strcmp(cs->defs[i].name, name) == 0) return &cs->defs[i];
    return NULL;
}

static int translate_def(Frontend *fe, CSources *cs, CDef *d);

static TExpr tr_call(Tr *t, const CEnv *env, CXCursor c) {
    char *name = spelling(clang_getCursorSpelling(c));
    int n = clang_Cursor_getNumArguments(c);
    const MathFn *m = name ? find_math(name) : NULL;
    CDef *callee = name && !m ? find_def(t->cs, name) : NULL;
    TExpr r = TFAIL;
    int args[CS_MAX_PARAMS];
    if (!m && !callee) {
        char as_float[128];
        snprintf(as_float, sizeof as_float, "%sf", name ? name : "");
        if (find_math(as_float))
            tr_error(t, c, "'%s' computes in double: call %sf", name, name);
        else
            tr_error(t, c, "unknown function '%s' (custom functions may call the float math "
                     "functions expf, logf, sqrtf, tanhf, sinf, cosf, floorf, fmaxf, fminf, "
                     "fabsf and the other functions of their files)", name ? name : "?");
        goto done;
    }
    int want = m ? m->n_args : callee->n_params;
    if (n != want) {
        tr_error(t, c, "'%s' takes %d argument%s, got %d", name, want, want == 1 ? "" : "s", n);
        goto done;
    }
    for (int i = 0; i < n; i++)
        if ((args[i] = tr_float(t, env, clang_Cursor_getArgument(c, (unsigned)i))) < 0) goto done;
    if (m) {
        r = fnode(t, m->kind == CF_CONST ? math_composite(t->b, name, args)
                                         : cfb_node(t->b, m->kind, args[0], -1, -1));
    } else if (callee->state == DEF_BUSY) {
        tr_error(t, c, "recursive call to '%s' (custom functions may not recurse)", name);
    } else if (translate_def(t->fe, t->cs, callee) == 0) {
        r = fnode(t, cfb_splice(t->b, callee->body.nodes, callee->body.n, args));
    }
done:
    free(name);
    return r;
}

static TExpr tr_expr(Tr *t, const CEnv *env, CXCursor c) {
    enum CXCursorKind k = clang_getCursorKind(c);
    enum CXTypeKind ty = expr_type(c);
    if (ty == CXType_Double || ty == CXType_LongDouble) return double_error(t, c);
    if (ty == CXType_Pointer || ty == CXType_ConstantArray || ty == CXType_IncompleteArray)
        return tr_error(t, c, "pointers and arrays are not accepted in a custom function"), TFAIL;
    if (ty != CXType_Float && ty != CXType_Int)
        return tr_error(t, c, "expression of a type other than float"), TFAIL;
    Kids kids;
    switch (k) {
    case CXCursor_IntegerLiteral:
    case CXCursor_FloatingLiteral: return tr_literal(t, c);
    case CXCursor_ParenExpr:
    case CXCursor_UnexposedExpr: /* implicit conversions: float <-> the int of a comparison */
        if (kids_of(c, &kids) != 1) break;
        if (ty == CXType_Int && expr_type(kids.items[0]) == CXType_Float)
            return tr_error(t, c, "conversion of a float to int"), TFAIL;
        return tr_expr(t, env, kids.items[0]);
    case CXCursor_CStyleCastExpr:
        if (kids_of(c, &kids) < 1 || ty != CXType_Float) break;
        return tr_expr(t, env, kids.items[kids.n - 1]);
    case CXCursor_DeclRefExpr:
        if (ty != CXType_Float && clang_getCursorKind(clang_getCursorReferenced(c)) != CXCursor_FunctionDecl) {
            char *name = spelling(clang_getCursorSpelling(c));
            tr_error(t, c, "'%s' is not a float", name);
            free(name);
            return TFAIL;
        }
        return tr_ref(t, env, c);
    case CXCursor_BinaryOperator: return tr_binary(t, env, c);
    case CXCursor_CompoundAssignOperator:
        return tr_error(t, c, "assignment inside an expression (assign in a statement of its own)"), TFAIL;
    case CXCursor_UnaryOperator: return tr_unary(t, env, c);
    case CXCursor_ConditionalOperator: return tr_conditional(t, env, c);
    case CXCursor_CallExpr: return tr_call(t, env, c);
    default: break;
    }
    char *kind = spelling(clang_getCursorKindSpelling(k));
    tr_error(t, c, "this expression (%s) is not accepted in a custom function", kind);
    free(kind);
    return TFAIL;
}

/* ---- statements ----------------------------------------------------------------------- */

/* What is left to run after the current statement: the rest of a compound statement, then
 * what follows it (a linked list up the C stack). */
typedef struct Cont {
    const Kids *stmts;
    int i;
    const struct Cont *next;
} Cont;

enum { FALLTHROUGH = -3 };

static int tr_seq(Tr *t, CEnv *env, Cont k);

static enum CXChildVisitResult find_return(CXCursor c, CXCursor parent, CXClientData data) {
    (void)parent;
    if (clang_getCursorKind(c) != CXCursor_ReturnStmt) return CXChildVisit_Recurse;
    *(bool *)data = true;
    return CXChildVisit_Break;
}

static bool has_return(CXCursor c) {
    bool found = clang_getCursorKind(c) == CXCursor_ReturnStmt;
    if (!found) clang_visitChildren(c, find_return, &found);
    return found;
}

static int tr_decl(Tr *t, CEnv *env, CXCursor stmt) {
    Kids vars;
    kids_of(stmt, &vars);
    for (int i = 0; i < vars.n && i < 64; i++) {
        CXCursor v = vars.items[i];
        char *name = spelling(clang_getCursorSpelling(v));
        int rc = 0;
        if (clang_getCursorKind(v) != CXCursor_VarDecl)
            rc = tr_error(t, v, "only float variables may be declared in a custom function");
        else if (clang_Cursor_getStorageClass(v) == CX_SC_Static)
            rc = tr_error(t, v, "static local '%s' keeps state between calls (not accepted)", name);
        else if (type_kind(clang_getCursorType(v)) != CXType_Float)
            rc = tr_error(t, v, "local '%s' must be a float", name);
        free(name);
        if (rc) return -1;
        int slot = declare(t, v);
        if (slot < 0) return -1;
        env->node[slot] = -1;
        Kids init;
        kids_of(v, &init);
        if (init.n > 0 && clang_isExpression(clang_getCursorKind(init.items[init.n - 1])))
            if ((env->node[slot] = tr_float(t, env, init.items[init.n - 1])) < 0) return -1;
    }
    return 0;
}

/* `x = e;` and `x op= e;` to a parameter or local. */
static int tr_assign(Tr *t, CEnv *env, CXCursor stmt, bool compound) {
    Kids k;
    if (kids_of(stmt, &k) != 2) return tr_error(t, stmt, "unexpected assignment form");
    CXCursor lhs = k.items[0];
    while (clang_getCursorKind(lhs) == CXCursor_ParenExpr || clang_getCursorKind(lhs) == CXCursor_UnexposedExpr) {
        Kids inner;
        if (kids_of(lhs, &inner) != 1) break;
        lhs = inner.items[0];
    }
    if (clang_getCursorKind(lhs) != CXCursor_DeclRefExpr)
        return tr_error(t, lhs, "only local variables and parameters may be assigned");
    CXCursor decl = clang_getCursorReferenced(lhs);
    int slot = slot_of(t, decl);
    if (slot < 0) {
        char *name = spelling(clang_getCursorSpelling(lhs));
        tr_error(t, lhs, "assignment to '%s', which is not a local (custom functions have no side "
                 "effects)", name);
        free(name);
        return -1;
    }
    char op[8];
    binary_op(t, stmt, &k, op, sizeof op);
    int v = tr_float(t, env, k.items[1]);
    if (v < 0) return -1;
    if (!compound) {
        env->node[slot] = v;
        return 0;
    }
    static const struct { const char *op; CfKind kind; } OPS[] = {
        {"+=", CF_ADD}, {"-=", CF_SUB}, {"*=", CF_MUL}, {"/=", CF_DIV}};
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++) {
        if (strcmp(op, OPS[i].op) != 0) continue;
        if (env->node[slot] < 0) return tr_error(t, lhs, "read before it is assigned");
        env->node[slot] = cfb_node(t->b, OPS[i].kind, env->node[slot], v, -1);
        return t->b->failed ? -1 : 0;
    }
    return tr_error(t, stmt, "operator '%s' is not accepted in a custom function", op);
}

/* if/else whose branches do not return: each branch on a copy, then a select per slot. */
static int tr_if_merge(Tr *t, CEnv *env, int cond, const Kids *k) {
    CEnv *br = malloc(2 * sizeof *br);
    if (!br) return tr_error(t, k->items[0], "out of memory");
    int rc = 0;
    for (int side = 0; side < 2 && rc == 0; side++) {
        br[side] = *env;
        if (k->n < 2 + side) continue;
        Kids one = {.items = {k->items[1 + side]}, .n = 1};
        int r = tr_seq(t, &br[side], (Cont){&one, 0, NULL});
        if (r != FALLTHROUGH) rc = -1;
    }
    for (int s = 0; s < t->n_decls && rc == 0; s++) {
        int a = br[0].node[s], b = br[1].node[s];
        if (a == b) continue;
        /* a local assigned on one side only is unassigned after the if when it was before */
        env->node[s] = a < 0 || b < 0 ? -1 : cfb_node(t->b, CF_SELECT, cond, a, b);
    }
    free(br);
    return rc == 0 && !t->b->failed ? 0 : -1;
}

/* if/else that returns: each branch continues with what follows the if. */
static int tr_if_cont(Tr *t, const CEnv *env, int cond, const Kids *k, const Cont *rest) {
    CEnv *br = malloc(sizeof *br);
    if (!br) return tr_error(t, k->items[0], "out of memory");
    int r[2];
    for (int side = 0; side < 2; side++) {
        *br = *env;
        Kids one = {.items = {k->n >= 2 + side ? k->items[1 + side] : k->items[0]},
                    .n = k->n >= 2 + side};
        r[side] = tr_seq(t, br, (Cont){&one, 0, rest});
        if (r[side] < 0) break;
    }
    free(br);
    if (r[0] < 0) return r[0];
    if (r[1] < 0) return r[1];
    int s = cfb_node(t->b, CF_SELECT, cond, r[0], r[1]);
    return t->b->failed ? -1 : s;
}

static int tr_stmt_error(Tr *t, CXCursor s) {
    enum CXCursorKind k = clang_getCursorKind(s);
    if (k == CXCursor_ForStmt || k == CXCursor_WhileStmt || k == CXCursor_DoStmt)
        return tr_error(t, s, "loops are not accepted in a custom function");
    if (k == CXCursor_CallExpr)
        return tr_error(t, s, "a call whose result is not used (custom functions have no side "
                        "effects)");
    if (clang_isExpression(k)) return tr_error(t, s, "a statement without effect");
    char *kind = spelling(clang_getCursorKindSpelling(k));
    tr_error(t, s, "this statement (%s) is not accepted in a custom function", kind);
    free(kind);
    return -1;
}

/* Runs the statements of k in env: returns the result node of the return reached, or
 * FALLTHROUGH when k runs out (no return), or -1 with the error set. */
static int tr_seq(Tr *t, CEnv *env, Cont k) {
    for (;;) {
        if (k.i == k.stmts->n) {
            if (!k.next) return FALLTHROUGH;
            k = *k.next;
            continue;
        }
        CXCursor s = k.stmts->items[k.i++];
        enum CXCursorKind kind = clang_getCursorKind(s);
        if (kind == CXCursor_CompoundStmt) {
            Kids *body = malloc(sizeof *body);
            if (!body) return tr_error(t, s, "out of memory");
            if (kids_of(s, body) > 64) {
                free(body);
                return tr_error(t, s, "more than 64 statements in one block");
            }
            Cont rest = k;
            int r = tr_seq(t, env, (Cont){body, 0, &rest});
            free(body);
            return r;
        }
        if (kind == CXCursor_ReturnStmt) {
            Kids e;
            if (kids_of(s, &e) != 1) return tr_error(t, s, "a return needs a value");
            return tr_float(t, env, e.items[0]);
        }
        if (kind == CXCursor_IfStmt) {
            Kids parts;
            kids_of(s, &parts);
            int cond = tr_cond(t, env, parts.items[0]);
            if (cond < 0) return -1;
            if (!has_return(s)) {
                if (tr_if_merge(t, env, cond, &parts)) return -1;
                continue;
            }
            return tr_if_cont(t, env, cond, &parts, &k);
        }
        int rc;
        if (kind == CXCursor_NullStmt) rc = 0;
        else if (kind == CXCursor_DeclStmt) rc = tr_decl(t, env, s);
        else if (kind == CXCursor_CompoundAssignOperator) rc = tr_assign(t, env, s, true);
        else if (kind == CXCursor_BinaryOperator) {
            Kids kk;
            kids_of(s, &kk);
            char op[8];
            binary_op(t, s, &kk, op, sizeof op);
            rc = strcmp(op, "=") == 0 ? tr_assign(t, env, s, false) : tr_stmt_error(t, s);
        } else if (kind == CXCursor_UnaryOperator) {
            rc = tr_expr(t, env, s).node < 0 ? -1 : tr_stmt_error(t, s);
        } else {
            rc = tr_stmt_error(t, s);
        }
        if (rc) return -1;
    }
}

/* ---- definitions ---------------------------------------------------------------------- */

static int translate_def(Frontend *fe, CSources *cs, CDef *d) {
    if (d->state == DEF_DONE) return 0;
    d->state = DEF_BUSY;
    Tr *t = calloc(1, sizeof *t);
    if (!t) return fe_error(fe, SRCLOC_NONE, "out of memory");
    *t = (Tr){.fe = fe, .cs = cs, .def = d, .tu = clang_Cursor_getTranslationUnit(d->cursor),
              .b = &d->body};
    CEnv *env = malloc(sizeof *env);
    Kids *body = malloc(sizeof *body);
    int rc = -1;
    if (!env || !body) {
        fe_error(fe, SRCLOC_NONE, "out of memory");
        goto out;
    }
    for (int i = 0; i < CS_MAX_LOCALS; i++) env->node[i] = -1;
    for (int i = 0; i < d->n_params; i++) {
        int slot = declare(t, clang_Cursor_getArgument(d->cursor, (unsigned)i));
        env->node[slot] = cfb_arg(t->b, i);
    }
    Kids parts;
    kids_of(d->cursor, &parts);
    CXCursor block = parts.items[parts.n - 1];
    if (kids_of(block, body) > 64) {
        tr_error(t, block, "more than 64 statements in one block");
        goto out;
    }
    int r = tr_seq(t, env, (Cont){body, 0, NULL});
    if (r == FALLTHROUGH) {
        CXSourceLocation end = clang_getRangeEnd(clang_getCursorExtent(block));
        unsigned line, col;
        clang_getSpellingLocation(end, NULL, &line, &col, NULL);
        cs_error_pos(fe, cs->paths[d->file], line, col > 1 ? col - 1 : col,
                     "'%s' can reach its end without returning a value", d->name);
    } else if (r >= 0) {
        rc = cfb_prune(t->b, r) == 0 ? 0 : tr_error(t, d->cursor, "'%s' is too large", d->name);
    } else if (t->b->failed && fe->d->msg[0] == '\0') {
        tr_error(t, d->cursor, "'%s' is too large (more than %d nodes)", d->name, CF_MAX_NODES);
    }
out:
    if (rc == 0) d->state = DEF_DONE;
    free(env);
    free(body);
    free(t);
    return rc;
}

/* ---- reading the files ---------------------------------------------------------------- */

static int check_signature(Frontend *fe, CSources *cs, int file, CXCursor fn) {
    char *name = spelling(clang_getCursorSpelling(fn));
    Pos p = cursor_pos(fn);
    const char *path = cs->paths[file];
    int rc = 0, n = clang_Cursor_getNumArguments(fn);
    if (type_kind(clang_getCursorResultType(fn)) != CXType_Float)
        rc = cs_error_pos(fe, path, p.line, p.col, "custom function '%s' must return float", name);
    else if (clang_isFunctionTypeVariadic(clang_getCursorType(fn)))
        rc = cs_error_pos(fe, path, p.line, p.col, "custom function '%s' may not be variadic", name);
    else if (n < 1 || n > CS_MAX_PARAMS)
        rc = cs_error_pos(fe, path, p.line, p.col, "custom function '%s' must take 1 to %d float "
                          "parameters", name, CS_MAX_PARAMS);
    for (int i = 0; i < n && !rc; i++) {
        CXCursor a = clang_Cursor_getArgument(fn, (unsigned)i);
        enum CXTypeKind k = type_kind(clang_getCursorType(a));
        Pos q = cursor_pos(a);
        if (k == CXType_Pointer || k == CXType_ConstantArray || k == CXType_IncompleteArray)
            rc = cs_error_pos(fe, path, q.line, q.col, "pointers are not accepted: the "
                              "parameters of '%s' must be float", name);
        else if (k != CXType_Float)
            rc = cs_error_pos(fe, path, q.line, q.col, "the parameters of '%s' must be float",
                              name);
    }
    free(name);
    return rc;
}

static int add_def(Frontend *fe, CSources *cs, int file, CXCursor fn) {
    char *name = spelling(clang_getCursorSpelling(fn));
    Pos p = cursor_pos(fn);
    CDef *old = name ? find_def(cs, name) : NULL;
    if (old) {
        cs_error_pos(fe, cs->paths[file], p.line, p.col, "'%s' is defined twice (first at %s:%d:%d)",
                     name, cs->paths[old->file], old->line, old->col);
        free(name);
        return -1;
    }
    if (cs->n_defs == cs->cap_defs) {
        int cap = cs->cap_defs ? 2 * cs->cap_defs : 16;
        CDef *q = realloc(cs->defs, (size_t)cap * sizeof *q);
        if (!q) {
            free(name);
            return fe_error(fe, SRCLOC_NONE, "out of memory");
        }
        cs->defs = q;
        cs->cap_defs = cap;
    }
    CDef *d = &cs->defs[cs->n_defs++];
    *d = (CDef){.name = name, .cursor = fn, .file = file, .line = (int)p.line, .col = (int)p.col,
                .n_params = clang_Cursor_getNumArguments(fn)};
    for (int i = 0; i < d->n_params; i++) {
        char *pn = spelling(clang_getCursorSpelling(clang_Cursor_getArgument(fn, (unsigned)i)));
        if (pn && !pn[0]) { /* unnamed: a parameter the body cannot read */
            free(pn);
            pn = malloc(16);
            if (pn) snprintf(pn, 16, "arg%d", i);
        }
        d->params[i] = pn;
    }
    return 0;
}

typedef struct TopScan {
    Frontend *fe;
    CSources *cs;
    int file;
    int rc;
} TopScan;

static enum CXChildVisitResult scan_top(CXCursor c, CXCursor parent, CXClientData data) {
    (void)parent;
    TopScan *s = data;
    if (!clang_Location_isFromMainFile(clang_getCursorLocation(c))) return CXChildVisit_Continue;
    Pos p = cursor_pos(c);
    const char *path = s->cs->paths[s->file];
    enum CXCursorKind k = clang_getCursorKind(c);
    char *name = spelling(clang_getCursorSpelling(c));
    if (k == CXCursor_FunctionDecl) {
        s->rc = check_signature(s->fe, s->cs, s->file, c);
        if (!s->rc && clang_isCursorDefinition(c)) s->rc = add_def(s->fe, s->cs, s->file, c);
    } else if (k == CXCursor_VarDecl) {
        s->rc = cs_error_pos(s->fe, path, p.line, p.col, "global variable '%s': custom functions "
                             "have no state (use a local or a parameter)", name);
    } else {
        s->rc = cs_error_pos(s->fe, path, p.line, p.col, "only float functions may be defined "
                             "in a custom-function file");
    }
    free(name);
    return s->rc ? CXChildVisit_Break : CXChildVisit_Continue;
}

/* libclang's first error (or fatal error) in the file, reported at its position. */
static int clang_errors(Frontend *fe, CSources *cs, int file) {
    CXTranslationUnit tu = cs->tus[file];
    unsigned n = clang_getNumDiagnostics(tu);
    for (unsigned i = 0; i < n; i++) {
        CXDiagnostic dg = clang_getDiagnostic(tu, i);
        enum CXDiagnosticSeverity sev = clang_getDiagnosticSeverity(dg);
        if (sev >= CXDiagnostic_Error) {
            CXFile f;
            unsigned line, col;
            clang_getSpellingLocation(clang_getDiagnosticLocation(dg), &f, &line, &col, NULL);
            char *msg = spelling(clang_getDiagnosticSpelling(dg));
            char *where = f ? spelling(clang_getFileName(f)) : NULL;
            cs_error_pos(fe, where && line ? where : cs->paths[file], line, col, "%s", msg ? msg : "");
            free(where);
            free(msg);
            clang_disposeDiagnostic(dg);
            return -1;
        }
        clang_disposeDiagnostic(dg);
    }
    return 0;
}

static int load_file(Frontend *fe, CSources *cs, const cJSON *entry) {
    if (!cJSON_IsString(entry) || !entry->valuestring[0])
        return fe_error_at(fe, entry, "'functions' entries must be C file names (strings)");
    int i = cs->n_files;
    cs->paths[i] = fe_relative_path(fe_node_path(fe, entry), entry->valuestring);
    if (!cs->paths[i]) return fe_error(fe, SRCLOC_NONE, "out of memory");
    cs->n_files++;
    module_add_input_file(fe->m, cs->paths[i]);
    FILE *f = fopen(cs->paths[i], "rb");
    if (!f)
        return fe_error_at(fe, entry, "cannot read C source '%s': %s", cs->paths[i], strerror(errno));
    fclose(f);
    static const char *const args[] = {"-xc", "-std=c11"};
    enum CXErrorCode ec = clang_parseTranslationUnit2(cs->index, cs->paths[i], args, 2, NULL, 0,
                                                      CXTranslationUnit_None, &cs->tus[i]);
    if (ec != CXError_Success || !cs->tus[i])
        return fe_error_at(fe, entry, "libclang could not parse '%s' (error %d)", cs->paths[i], (int)ec);
    if (clang_errors(fe, cs, i)) return -1;
    TopScan scan = {fe, cs, i, 0};
    clang_visitChildren(clang_getTranslationUnitCursor(cs->tus[i]), scan_top, &scan);
    return scan.rc;
}

void fe_free_functions(CSources *cs) {
    if (!cs) return;
    for (int i = 0; i < cs->n_defs; i++) {
        free(cs->defs[i].name);
        for (int k = 0; k < cs->defs[i].n_params; k++) free(cs->defs[i].params[k]);
        cfb_free(&cs->defs[i].body);
    }
    free(cs->defs);
    for (int i = 0; i < cs->n_files; i++) {
        if (cs->tus && cs->tus[i]) clang_disposeTranslationUnit(cs->tus[i]);
        free(cs->paths[i]);
    }
    free(cs->tus);
    free(cs->paths);
    if (cs->index) clang_disposeIndex(cs->index);
    free(cs);
}

int fe_load_functions(Frontend *fe, const cJSON *functions) {
    if (!functions) return 0;
    if (!cJSON_IsArray(functions))
        return fe_error_at(fe, functions, "'functions' must be a list of C file names, got %s",
                           json_type_name(functions));
    int n = cJSON_GetArraySize(functions);
    CSources *cs = calloc(1, sizeof *cs);
    if (cs) cs->tus = calloc((size_t)n + 1, sizeof *cs->tus);
    if (cs) cs->paths = calloc((size_t)n + 1, sizeof *cs->paths);
    if (cs) cs->index = clang_createIndex(0, 0);
    fe->csrc = cs;
    if (!cs || !cs->tus || !cs->paths || !cs->index) return fe_error(fe, SRCLOC_NONE, "out of memory");
    for (const cJSON *e = functions->child; e; e = e->next)
        if (load_file(fe, cs, e)) return -1;
    for (int i = 0; i < cs->n_defs; i++)
        if (translate_def(fe, cs, &cs->defs[i])) return -1;
    return 0;
}

/* ---- registering a used function in the module ---------------------------------------- */

static SrcLoc def_loc(const CSources *cs, const CDef *d) {
    return (SrcLoc){cs->paths[d->file], d->line, d->col};
}

/* The gradient of tensor operand i (of n_tensor): dy * NAME_grad (one tensor operand) or
 * dy * NAME_gradI (several) when the files define it, else derived from the tree; either way
 * a function of (tensor params..., dy, scalar params...) (cfunc.h). */
static int add_grad(Frontend *fe, CSources *cs, const CDef *d, CFunc *f, int n_tensor, int i) {
    char user[300], gname[300];
    if (n_tensor == 1) snprintf(user, sizeof user, "%s_grad", d->name);
    else snprintf(user, sizeof user, "%s_grad%d", d->name, i);
    snprintf(gname, sizeof gname, "%s.grad%d", d->name, i);
    const CDef *ud = find_def(cs, user);
    if (ud && ud->n_params != d->n_params)
        return cs_error_pos(fe, cs->paths[ud->file], (unsigned)ud->line, (unsigned)ud->col,
                            "'%s' must take the same %d parameter%s as '%s'", user, d->n_params,
                            d->n_params == 1 ? "" : "s", d->name);
    CfBuilder b = {0};
    int rc;
    if (ud) {
        int args[CS_MAX_PARAMS + 1];
        for (int k = 0; k <= d->n_params; k++) args[k] = cfb_arg(&b, k);
        int partial = cfb_splice(&b, ud->body.nodes, ud->body.n, args);
        rc = cfb_prune(&b, cfb_node(&b, CF_MUL, args[d->n_params], partial, -1));
    } else {
        rc = cfunc_derive(d->body.nodes, d->body.n, d->n_params, i, &b);
    }
    if (rc == 0) {
        /* both forms take (params..., dy); move dy in front of the scalar parameters */
        int map[CS_MAX_PARAMS + 1];
        for (int k = 0; k < d->n_params; k++) map[k] = k < n_tensor ? k : k + 1;
        map[d->n_params] = n_tensor;
        cfb_remap_args(&b, map);
        const char *params[CS_MAX_PARAMS + 1];
        for (int k = 0; k < d->n_params; k++) params[map[k]] = d->params[k];
        /* dy, renamed if a parameter has that name already */
        char dy[300] = "dy";
        for (int k = 0; k < d->n_params; k++)
            if (strcmp(d->params[k], dy) == 0) strcat(dy, "_"), k = -1;
        params[n_tensor] = dy;
        SrcLoc loc = def_loc(cs, ud ? ud : d);
        if (!module_add_cfunc(fe->m, gname, d->n_params + 1, params, b.nodes, b.n, loc))
            rc = fe_error(fe, SRCLOC_NONE, "C function name '%s' is taken", gname);
        else
            cfunc_set_grad(fe->m, f, i, gname);
    } else {
        rc = cs_error_pos(fe, cs->paths[d->file], (unsigned)d->line, (unsigned)d->col,
                          "the gradient of '%s' is too large", d->name);
    }
    cfb_free(&b);
    return rc;
}

static const char *plural(int n, const char *one, const char *many) { return n == 1 ? one : many; }

int fe_use_function(Frontend *fe, const cJSON *at, const char *name, int n_operands,
                    const double *args, int n_args) {
    CSources *cs = fe->csrc;
    CDef *d = cs ? find_def(cs, name) : NULL;
    if (!d)
        return fe_error_at(fe, at, "unknown C function '%s'%s", name,
                           cs ? " (not defined in the files of 'functions')"
                              : " (the model has no 'functions' list of C files)");
    if (d->n_params != n_operands + n_args)
        return fe_error_at(fe, at, "'%s' takes %d parameter%s, got %d tensor operand%s and %d "
                           "scalar argument%s", name, d->n_params, plural(d->n_params, "", "s"),
                           n_operands, plural(n_operands, "", "s"), n_args,
                           plural(n_args, "", "s"));
    /* One split per function: its gradient functions take the tensor operands first. */
    if (d->n_tensor && d->n_tensor != n_operands)
        return fe_error_at(fe, at, "'%s' is called with %d tensor operand%s here but with %d at "
                           "%s:%d:%d; every call of a C function must pass the same parameters "
                           "as tensors", name, n_operands, plural(n_operands, "", "s"),
                           d->n_tensor, d->first_call.file ? d->first_call.file : "?",
                           d->first_call.line, d->first_call.col);
    CFunc *f = (CFunc *)module_find_cfunc(fe->m, name);
    if (!f) {
        f = module_add_cfunc(fe->m, name, d->n_params, (const char *const *)d->params,
                             d->body.nodes, d->body.n, def_loc(cs, d));
        if (!f) return fe_error_at(fe, at, "C function name '%s' is taken", name);
        d->n_tensor = n_operands;
        d->first_call = fe_ir_loc(fe, at);
        for (int i = 0; i < n_operands; i++)
            if (add_grad(fe, cs, d, f, n_operands, i)) return -1;
    } else if (n_args == 0 || memcmp(d->checked, args, sizeof *args * (size_t)n_args) == 0) {
        return 0; /* checked at these values already */
    }
    /* every new set of scalar values is checked: a gradient can be right at one slope only */
    if (n_args) memcpy(d->checked, args, sizeof *args * (size_t)n_args);
    char err[600];
    int bad = 0;
    if (cfunc_check_grads(fe->m, f, n_operands, args, &bad, err, sizeof err)) {
        const CFunc *g = f->grads[bad] ? module_find_cfunc(fe->m, f->grads[bad]) : NULL;
        if (!g) return fe_error_at(fe, at, "%s", err);
        return cs_error_pos(fe, g->loc.file, (unsigned)g->loc.line, (unsigned)g->loc.col, "%s", err);
    }
    return 0;
}
