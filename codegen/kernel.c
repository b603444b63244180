/* kernel.c — building KernelDescs: buffers, variables, expressions (with the little constant
 * folding that keeps generated index arithmetic readable) and statements appended to the
 * innermost open block. Misuse (closing a block that is not open, nesting too deep) is a bug
 * in the lowering, so it aborts through ir_bug. */
#include "diag.h"
#include "kernel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

/* out = prefix followed by n in decimal, exactly as snprintf(out, size, "%s%d", prefix, n)
 * writes it (cut off to size - 1 bytes): buffer and variable names, made for every one of a
 * kernel's many, without vsnprintf's cost. */
static void numbered(char *out, size_t size, const char *prefix, int n) {
    char digits[12], *p = digits + sizeof digits;
    unsigned u = n < 0 ? 0u - (unsigned)n : (unsigned)n;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (n < 0) *--p = '-';
    size_t len = strlen(prefix), nd = (size_t)(digits + sizeof digits - p);
    if (len + nd >= size) {
        snprintf(out, size, "%s%d", prefix, n);
        return;
    }
    memcpy(out, prefix, len);
    memcpy(out + len, p, nd);
    out[len + nd] = 0;
}

KernelDesc *kd_new(const char *name) {
    KernelDesc *kd = calloc(1, sizeof *kd);
    if (!kd) return NULL;
    kd->arena = arena_new();
    if (!kd->arena) {
        free(kd);
        return NULL;
    }
    kd->name = arena_strdup(kd->arena, name);
    kd->comment = "";
    kd->tail[0] = &kd->body;
    return kd;
}

void kd_free(KernelDesc *kd) {
    if (!kd) return;
    free(kd->bufs);
    free(kd->vars);
    arena_free(kd->arena);
    free(kd);
}

const char *kd_strdup(KernelDesc *kd, const char *s) { return arena_strdup(kd->arena, s); }

void kd_set_comment(KernelDesc *kd, const char *comment) {
    kd->comment = arena_strdup(kd->arena, comment);
}

static int add_buf(KernelDesc *kd, const KBuffer *b) {
    if (kd->n_bufs == kd->cap_bufs) {
        kd->cap_bufs = kd->cap_bufs ? 2 * kd->cap_bufs : 8;
        kd->bufs = realloc(kd->bufs, (size_t)kd->cap_bufs * sizeof *kd->bufs);
        if (!kd->bufs) ir_bug("out of memory");
    }
    kd->bufs[kd->n_bufs] = *b;
    return kd->n_bufs++;
}

int kd_arg(KernelDesc *kd, const char *what, KType type, int64_t numel, bool written) {
    IR_ASSERT(kd->n_args == kd->n_bufs); /* arguments come before scratch */
    char name[16];
    numbered(name, sizeof name, "a", kd->n_args);
    KBuffer b = {arena_strdup(kd->arena, name), arena_strdup(kd->arena, what), type, numel,
                 written, false, false};
    kd->n_args++;
    return add_buf(kd, &b);
}

static KStmt *append(KernelDesc *kd, KStmtKind kind);

int kd_scratch(KernelDesc *kd, KType type, int64_t numel) {
    int slot = 0;
    for (int i = kd->n_args; i < kd->n_bufs; i++) slot += kd->bufs[i].scratch;
    IR_ASSERT(slot < KD_MAX_SCRATCH);
    char name[16];
    snprintf(name, sizeof name, "s%d", slot);
    KBuffer b = {arena_strdup(kd->arena, name), "scratch", type, numel, true, true, false};
    int buf = add_buf(kd, &b);
    append(kd, KS_ARRAY)->buf = buf;
    return buf;
}

int kd_local(KernelDesc *kd, KType type, int64_t numel) {
    char name[16];
    snprintf(name, sizeof name, "l%d", kd->n_bufs - kd->n_args);
    KBuffer b = {arena_strdup(kd->arena, name), "local", type, numel, true, false, true};
    int buf = add_buf(kd, &b);
    append(kd, KS_ARRAY)->buf = buf;
    return buf;
}

int kd_var(KernelDesc *kd, const char *hint, KType type) {
    if (kd->n_vars == kd->cap_vars) {
        kd->cap_vars = kd->cap_vars ? 2 * kd->cap_vars : 16;
        kd->vars = realloc(kd->vars, (size_t)kd->cap_vars * sizeof *kd->vars);
        if (!kd->vars) ir_bug("out of memory");
    }
    char name[64];
    /* Buffers are a0.. and s0..: a variable must never read like one ("a_3"). */
    bool clash = (hint[0] == 'a' || hint[0] == 's') && hint[1] == 0;
    char prefix[3] = {hint[0], '_', 0};
    numbered(name, sizeof name, clash ? prefix : hint, kd->n_vars);
    kd->vars[kd->n_vars].name = arena_strdup(kd->arena, name);
    kd->vars[kd->n_vars].type = type;
    return kd->n_vars++;
}

/* ---- expressions ------------------------------------------------------------------------ */

static KExpr *new_expr(KernelDesc *kd, KExprKind kind, KType type) {
    KExpr *e = arena_alloc(kd->arena, sizeof *e);
    e->kind = kind;
    e->type = type;
    return e;
}

static bool is_float(KType t) { return t == KT_F32 || t == KT_F64; }

static const KExpr *konst(KernelDesc *kd, KType type, int64_t i, double f) {
    KExpr *e = new_expr(kd, KE_CONST, type);
    e->i = i;
    e->f = f;
    return e;
}

const KExpr *ke_int(KernelDesc *kd, int64_t v) { return konst(kd, KT_I64, v, 0); }
const KExpr *ke_i32(KernelDesc *kd, int64_t v) { return konst(kd, KT_I32, v, 0); }
const KExpr *ke_f32(KernelDesc *kd, double v) { return konst(kd, KT_F32, 0, v); }
const KExpr *ke_f64(KernelDesc *kd, double v) { return konst(kd, KT_F64, 0, v); }

const KExpr *ke_var(KernelDesc *kd, int var) {
    IR_ASSERT(var >= 0 && var < kd->n_vars);
    KExpr *e = new_expr(kd, KE_VAR, kd->vars[var].type);
    e->var = var;
    return e;
}

const KExpr *ke_load(KernelDesc *kd, int buf, const KExpr *index) {
    IR_ASSERT(buf >= 0 && buf < kd->n_bufs);
    KExpr *e = new_expr(kd, KE_LOAD, kd->bufs[buf].type);
    e->buf = buf;
    e->a = index;
    return e;
}

/* The usual arithmetic conversions, restricted to the types kernels use. */
static KType common_type(KType a, KType b) {
    if (a == KT_F64 || b == KT_F64) return KT_F64;
    if (a == KT_F32 || b == KT_F32) return KT_F32;
    if (a == KT_I64 || b == KT_I64) return KT_I64;
    if (a == KT_U32 || b == KT_U32) return KT_U32;
    return KT_I32;
}

static bool is_int_const(const KExpr *e, int64_t v) {
    return e->kind == KE_CONST && !is_float(e->type) && e->i == v;
}

/* Folds integer arithmetic on two constants; false when it does not apply. */
static bool fold_int(KBinOp op, int64_t a, int64_t b, int64_t *out) {
    switch (op) {
    case KB_ADD: *out = a + b; return true;
    case KB_SUB: *out = a - b; return true;
    case KB_MUL: *out = a * b; return true;
    case KB_DIV: if (b == 0) return false; *out = a / b; return true;
    case KB_MOD: if (b == 0) return false; *out = a % b; return true;
    default: return false;
    }
}

const KExpr *ke_bin(KernelDesc *kd, KBinOp op, const KExpr *a, const KExpr *b) {
    bool compare = op >= KB_LT;
    KType t = compare ? KT_BOOL : common_type(a->type, b->type);
    if (!compare && !is_float(t)) {
        int64_t v;
        if (a->kind == KE_CONST && b->kind == KE_CONST && fold_int(op, a->i, b->i, &v))
            return konst(kd, t, v, 0);
        if ((op == KB_ADD && is_int_const(b, 0)) || (op == KB_SUB && is_int_const(b, 0)) ||
            ((op == KB_MUL || op == KB_DIV) && is_int_const(b, 1)))
            return a;
        if ((op == KB_ADD && is_int_const(a, 0)) || (op == KB_MUL && is_int_const(a, 1)))
            return b;
        if ((op == KB_MUL && (is_int_const(a, 0) || is_int_const(b, 0))) ||
            (op == KB_MOD && is_int_const(b, 1)))
            return konst(kd, t, 0, 0);
    }
    KExpr *e = new_expr(kd, KE_BIN, t);
    e->op = op;
    e->a = a;
    e->b = b;
    return e;
}

const KExpr *ke_not(KernelDesc *kd, const KExpr *a) {
    KExpr *e = new_expr(kd, KE_NOT, KT_BOOL);
    e->a = a;
    return e;
}

const KExpr *ke_neg(KernelDesc *kd, const KExpr *a) {
    KExpr *e = new_expr(kd, KE_NEG, a->type);
    e->a = a;
    return e;
}

const KExpr *ke_call(KernelDesc *kd, KFn fn, const KExpr *a) {
    KExpr *e = new_expr(kd, KE_CALL, fn == KF_ISNAN ? KT_BOOL : a->type);
    e->op = fn;
    e->a = a;
    return e;
}

const KExpr *ke_call2(KernelDesc *kd, KFn fn, const KExpr *a, const KExpr *b) {
    KExpr *e = new_expr(kd, KE_CALL, common_type(a->type, b->type));
    e->op = fn;
    e->a = a;
    e->b = b;
    return e;
}

const KExpr *ke_blend(KernelDesc *kd, const KExpr *cond, const KExpr *a, const KExpr *b) {
    KType t = a->type == b->type ? a->type : common_type(a->type, b->type);
    KExpr *e = new_expr(kd, KE_CALL, t);
    e->op = KF_BLEND;
    e->a = cond;
    e->b = a->type == t ? a : ke_cast(kd, t, a);
    e->c = b->type == t ? b : ke_cast(kd, t, b);
    return e;
}

const KExpr *ke_select(KernelDesc *kd, const KExpr *c, const KExpr *a, const KExpr *b) {
    KType t = a->type == b->type ? a->type : common_type(a->type, b->type);
    KExpr *e = new_expr(kd, KE_SELECT, t);
    e->a = c;
    e->b = a->type == t ? a : ke_cast(kd, t, a);
    e->c = b->type == t ? b : ke_cast(kd, t, b);
    return e;
}

const KExpr *ke_cast(KernelDesc *kd, KType type, const KExpr *a) {
    if (a->type == type) return a;
    if (a->kind == KE_CONST) {
        if (is_float(type)) return konst(kd, type, 0, is_float(a->type) ? a->f : (double)a->i);
        if (!is_float(a->type)) return konst(kd, type, a->i, 0);
    }
    KExpr *e = new_expr(kd, KE_CAST, type);
    e->a = a;
    return e;
}

const KExpr *ke_dropout_keep(KernelDesc *kd, const KExpr *seed, const KExpr *step,
                             uint32_t stream, const KExpr *index, double p) {
    KExpr *e = new_expr(kd, KE_DROPOUT, KT_BOOL);
    e->a = seed;
    e->b = step;
    e->c = index;
    e->stream = stream;
    e->p = p;
    return e;
}

/* ---- statements ------------------------------------------------------------------------- */

static KStmt *new_stmt(KernelDesc *kd, KStmtKind kind) {
    KStmt *s = arena_alloc(kd->arena, sizeof *s);
    s->kind = kind;
    s->buf = -1;
    s->var = -1;
    return s;
}

static KStmt *append(KernelDesc *kd, KStmtKind kind) {
    KStmt *s = arena_alloc(kd->arena, sizeof *s);
    s->kind = kind;
    s->buf = -1;
    s->var = -1;
    *kd->tail[kd->depth] = s;
    kd->tail[kd->depth] = &s->next;
    return s;
}

static void open_block(KernelDesc *kd, KStmt *s, KStmt **slot) {
    if (kd->depth + 1 >= KD_MAX_DEPTH) ir_bug("kernel %s nests too deep", kd->name);
    kd->depth++;
    kd->open[kd->depth] = s;
    kd->tail[kd->depth] = slot;
}

void ks_parfor(KernelDesc *kd, int var, int64_t count) {
    KStmt *s = append(kd, KS_PARFOR);
    s->var = var;
    s->lo = ke_int(kd, 0);
    s->hi = ke_int(kd, count);
    open_block(kd, s, &s->body);
}

void ks_for(KernelDesc *kd, int var, const KExpr *lo, const KExpr *hi) {
    KStmt *s = append(kd, KS_FOR);
    s->var = var;
    s->lo = lo;
    s->hi = hi;
    open_block(kd, s, &s->body);
}

void ks_for_simd(KernelDesc *kd, int var, const KExpr *lo, const KExpr *hi) {
    ks_for(kd, var, lo, hi);
    kd->open[kd->depth]->simd = true;
}

void ks_for_n(KernelDesc *kd, int var, int64_t count) {
    ks_for(kd, var, ke_int(kd, 0), ke_int(kd, count));
}

void ks_if(KernelDesc *kd, const KExpr *cond) {
    KStmt *s = append(kd, KS_IF);
    s->cond = cond;
    open_block(kd, s, &s->body);
}

void ks_else(KernelDesc *kd) {
    KStmt *s = kd->open[kd->depth];
    if (kd->depth == 0 || s->kind != KS_IF || s->else_body)
        ir_bug("ks_else outside an if in kernel %s", kd->name);
    kd->tail[kd->depth] = &s->else_body;
}

void ks_end(KernelDesc *kd) {
    if (kd->depth == 0) ir_bug("ks_end with no open block in kernel %s", kd->name);
    kd->depth--;
}

void ks_decl(KernelDesc *kd, int var, const KExpr *init) {
    KStmt *s = append(kd, KS_DECL);
    s->var = var;
    s->value = ke_cast(kd, kd->vars[var].type, init);
}

void ks_assign(KernelDesc *kd, int var, const KExpr *value) {
    KStmt *s = append(kd, KS_ASSIGN);
    s->var = var;
    s->value = ke_cast(kd, kd->vars[var].type, value);
}

void ks_store(KernelDesc *kd, int buf, const KExpr *index, const KExpr *value) {
    KStmt *s = append(kd, KS_STORE);
    s->buf = buf;
    s->index = index;
    s->value = ke_cast(kd, kd->bufs[buf].type, value);
}

void ks_gemm(KernelDesc *kd, const KGemm *g) {
    KStmt *s = append(kd, KS_GEMM);
    KGemm *copy = arena_alloc(kd->arena, sizeof *copy);
    *copy = *g;
    s->gemm = copy;
}

const KExpr *kd_let(KernelDesc *kd, const char *hint, const KExpr *e) {
    if (e->kind == KE_CONST || e->kind == KE_VAR) return e;
    int v = kd_var(kd, hint, e->type == KT_BOOL ? KT_I32 : e->type);
    ks_decl(kd, v, e);
    return ke_var(kd, v);
}

void ks_detached_begin(KernelDesc *kd) {
    KStmt *holder = new_stmt(kd, KS_IF); /* only its body is used; never rendered itself */
    open_block(kd, holder, &holder->body);
}

const KStmt *ks_detached_end(KernelDesc *kd) {
    const KStmt *holder = kd->open[kd->depth];
    ks_end(kd);
    return holder->body;
}

/* ---- structural equality and hashing ---------------------------------------------------- */

static bool same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

bool ke_equal(const KExpr *a, const KExpr *b) {
    if (a == b) return true;
    if (a == NULL || b == NULL) return false;
    if (a->kind != b->kind || a->type != b->type || a->op != b->op || a->i != b->i ||
        !same_double(a->f, b->f) || a->var != b->var || a->buf != b->buf ||
        a->stream != b->stream || !same_double(a->p, b->p))
        return false;
    return ke_equal(a->a, b->a) && ke_equal(a->b, b->b) && ke_equal(a->c, b->c);
}

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    return h * 0x100000001B3ULL;
}

static uint64_t mix_double(uint64_t h, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return mix(h, bits);
}

static uint64_t hash_expr(uint64_t h, const KExpr *e) {
    if (e == NULL) return mix(h, 0x51);
    h = mix(h, (uint64_t)e->kind * 131 + (uint64_t)e->type * 7 + (uint64_t)e->op);
    h = mix(h, (uint64_t)e->i);
    h = mix_double(h, e->f);
    h = mix(h, (uint64_t)(e->var + 1) * 31 + (uint64_t)(e->buf + 1));
    h = mix(h, e->stream);
    h = mix_double(h, e->p);
    h = hash_expr(h, e->a);
    h = hash_expr(h, e->b);
    return hash_expr(h, e->c);
}

static bool mat_equal(const KMat *a, const KMat *b) {
    return a->buf == b->buf && a->ld == b->ld && a->trans == b->trans &&
           ke_equal(a->offset, b->offset);
}

static bool block_equal(const KStmt *a, const KStmt *b);

static bool gemm_equal(const KGemm *a, const KGemm *b) {
    if (a == b) return true;
    if (a == NULL || b == NULL) return false;
    return a->batch_var == b->batch_var && a->batch == b->batch && a->m == b->m &&
           a->n == b->n && a->k == b->k && mat_equal(&a->a, &b->a) && mat_equal(&a->b, &b->b) &&
           mat_equal(&a->c, &b->c) && memcmp(&a->alpha, &b->alpha, sizeof a->alpha) == 0 &&
           a->accumulate == b->accumulate && a->bias_buf == b->bias_buf &&
           a->epi_index == b->epi_index && a->epi_value == b->epi_value &&
           block_equal(a->epilogue, b->epilogue);
}

static bool block_equal(const KStmt *a, const KStmt *b) {
    for (; a != NULL && b != NULL; a = a->next, b = b->next) {
        if (a->kind != b->kind || a->serial != b->serial || a->simd != b->simd || a->var != b->var ||
            a->buf != b->buf || !ke_equal(a->lo, b->lo) || !ke_equal(a->hi, b->hi) ||
            !ke_equal(a->value, b->value) || !ke_equal(a->index, b->index) ||
            !ke_equal(a->cond, b->cond) || !gemm_equal(a->gemm, b->gemm) ||
            !block_equal(a->body, b->body) || !block_equal(a->else_body, b->else_body))
            return false;
    }
    return a == NULL && b == NULL;
}

static uint64_t hash_block(uint64_t h, const KStmt *s);

static uint64_t hash_gemm(uint64_t h, const KGemm *g) {
    if (g == NULL) return mix(h, 0x67);
    h = mix(h, (uint64_t)g->batch * 3 + (uint64_t)g->m * 5 + (uint64_t)g->n * 7 + (uint64_t)g->k);
    h = mix(h, (uint64_t)(g->a.buf * 17 + g->b.buf * 13 + g->c.buf) + (uint64_t)g->bias_buf);
    h = hash_expr(h, g->a.offset);
    h = hash_expr(h, g->b.offset);
    h = hash_expr(h, g->c.offset);
    return hash_block(h, g->epilogue);
}

static uint64_t hash_block(uint64_t h, const KStmt *s) {
    for (; s != NULL; s = s->next) {
        h = mix(h, (uint64_t)s->kind * 97 + (uint64_t)s->serial + (uint64_t)s->simd * 3 +
                       (uint64_t)(s->var + 1) * 5 +
                       (uint64_t)(s->buf + 1) * 11);
        h = hash_expr(h, s->lo);
        h = hash_expr(h, s->hi);
        h = hash_expr(h, s->value);
        h = hash_expr(h, s->index);
        h = hash_expr(h, s->cond);
        h = hash_gemm(h, s->gemm);
        h = hash_block(h, s->body);
        h = hash_block(mix(h, 0xE15E), s->else_body);
    }
    return mix(h, 0xB10C);
}

static uint64_t hash_buffers(uint64_t h, const KernelDesc *kd) {
    h = mix(h, (uint64_t)kd->n_bufs * 1009 + (uint64_t)kd->n_args);
    for (int i = 0; i < kd->n_bufs; i++) {
        const KBuffer *b = &kd->bufs[i];
        h = mix(h, (uint64_t)b->type * 8 + (uint64_t)b->written * 4 + (uint64_t)b->scratch * 2 +
                       (uint64_t)b->local);
        h = mix(h, (uint64_t)b->numel);
    }
    /* Variable types only: their names (which kd_equal compares too) follow from the
     * statements that make them, and hashing them character by character was most of the
     * cost for kernels with thousands of variables. */
    for (int i = 0; i < kd->n_vars; i++) h = mix(h, (uint64_t)kd->vars[i].type);
    return h;
}

uint64_t kd_hash(const KernelDesc *kd) {
    return hash_block(hash_buffers(0xCBF29CE484222325ULL, kd), kd->body);
}

bool kd_equal(const KernelDesc *a, const KernelDesc *b) {
    if (a->n_bufs != b->n_bufs || a->n_args != b->n_args || a->n_vars != b->n_vars) return false;
    for (int i = 0; i < a->n_bufs; i++) {
        const KBuffer *x = &a->bufs[i], *y = &b->bufs[i];
        if (x->type != y->type || x->written != y->written || x->scratch != y->scratch ||
            x->local != y->local || x->numel != y->numel)
            return false;
    }
    for (int i = 0; i < a->n_vars; i++)
        if (a->vars[i].type != b->vars[i].type || strcmp(a->vars[i].name, b->vars[i].name) != 0)
            return false;
    return block_equal(a->body, b->body);
}

/* ---- the description checker ------------------------------------------------------------ */

typedef struct Check {
    const KernelDesc *kd;
    Diag *d;
    int bad;
} Check;

static void check_fail(Check *c, const char *what) {
    if (c->bad++) return;
    diag_internal(c->d, c->d->loc, "kernel %s: %s", c->kd->name, what);
}

static void check_expr(Check *c, const KExpr *e) {
    if (e == NULL) return;
    if ((e->kind == KE_VAR && (e->var < 0 || e->var >= c->kd->n_vars)) ||
        (e->kind == KE_LOAD && (e->buf < 0 || e->buf >= c->kd->n_bufs)))
        check_fail(c, "an expression names a variable or buffer it does not have");
    check_expr(c, e->a);
    check_expr(c, e->b);
    check_expr(c, e->c);
}

static void check_block(Check *c, const KStmt *s);

static void check_stmt(Check *c, const KStmt *s) {
    const KernelDesc *kd = c->kd;
    if (s->var >= kd->n_vars) check_fail(c, "a statement names a variable it does not have");
    if (s->kind == KS_STORE && (s->buf < 0 || s->buf >= kd->n_bufs || !kd->bufs[s->buf].written))
        check_fail(c, "a store into a buffer that is not written");
    check_expr(c, s->lo);
    check_expr(c, s->hi);
    check_expr(c, s->value);
    check_expr(c, s->index);
    check_expr(c, s->cond);
    if (s->gemm != NULL) {
        const KGemm *g = s->gemm;
        if (g->a.buf < 0 || g->a.buf >= kd->n_bufs || g->b.buf < 0 || g->b.buf >= kd->n_bufs ||
            g->c.buf < 0 || g->c.buf >= kd->n_bufs || !kd->bufs[g->c.buf].written ||
            g->bias_buf >= kd->n_bufs)
            check_fail(c, "a gemm names buffers it cannot read or write");
        if (g->epilogue != NULL && g->c.ld != g->n)
            check_fail(c, "a gemm with an epilogue writes a strided C");
        check_block(c, g->epilogue);
    }
    check_block(c, s->body);
    check_block(c, s->else_body);
}

static void check_block(Check *c, const KStmt *s) {
    for (; s != NULL; s = s->next) check_stmt(c, s);
}

int kd_check(const KernelDesc *kd, bool cuda, Diag *d) {
    Check c = {kd, d, 0};
    if (kd->depth != 0) check_fail(&c, "a block was left open");
    bool scratch = false;
    for (int i = kd->n_args; i < kd->n_bufs; i++) scratch |= kd->bufs[i].scratch;
    if (cuda && (kd->body == NULL || kd->body->next != NULL ||
                 (kd->body->kind != KS_PARFOR && kd->body->kind != KS_GEMM) || scratch))
        check_fail(&c, "its CUDA form is not one parallel loop or gemm without scratch");
    check_block(&c, kd->body);
    return c.bad ? -1 : 0;
}
