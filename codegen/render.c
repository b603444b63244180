/* render.c — ONE renderer for kernel descriptions, two targets. C and CUDA differ only in the
 * small Target table below (type names, math function names, constants, how a kernel is
 * declared) and in the two places the target must: how a parfor maps onto the machine
 * (C: `omp parallel for` over the loop; CUDA: a grid-stride loop over blockIdx/threadIdx) and
 * how a gemm statement runs (C: the prelude's cap_sgemm per batch, single-threaded OpenBLAS
 * calls split over the kernel's threads; CUDA, for now: a parallel loop over output elements
 * with an inner K loop — tensor-core tiles come later).
 *
 * Expressions print with the fewest parentheses C's precedence allows, so the generated code
 * reads like hand-written loops. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "kernel.h"
#include "strbuf.h"

/* ---- the per-target table --------------------------------------------------------------- */

typedef struct Target {
    const char *type_name[6]; /* by KType */
    const char *fn_f32[KF_COUNT];
    const char *fn_f64[KF_COUNT];
    const char *inf_f32, *nan_f32, *inf_f64, *nan_f64;
    bool cuda;
} Target;

static const Target TARGET_C = {
    {"int", "int32_t", "uint32_t", "int64_t", "float", "double"},
    {"expf", "logf", "sqrtf", "cap_rsqrtf", "tanhf", "cosf", "sinf", "floorf", "cap_isnan",
     "cap_maxf", "cap_minf", "cap_blendf"},
    {"exp", "log", "sqrt", "cap_rsqrt", "tanh", "cos", "sin", "floor", "cap_isnan", "cap_max",
     "cap_min", "cap_blend"},
    "CAP_INF_F", "CAP_NAN_F", "CAP_INF", "CAP_NAN", false,
};

static const Target TARGET_CUDA = {
    {"int", "int", "unsigned int", "long long", "float", "double"},
    {"expf", "logf", "sqrtf", "rsqrtf", "tanhf", "cosf", "sinf", "floorf", "cap_isnan",
     "cap_maxf", "cap_minf", "cap_blendf"},
    {"exp", "log", "sqrt", "rsqrt", "tanh", "cos", "sin", "floor", "cap_isnan", "cap_max",
     "cap_min", "cap_blend"},
    "CAP_INF_F", "CAP_NAN_F", "CAP_INF", "CAP_NAN", true,
};

#define CUDA_BLOCK 256
#define CUDA_MAX_GRID 65536

/* Text goes out through these rather than strbuf_printf: a kernel is mostly short tokens and
 * small integers, and formatting each through vsnprintf (twice: once to measure) was most of
 * the render stage's time. */
static void put(StrBuf *o, const char *s) { strbuf_puts(o, s); }

/* v in decimal, as "%lld" writes it. */
static void put_int(StrBuf *o, long long v) {
    char buf[24], *p = buf + sizeof buf;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0) *--p = '-';
    strbuf_append(o, p, (size_t)(buf + sizeof buf - p));
}

static void indent(StrBuf *o, int level) {
    static const char SPACES[] = "                                                                ";
    for (int n = 4 * level; n > 0; n -= (int)sizeof SPACES - 1)
        strbuf_append(o, SPACES, n < (int)sizeof SPACES - 1 ? (size_t)n : sizeof SPACES - 1);
}

/* ---- expressions ------------------------------------------------------------------------ */

typedef struct Ctx {
    const KernelDesc *kd;
    const Target *t;
    StrBuf *o;
    bool in_item; /* rendering a parfor's body: one work item, on one thread */
} Ctx;

enum { PREC_SELECT = 3, PREC_OR = 4, PREC_AND = 5, PREC_EQ = 9, PREC_REL = 10, PREC_ADD = 12,
       PREC_MUL = 13, PREC_UNARY = 14, PREC_PRIMARY = 16 };

static int bin_prec(int op) {
    switch (op) {
    case KB_ADD: case KB_SUB: return PREC_ADD;
    case KB_MUL: case KB_DIV: case KB_MOD: return PREC_MUL;
    case KB_LT: case KB_LE: case KB_GT: case KB_GE: return PREC_REL;
    case KB_EQ: case KB_NE: return PREC_EQ;
    case KB_AND: return PREC_AND;
    default: return PREC_OR;
    }
}

static const char *bin_text(int op) {
    static const char *const text[] = {"+", "-", "*", "/", "%", "<", "<=", ">", ">=",
                                       "==", "!=", "&&", "||"};
    return text[op];
}

static int prec_of(const KExpr *e) {
    switch (e->kind) {
    case KE_BIN: return bin_prec(e->op);
    case KE_SELECT: return PREC_SELECT;
    case KE_NOT: case KE_NEG: case KE_CAST: return PREC_UNARY;
    case KE_CONST:
        if (e->type == KT_F32 || e->type == KT_F64) return signbit(e->f) ? PREC_UNARY : PREC_PRIMARY;
        return e->i < 0 ? PREC_UNARY : PREC_PRIMARY;
    default: return PREC_PRIMARY;
    }
}

static void expr(Ctx *c, const KExpr *e, int min_prec);

static void const_float(Ctx *c, const KExpr *e) {
    bool f32 = e->type == KT_F32;
    if (isnan(e->f)) {
        strbuf_printf(c->o, "%s", f32 ? c->t->nan_f32 : c->t->nan_f64);
        return;
    }
    if (isinf(e->f)) {
        strbuf_printf(c->o, "%s%s", e->f < 0 ? "-" : "", f32 ? c->t->inf_f32 : c->t->inf_f64);
        return;
    }
    char buf[64];
    snprintf(buf, sizeof buf, f32 ? "%.9g" : "%.17g", e->f);
    /* A float constant must read as one: 2 -> 2.0 (then the f suffix for f32). */
    bool has_point = strpbrk(buf, ".e") != NULL;
    put(c->o, buf);
    put(c->o, has_point ? "" : ".0");
    put(c->o, f32 ? "f" : "");
}

static void const_int(Ctx *c, const KExpr *e) {
    switch (e->type) {
    case KT_U32:
        put_int(c->o, (long long)(uint32_t)e->i);
        put(c->o, "u");
        break;
    case KT_I64:
        put_int(c->o, (long long)e->i);
        if (e->i > INT32_MAX || e->i < INT32_MIN) put(c->o, "LL");
        break;
    default: put_int(c->o, (long long)e->i); break;
    }
}

static void call(Ctx *c, const KExpr *e) {
    bool f64 = e->type == KT_F64 || e->a->type == KT_F64 || (e->b && e->b->type == KT_F64);
    const char *name = f64 ? c->t->fn_f64[e->op] : c->t->fn_f32[e->op];
    put(c->o, name);
    put(c->o, "(");
    expr(c, e->a, 0);
    if (e->b) {
        put(c->o, ", ");
        expr(c, e->b, 0);
    }
    if (e->c) {
        put(c->o, ", ");
        expr(c, e->c, 0);
    }
    put(c->o, ")");
}

static void expr_inner(Ctx *c, const KExpr *e) {
    switch (e->kind) {
    case KE_CONST:
        if (e->type == KT_F32 || e->type == KT_F64)
            const_float(c, e);
        else
            const_int(c, e);
        break;
    case KE_VAR: put(c->o, c->kd->vars[e->var].name); break;
    case KE_LOAD:
        put(c->o, c->kd->bufs[e->buf].name);
        put(c->o, "[");
        expr(c, e->a, 0);
        put(c->o, "]");
        break;
    case KE_BIN: {
        /* && inside || gets parentheses anyway: compilers warn about it, readers trip on it */
        int p = e->op == KB_OR ? PREC_AND + 1 : bin_prec(e->op);
        expr(c, e->a, p);
        put(c->o, " ");
        put(c->o, bin_text(e->op));
        put(c->o, " ");
        expr(c, e->b, e->op == KB_OR ? p : p + 1); /* left-assoc: equal rank on the right needs () */
        break;
    }
    case KE_NOT: put(c->o, "!"); expr(c, e->a, PREC_UNARY); break;
    case KE_NEG: put(c->o, "-"); expr(c, e->a, PREC_UNARY); break;
    case KE_CALL: call(c, e); break;
    case KE_SELECT:
        expr(c, e->a, PREC_OR);
        put(c->o, " ? ");
        expr(c, e->b, PREC_OR);
        put(c->o, " : ");
        expr(c, e->c, PREC_SELECT);
        break;
    case KE_CAST:
        put(c->o, "(");
        put(c->o, c->t->type_name[e->type]);
        put(c->o, ")");
        expr(c, e->a, PREC_UNARY);
        break;
    case KE_DROPOUT:
        strbuf_printf(c->o, "cap_dropout_keep(");
        expr(c, e->a, 0);
        strbuf_printf(c->o, ", ");
        expr(c, e->b, 0);
        strbuf_printf(c->o, ", %uu, ", e->stream);
        expr(c, e->c, 0);
        strbuf_printf(c->o, ", %.17g)", e->p);
        break;
    }
}

static void expr(Ctx *c, const KExpr *e, int min_prec) {
    bool paren = prec_of(e) < min_prec;
    if (paren) put(c->o, "(");
    expr_inner(c, e);
    if (paren) put(c->o, ")");
}

/* ---- statements ------------------------------------------------------------------------- */

static int render_block(Ctx *c, const KStmt *s, int level, Diag *d);

static void loop_head(Ctx *c, const KStmt *s, int level) {
    const char *v = c->kd->vars[s->var].name, *ty = c->t->type_name[c->kd->vars[s->var].type];
    indent(c->o, level);
    put(c->o, "for (");
    put(c->o, ty);
    put(c->o, " ");
    put(c->o, v);
    put(c->o, " = ");
    expr(c, s->lo, 0);
    put(c->o, "; ");
    put(c->o, v);
    put(c->o, " < ");
    expr(c, s->hi, PREC_REL + 1);
    put(c->o, "; ");
    put(c->o, v);
    put(c->o, "++) {\n");
}

static void parfor_head(Ctx *c, const KStmt *s, int level) {
    if (!c->t->cuda) {
        if (!s->serial) {
            indent(c->o, level);
            put(c->o, "CAP_PARALLEL_FOR\n");
        }
        loop_head(c, s, level);
        return;
    }
    const char *v = c->kd->vars[s->var].name, *ty = c->t->type_name[KT_I64];
    indent(c->o, level);
    strbuf_printf(c->o, "for (%s %s = (%s)blockIdx.x * blockDim.x + threadIdx.x; %s < ", ty, v,
                  ty, v);
    expr(c, s->hi, PREC_REL + 1);
    strbuf_printf(c->o, "; %s += (%s)blockDim.x * gridDim.x) {\n", v, ty);
}

static const char *buf_name(Ctx *c, int buf) { return c->kd->bufs[buf].name; }

/* A finite f32 constant as C reads it back exactly: 1 -> "1.0f". */
static const char *f32_text(float v, char *buf, size_t size) {
    int n = snprintf(buf, size, "%.9g", v);
    if (!strpbrk(buf, ".e") && n + 2 < (int)size) strcat(buf, ".0");
    strncat(buf, "f", size - strlen(buf) - 1);
    return buf;
}


/* The epilogue's two variables, declared from the element's index and value. */
static void epilogue_vars(Ctx *c, const KGemm *g, int level, const char *index, const char *value) {
    indent(c->o, level);
    strbuf_printf(c->o, "%s %s = %s;\n", c->t->type_name[KT_I64], c->kd->vars[g->epi_index].name,
                  index);
    indent(c->o, level);
    strbuf_printf(c->o, "float %s = %s;\n", c->kd->vars[g->epi_value].name, value);
}

/* C: after the products, one pass over C (parallel unless serial) runs the epilogue on each
 * element. */
static void epilogue_c(Ctx *c, const KGemm *g, bool serial, int level) {
    Diag ignored;
    if (!serial) {
        indent(c->o, level);
        strbuf_printf(c->o, "CAP_PARALLEL_FOR\n");
    }
    indent(c->o, level);
    strbuf_printf(c->o, "for (int64_t ge = 0; ge < %lld; ge++) {\n",
                  (long long)(g->batch * g->m * g->n));
    char value[64];
    snprintf(value, sizeof value, "%s[ge]", buf_name(c, g->c.buf));
    epilogue_vars(c, g, level + 1, "ge", value);
    render_block(c, g->epilogue, level + 1, &ignored);
    indent(c->o, level);
    strbuf_printf(c->o, "}\n");
}

/* C: one cap_sgemm per batch (the prelude's: cut into blocks shared out over the kernel's
 * threads, unless the product is part of one work item), after filling C with the bias. With
 * serial (opt_serial.c: a small product) the bias fill and the epilogue are plain loops. */
static void gemm_c(Ctx *c, const KGemm *g, bool serial, int level) {
    const char *bv = c->kd->vars[g->batch_var].name;
    if (g->bias_buf >= 0) {
        if (!serial) {
            indent(c->o, level);
            strbuf_printf(c->o, "CAP_PARALLEL_FOR\n");
        }
        indent(c->o, level);
        strbuf_printf(c->o, "for (int64_t gr = 0; gr < %lld; gr++)\n",
                      (long long)(g->batch * g->m));
        indent(c->o, level + 1);
        strbuf_printf(c->o, "for (int64_t gj = 0; gj < %lld; gj++) %s[gr * %lld + gj] = %s[gj];\n",
            (long long)g->n, buf_name(c, g->c.buf), (long long)g->c.ld, buf_name(c, g->bias_buf));
    }
    float beta = g->accumulate || g->bias_buf >= 0 ? 1.0f : 0.0f;
    /* A single product needs no batch loop (its offsets cannot depend on the batch index). */
    if (g->batch > 1) {
        indent(c->o, level);
        strbuf_printf(c->o, "for (int64_t %s = 0; %s < %lld; %s++)\n", bv, bv,
                      (long long)g->batch, bv);
        level++;
    }
    indent(c->o, level);
    char alpha[64];
    strbuf_printf(c->o, "cap_sgemm(%d, %d, %d, %lld, %lld, %lld, %s, %s + ", !c->in_item,
        g->a.trans ? 1 : 0, g->b.trans ? 1 : 0, (long long)g->m, (long long)g->n, (long long)g->k, f32_text(g->alpha, alpha, sizeof alpha),
        buf_name(c, g->a.buf));
    expr(c, g->a.offset, PREC_ADD + 1);
    strbuf_printf(c->o, ", %lld, %s + ", (long long)g->a.ld, buf_name(c, g->b.buf));
    expr(c, g->b.offset, PREC_ADD + 1);
    strbuf_printf(c->o, ", %lld, %.1ff, %s + ", (long long)g->b.ld, beta, buf_name(c, g->c.buf));
    expr(c, g->c.offset, PREC_ADD + 1);
    strbuf_printf(c->o, ", %lld);\n", (long long)g->c.ld);
    if (g->epilogue != NULL) {
        if (g->batch > 1) level--;
        epilogue_c(c, g, serial, level);
    }
}

/* CUDA: one work item per output element, K loop inside (the simple form, for now). */
static void gemm_cuda(Ctx *c, const KGemm *g, int level) {
    const char *bv = c->kd->vars[g->batch_var].name;
    long long m = g->m, n = g->n, k = g->k;
    indent(c->o, level);
    strbuf_printf(c->o, "for (long long ge = (long long)blockIdx.x * blockDim.x + threadIdx.x; "
                  "ge < %lldLL; ge += (long long)blockDim.x * gridDim.x) {\n",
        (long long)(g->batch * m * n));
    indent(c->o, level + 1);
    strbuf_printf(c->o, "long long %s = ge / %lldLL, gi = ge / %lld %% %lld, gj = ge %% %lld;\n",
                  bv, m * n, n, m, n);
    indent(c->o, level + 1);
    strbuf_printf(c->o, "const float *ga = %s + ", buf_name(c, g->a.buf));
    expr(c, g->a.offset, PREC_ADD + 1);
    strbuf_printf(c->o, ";\n");
    indent(c->o, level + 1);
    strbuf_printf(c->o, "const float *gb = %s + ", buf_name(c, g->b.buf));
    expr(c, g->b.offset, PREC_ADD + 1);
    strbuf_printf(c->o, ";\n");
    indent(c->o, level + 1);
    strbuf_printf(c->o, "float *gc = %s + ", buf_name(c, g->c.buf));
    expr(c, g->c.offset, PREC_ADD + 1);
    strbuf_printf(c->o, ";\n");
    indent(c->o, level + 1);
    strbuf_printf(c->o, "float acc = 0.0f;\n");
    indent(c->o, level + 1);
    char ai[96], bi[96];
    if (g->a.trans)
        snprintf(ai, sizeof ai, "gp * %lldLL + gi", (long long)g->a.ld);
    else
        snprintf(ai, sizeof ai, "gi * %lldLL + gp", (long long)g->a.ld);
    if (g->b.trans)
        snprintf(bi, sizeof bi, "gj * %lldLL + gp", (long long)g->b.ld);
    else
        snprintf(bi, sizeof bi, "gp * %lldLL + gj", (long long)g->b.ld);
    strbuf_printf(c->o, "for (long long gp = 0; gp < %lld; gp++) acc += ga[%s] * gb[%s];\n", k,
                  ai, bi);
    char alpha[64], value[512];
    int len = snprintf(value, sizeof value, "%s * acc", f32_text(g->alpha, alpha, sizeof alpha));
    if (g->accumulate)
        len += snprintf(value + len, sizeof value - (size_t)len, " + gc[gi * %lldLL + gj]",
                        (long long)g->c.ld);
    if (g->bias_buf >= 0)
        snprintf(value + len, sizeof value - (size_t)len, " + %s[gj]", buf_name(c, g->bias_buf));
    if (g->epilogue != NULL) {
        Diag ignored;
        epilogue_vars(c, g, level + 1, "ge", value);
        render_block(c, g->epilogue, level + 1, &ignored);
    } else {
        indent(c->o, level + 1);
        strbuf_printf(c->o, "gc[gi * %lldLL + gj] = %s;\n", (long long)g->c.ld, value);
    }
    indent(c->o, level);
    strbuf_printf(c->o, "}\n");
}

static int render_stmt(Ctx *c, const KStmt *s, int level, Diag *d) {
    const KernelDesc *kd = c->kd;
    switch (s->kind) {
    case KS_PARFOR:
        parfor_head(c, s, level);
        c->in_item = true; /* parfors never nest */
        int rc = render_block(c, s->body, level + 1, d);
        c->in_item = false;
        if (rc) return -1;
        indent(c->o, level);
        put(c->o, "}\n");
        return 0;
    case KS_FOR:
        if (s->simd && !c->t->cuda) {
            indent(c->o, level);
            put(c->o, "CAP_SIMD\n");
        }
        loop_head(c, s, level);
        if (render_block(c, s->body, level + 1, d)) return -1;
        indent(c->o, level);
        put(c->o, "}\n");
        return 0;
    case KS_DECL:
        indent(c->o, level);
        put(c->o, c->t->type_name[kd->vars[s->var].type]);
        put(c->o, " ");
        put(c->o, kd->vars[s->var].name);
        put(c->o, " = ");
        expr(c, s->value, 0);
        put(c->o, ";\n");
        return 0;
    case KS_ASSIGN:
        indent(c->o, level);
        put(c->o, kd->vars[s->var].name);
        put(c->o, " = ");
        expr(c, s->value, 0);
        put(c->o, ";\n");
        return 0;
    case KS_STORE:
        indent(c->o, level);
        put(c->o, kd->bufs[s->buf].name);
        put(c->o, "[");
        expr(c, s->index, 0);
        put(c->o, "] = ");
        expr(c, s->value, 0);
        put(c->o, ";\n");
        return 0;
    case KS_IF:
        indent(c->o, level);
        put(c->o, "if (");
        expr(c, s->cond, 0);
        put(c->o, ") {\n");
        if (render_block(c, s->body, level + 1, d)) return -1;
        if (s->else_body) {
            indent(c->o, level);
            put(c->o, "} else {\n");
            if (render_block(c, s->else_body, level + 1, d)) return -1;
        }
        indent(c->o, level);
        put(c->o, "}\n");
        return 0;
    case KS_ARRAY: {
        const KBuffer *b = &kd->bufs[s->buf];
        const char *ty = c->t->type_name[b->type];
        indent(c->o, level);
        if (b->scratch) /* named s<slot>: the slot of the thread's workspace */
            strbuf_printf(c->o, "%s *%s = (%s *)cap_workspace(%s, sizeof(%s) * %lld);\n", ty,
                          b->name, ty, b->name + 1, ty, (long long)b->numel);
        else
            strbuf_printf(c->o, "%s %s[%lld];\n", ty, b->name, (long long)b->numel);
        return 0;
    }
    case KS_GEMM:
        if (c->t->cuda) {
            if (level != 1) {
                diag_msg(d, "kernel %s: a CUDA gemm must be the whole kernel",
                         kd->name);
                return -1;
            }
            gemm_cuda(c, s->gemm, level);
        } else {
            gemm_c(c, s->gemm, s->serial, level);
        }
        return 0;
    }
    return 0;
}

static int render_block(Ctx *c, const KStmt *s, int level, Diag *d) {
    for (; s; s = s->next)
        if (render_stmt(c, s, level, d)) return -1;
    return 0;
}

/* ---- which buffers a kernel reads ------------------------------------------------------- */

static void mark_expr(const KExpr *e, bool *used) {
    if (!e) return;
    if (e->kind == KE_LOAD) used[e->buf] = true;
    mark_expr(e->a, used);
    mark_expr(e->b, used);
    mark_expr(e->c, used);
}

static void mark_block(const KStmt *s, bool *used) {
    for (; s; s = s->next) {
        if (s->buf >= 0) used[s->buf] = true;
        mark_expr(s->lo, used);
        mark_expr(s->hi, used);
        mark_expr(s->value, used);
        mark_expr(s->index, used);
        mark_expr(s->cond, used);
        if (s->gemm) {
            used[s->gemm->a.buf] = used[s->gemm->b.buf] = used[s->gemm->c.buf] = true;
            if (s->gemm->bias_buf >= 0) used[s->gemm->bias_buf] = true;
            mark_block(s->gemm->epilogue, used);
        }
        mark_block(s->body, used);
        mark_block(s->else_body, used);
    }
}

/* ---- kernels ---------------------------------------------------------------------------- */

static void header_comment(Ctx *c) {
    const KernelDesc *kd = c->kd;
    put(c->o, "/* ");
    put(c->o, kd->comment);
    put(c->o, ":");
    for (int i = 0; i < kd->n_args; i++) {
        put(c->o, i ? ", " : " ");
        put(c->o, kd->bufs[i].name);
        put(c->o, " ");
        put(c->o, kd->bufs[i].what);
    }
    put(c->o, " */\n");
}

static void c_signature(Ctx *c, const bool *used) {
    const KernelDesc *kd = c->kd;
    put(c->o, "void ");
    put(c->o, kd->name);
    put(c->o, "(void *const *bufs) {\n");
    for (int i = 0; i < kd->n_args; i++) {
        const KBuffer *b = &kd->bufs[i];
        const char *ty = c->t->type_name[b->type];
        if (!used[i]) {
            put(c->o, "    (void)bufs[");
            put_int(c->o, i);
            put(c->o, "]; /* ");
            put(c->o, b->name);
            put(c->o, ": not read by this form of the op */\n");
            continue;
        }
        const char *cst = b->written ? "" : "const ";
        put(c->o, "    ");
        put(c->o, cst);
        put(c->o, ty);
        put(c->o, " *");
        put(c->o, b->name);
        put(c->o, " = (");
        put(c->o, cst);
        put(c->o, ty);
        put(c->o, " *)bufs[");
        put_int(c->o, i);
        put(c->o, "];\n");
    }
}

static void cuda_signature(Ctx *c) {
    const KernelDesc *kd = c->kd;
    put(c->o, "extern \"C\" __global__ void ");
    put(c->o, kd->name);
    put(c->o, "(");
    for (int i = 0; i < kd->n_args; i++) {
        const KBuffer *b = &kd->bufs[i];
        put(c->o, i ? ", " : "");
        put(c->o, b->written ? "" : "const ");
        put(c->o, c->t->type_name[b->type]);
        put(c->o, " *");
        put(c->o, b->name);
    }
    put(c->o, ") {\n");
}

char *kernel_render(const KernelDesc *kd, KTarget target, Diag *d) {
    const Target *t = target == KTARGET_CUDA ? &TARGET_CUDA : &TARGET_C;
    StrBuf o = {0};
    Ctx c = {kd, t, &o, false};
    if (t->cuda) {
        bool one = kd->body && !kd->body->next &&
                   (kd->body->kind == KS_PARFOR || kd->body->kind == KS_GEMM);
        for (int i = kd->n_args; i < kd->n_bufs; i++) one &= !kd->bufs[i].scratch;
        if (!one) {
            diag_msg(d,
                     "kernel %s: a CUDA kernel must be one parfor or gemm without scratch",
                     kd->name);
            return NULL;
        }
    }
    bool *used = calloc((size_t)kd->n_bufs + 1, sizeof *used);
    if (!used) {
        diag_msg(d, "out of memory");
        return NULL;
    }
    mark_block(kd->body, used);
    header_comment(&c);
    if (t->cuda)
        cuda_signature(&c);
    else
        c_signature(&c, used);
    free(used);
    if (render_block(&c, kd->body, 1, d)) {
        strbuf_free(&o);
        return NULL;
    }
    strbuf_puts(&o, "}\n");
    char *text = strbuf_take(&o);
    if (!text) diag_msg(d, "out of memory rendering kernel %s", kd->name);
    return text;
}

void kernel_cuda_launch(const KernelDesc *kd, int64_t *grid, int *block) {
    int64_t count = 1;
    const KStmt *s = kd->body;
    if (s && s->kind == KS_PARFOR && s->hi->kind == KE_CONST) count = s->hi->i;
    if (s && s->kind == KS_GEMM) count = s->gemm->batch * s->gemm->m * s->gemm->n;
    int64_t g = (count + CUDA_BLOCK - 1) / CUDA_BLOCK;
    *grid = g < 1 ? 1 : g > CUDA_MAX_GRID ? CUDA_MAX_GRID : g;
    *block = CUDA_BLOCK;
}
