/* kernel.h — the kernel description (KernelDesc): a small imperative AST that lowering builds
 * from IR ops and that ONE renderer (render.c) prints as C or as CUDA.
 *
 * A kernel has buffers (its arguments: result first, then the op's operands; plus scratch
 * buffers that only the C target may use: per-thread workspaces, see kd_scratch) and a body
 * of statements:
 *
 *   parfor v < N { ... }   N independent work items (C: `omp parallel for`; CUDA: grid-stride
 *                          loop). Never nested in another parfor.
 *   for v in [lo, hi) { }  a sequential loop inside a work item (or around parfors on C)
 *   decl v = e; v = e;     scalar temporaries
 *   buf[i] = e;            stores (buffers are typed f32 or i32, flat row-major)
 *   if (c) { } else { }
 *   array buf[n]           a work item's local array (loads and stores like any buffer), or
 *                          a scratch buffer taken from the executing thread's workspace
 *   gemm                   C[b] = alpha * op(A[b]) op(B[b]) (+ C[b] | + bias) per batch b,
 *                          optionally followed per element by an epilogue block (a fused
 *                          group's elementwise tail) that sees the element's flat index
 *                          and value in two variables and does the stores itself
 *
 * Expressions are constants, variables, loads, arithmetic/comparisons, math calls, select
 * (a short-circuiting ?:), casts and the dropout keep bit (Philox4x32-10, ir/philox.c).
 *
 * CUDA kernels must be a single top-level parfor or gemm (one launch, no grid barrier): the
 * lowering gives ops whose C form needs phases (im2col + sgemm) a separate direct-loop CUDA
 * description.
 *
 * Everything a KernelDesc holds lives in its own arena and goes away with kd_free().
 */
#ifndef CAPC_KERNEL_H
#define CAPC_KERNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "ir.h"

typedef enum { KT_BOOL, KT_I32, KT_U32, KT_I64, KT_F32, KT_F64 } KType;

typedef enum {
    KE_CONST,   /* f (float types) or i (integer types) */
    KE_VAR,     /* var */
    KE_LOAD,    /* buf[a] */
    KE_BIN,     /* a op b */
    KE_NOT,     /* !a */
    KE_NEG,     /* -a */
    KE_CALL,    /* fn(a) or fn(a, b) */
    KE_SELECT,  /* a ? b : c, only the chosen side evaluated */
    KE_CAST,    /* (type)a */
    KE_DROPOUT, /* keep bit: a = seed, b = step, c = element index; stream, p */
} KExprKind;

typedef enum {
    KB_ADD, KB_SUB, KB_MUL, KB_DIV, KB_MOD,
    KB_LT, KB_LE, KB_GT, KB_GE, KB_EQ, KB_NE, KB_AND, KB_OR,
} KBinOp;

/* Math functions; the renderer's per-target table names them (expf vs exp, rsqrtf...). */
typedef enum {
    KF_EXP, KF_LOG, KF_SQRT, KF_RSQRT, KF_TANH, KF_COS, KF_SIN, KF_FLOOR, KF_ISNAN,
    KF_MAXNAN, /* max(a, b), NaN if either is NaN (torch.maximum) */
    KF_MINNAN, /* min(a, b), NaN if either is NaN */
    KF_BLEND,  /* a (bool) ? b : c with both already evaluated: branchless bit select, so a loop
                  around it still vectorizes (gcc will not if-convert a float ?: whose condition
                  is loop-invariant); never for guarding a load (use ke_select) */
    KF_COUNT
} KFn;

typedef struct KExpr {
    KExprKind kind;
    KType type;
    int op;         /* KBinOp or KFn */
    double f;       /* KE_CONST of a float type */
    int64_t i;      /* KE_CONST of an integer type */
    int var, buf;   /* KE_VAR, KE_LOAD */
    uint32_t stream; /* KE_DROPOUT */
    double p;        /* KE_DROPOUT */
    const struct KExpr *a, *b, *c;
} KExpr;

typedef enum { KS_PARFOR, KS_FOR, KS_DECL, KS_ASSIGN, KS_STORE, KS_IF, KS_GEMM, KS_ARRAY } KStmtKind;

/* One matrix operand of a gemm: buffer, offset of batch b's matrix (an expression of the
 * gemm's batch variable), leading dimension, transposed or not. */
typedef struct KMat {
    int buf;
    const KExpr *offset;
    int64_t ld;
    bool trans;
} KMat;

typedef struct KGemm {
    int batch_var;        /* variable holding the batch index inside offsets */
    int64_t batch;        /* number of matrix products */
    int64_t m, n, k;
    KMat a, b, c;         /* c.trans is ignored */
    float alpha;
    bool accumulate;      /* C += ... (beta 1) instead of C = ... */
    int bias_buf;         /* -1, or a vector added to every row (length n) */
    /* The epilogue (NULL: none). It runs once per element of C, which must then be contiguous
     * (c.ld == n, batch b at b*m*n), with epi_index = the element's flat index in C and
     * epi_value = its value (C: read back after the products; CUDA: the accumulator). */
    const struct KStmt *epilogue;
    int epi_index, epi_value; /* variables (i64, f32) */
} KGemm;

typedef struct KStmt {
    KStmtKind kind;
    bool serial;                  /* parfor: run its items in order on one thread (C target);
                                     gemm: so do its bias fill and epilogue loops */
    bool simd;                    /* for: iterations are independent (C: `omp simd`) */
    int var;                      /* parfor/for/decl/assign */
    const KExpr *lo, *hi;         /* for: [lo, hi); parfor: hi = the work item count */
    const KExpr *value, *index;   /* decl/assign/store value; store index */
    int buf;                      /* store */
    const KExpr *cond;            /* if */
    struct KStmt *body, *else_body; /* first statement of each block */
    const KGemm *gemm;
    struct KStmt *next;
} KStmt;

typedef struct KBuffer {
    const char *name;  /* "a0", ..., "s0" for scratch, "l0" for a local array */
    const char *what;  /* for the header comment: "%x f32[2,3]" */
    KType type;        /* KT_F32 or KT_I32 */
    int64_t numel;
    bool written;      /* the result (and scratch, local arrays) */
    bool scratch;      /* C only: the executing thread's workspace (kd_scratch) */
    bool local;        /* a small array of one work item (KS_ARRAY declares it where it is) */
} KBuffer;

typedef struct KVar {
    const char *name;
    KType type;
} KVar;

#define KD_MAX_DEPTH 32

typedef struct KernelDesc {
    struct Arena *arena;
    const char *name;
    const char *comment; /* without the comment markers */
    KBuffer *bufs;
    int n_bufs, cap_bufs, n_args; /* args are bufs[0..n_args); scratch follows */
    KVar *vars;
    int n_vars, cap_vars;
    KStmt *body;
    /* builder state: the open blocks' last-statement slots */
    KStmt **tail[KD_MAX_DEPTH];
    KStmt *open[KD_MAX_DEPTH];
    int depth;
} KernelDesc;

KernelDesc *kd_new(const char *name);
void kd_free(KernelDesc *kd);
const char *kd_strdup(KernelDesc *kd, const char *s);
void kd_set_comment(KernelDesc *kd, const char *comment);

/* Buffers: arguments first (in calling-convention order), then scratch. */
int kd_arg(KernelDesc *kd, const char *what, KType type, int64_t numel, bool written);
/* A scratch buffer of numel elements (C only), declared by a statement appended here: at the
 * top of the kernel it is the calling thread's, inside a parfor each work item's thread's.
 * It comes from that thread's workspace (the prelude's cap_workspace: kept from call to call
 * and grown when needed, so no kernel allocates per call). At most KD_MAX_SCRATCH per kernel,
 * each in its own workspace slot. */
#define KD_MAX_SCRATCH 4 /* the C prelude's CapWorkspace has as many slots */
int kd_scratch(KernelDesc *kd, KType type, int64_t numel);
/* A local array of numel elements, declared by a statement appended here (inside a work item:
 * one per item, in registers or on the stack). */
int kd_local(KernelDesc *kd, KType type, int64_t numel);
/* A fresh variable: hint + a number ("i", "acc" -> "i0", "acc1"). */
int kd_var(KernelDesc *kd, const char *hint, KType type);

/* Expressions (constant operands fold; x*1, x+0, x/1 simplify). */
const KExpr *ke_int(KernelDesc *kd, int64_t v);  /* i64 */
const KExpr *ke_i32(KernelDesc *kd, int64_t v);
const KExpr *ke_f32(KernelDesc *kd, double v);
const KExpr *ke_f64(KernelDesc *kd, double v);
const KExpr *ke_var(KernelDesc *kd, int var);
const KExpr *ke_load(KernelDesc *kd, int buf, const KExpr *index);
const KExpr *ke_bin(KernelDesc *kd, KBinOp op, const KExpr *a, const KExpr *b);
const KExpr *ke_not(KernelDesc *kd, const KExpr *a);
const KExpr *ke_neg(KernelDesc *kd, const KExpr *a);
const KExpr *ke_call(KernelDesc *kd, KFn fn, const KExpr *a);
const KExpr *ke_call2(KernelDesc *kd, KFn fn, const KExpr *a, const KExpr *b);
/* KF_BLEND: cond ? a : b, both sides evaluated (see KF_BLEND) */
const KExpr *ke_blend(KernelDesc *kd, const KExpr *cond, const KExpr *a, const KExpr *b);
const KExpr *ke_select(KernelDesc *kd, const KExpr *c, const KExpr *a, const KExpr *b);
const KExpr *ke_cast(KernelDesc *kd, KType type, const KExpr *a);
const KExpr *ke_dropout_keep(KernelDesc *kd, const KExpr *seed, const KExpr *step,
                             uint32_t stream, const KExpr *index, double p);

/* Short forms for the lowering code. */
#define KADD(kd, a, b) ke_bin(kd, KB_ADD, a, b)
#define KSUB(kd, a, b) ke_bin(kd, KB_SUB, a, b)
#define KMUL(kd, a, b) ke_bin(kd, KB_MUL, a, b)
#define KDIV(kd, a, b) ke_bin(kd, KB_DIV, a, b)
#define KMOD(kd, a, b) ke_bin(kd, KB_MOD, a, b)

/* Statements (ks_*: "kernel statement", one per KStmtKind KS_*) are appended to the innermost
 * open block. */
void ks_parfor(KernelDesc *kd, int var, int64_t count); /* opens a block */
void ks_for(KernelDesc *kd, int var, const KExpr *lo, const KExpr *hi); /* opens a block */
void ks_for_n(KernelDesc *kd, int var, int64_t count);                  /* [0, count) */
/* A for whose iterations are independent (no value carried from one to the next, no two
 * writing the same element): the C target may run them in SIMD lanes. */
void ks_for_simd(KernelDesc *kd, int var, const KExpr *lo, const KExpr *hi);
void ks_if(KernelDesc *kd, const KExpr *cond); /* opens a block */
void ks_else(KernelDesc *kd);                  /* switches the open if to its else block */
void ks_end(KernelDesc *kd);                   /* closes the innermost block */
void ks_decl(KernelDesc *kd, int var, const KExpr *init);
void ks_assign(KernelDesc *kd, int var, const KExpr *value);
void ks_store(KernelDesc *kd, int buf, const KExpr *index, const KExpr *value);
void ks_gemm(KernelDesc *kd, const KGemm *g);

/* A declared temporary initialized to e; returns a var expression for it. */
const KExpr *kd_let(KernelDesc *kd, const char *hint, const KExpr *e);

/* A block of statements built apart from the body (a gemm's epilogue): statements between
 * the two calls go into it, and ks_detached_end returns its first statement. */
void ks_detached_begin(KernelDesc *kd);
const KStmt *ks_detached_end(KernelDesc *kd);

/* Structure, not text: two expressions / descriptions are equal when they would render the
 * same code up to the kernel's name and comment (variable and buffer names included).
 * kd_hash agrees with kd_equal. */
bool ke_equal(const KExpr *a, const KExpr *b);
/* The checker run after lowering and after every rewrite: indices in range, stores only into
 * written buffers, no block left open; a CUDA form (cuda) one top-level parfor or gemm
 * without scratch. Returns 0, or -1 with an internal-error message in d. */
int kd_check(const KernelDesc *kd, bool cuda, Diag *d);
uint64_t kd_hash(const KernelDesc *kd);
bool kd_equal(const KernelDesc *a, const KernelDesc *b);

/* Rendering (render.c). Returns a malloc'd definition of the kernel, or NULL with d filled
 * (e.g. a CUDA kernel that is not one top-level parfor/gemm). */
typedef enum { KTARGET_C, KTARGET_CUDA } KTarget;
char *kernel_render(const KernelDesc *kd, KTarget target, Diag *d);
/* CUDA launch geometry of the kernel's top-level statement. */
void kernel_cuda_launch(const KernelDesc *kd, int64_t *grid, int *block);

#endif
