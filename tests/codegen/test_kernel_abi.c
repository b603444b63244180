/* test_kernel_abi.c — every emitted kernel's signature, read back with libclang, against the
 * launch plan of the cap.so it was compiled into, so that an ABI slip (an argument dropped,
 * two swapped, a float buffer passed where an int one is expected, a kernel missing from one
 * target) fails here, on any machine, instead of waiting for a GPU to show itself.
 *
 * How: capc compiles a model (-D overrides allowed) with --target=cpu --emit-src, which writes
 * cap.c, cap.cu and cap.so. The check reads only what capc wrote, never the renderer:
 *
 *   cap.c   parsed in full as C11 with the system headers (it must parse without an error).
 *           A C kernel is a function definition `void NAME(void *const *bufs)`; its ABI is in
 *           its body: every `bufs[K]` (K a constant) is argument K, and the explicit cast
 *           around it says its type — `(const float *)bufs[1]` is a read-only f32 buffer,
 *           `(int32_t *)bufs[0]` a written i32 one, `(void)bufs[2]` an argument this form of
 *           the op does not read, and a bare `bufs[K]` (memcpy's operands in the copy kernels)
 *           an untyped one. The arguments must be exactly 0..n-1, each used, and bufs may be
 *           used no other way.
 *   cap.cu  parsed as CUDA device code (-x cuda --cuda-device-only, without the CUDA headers,
 *           so any installed toolkit's version does not matter; bodies are skipped and the
 *           three CUDA keywords the file's declarations use come from a small header given to
 *           libclang here). A CUDA kernel is a function with the __global__ attribute; its
 *           parameters must be pointers to float or int, and its symbol must be its plain
 *           name (extern "C": the runtime looks kernels up by name).
 *   cap.so  loaded with dlopen; its `cap_artifact` gives the kernel table and every entry's
 *           steps (CapStep: kernel index, n_args, CapBufRef per argument).
 *
 * What is checked, for every kernel of the table:
 *   - it is defined in cap.c and in cap.cu, and CapKernel.cpu is cap.so's symbol of that name;
 *   - CapKernel.n_args == the C kernel's argument count == the CUDA kernel's parameter count;
 *   - where the C body gives an argument a type, C and CUDA agree on it and on its constness.
 * For every step of every entry:
 *   - the kernel index is in the table and step.n_args == the kernel's n_args;
 *   - each CapBufRef's space and index exist (state, this entry's inputs or outputs);
 *   - offset and bytes are multiples of 4 (f32 and i32 are both 4 bytes) and the view lies
 *     inside its tensor (state/input/output: numel * 4) or inside the entry's arena;
 *   - state, input and output arguments: the tensor's dtype (CapTensorInfo.dtype) equals the
 *     parameter's pointee type (CUDA, and C where typed), argument by argument, so order
 *     matters; an input of the entry (the caller's tensor) is only ever passed to a const
 *     parameter.
 *   - arena arguments: the plan records no dtype for arena views (memory planning reuses the
 *     same bytes for values of different types), so their type is checked by flow instead:
 *     walking the entry's steps in order, a written (non-const) parameter marks its bytes with
 *     its type, and every const (read-only) parameter must find all of its bytes written
 *     earlier in the same entry and with its own type. (The arena is shared by all entries of
 *     a session, so bytes not written earlier in the entry are garbage.) A non-const
 *     parameter may also be read (accumulations); those reads are not checked.
 * Not checked: element counts (a kernel's sizes are constants in its body, not in its
 * signature; the bounds above still catch a view that runs off its buffer), which written
 * argument a step's result lands in beyond its type, and launch geometry.
 *
 * The negative tests (run with --negative, the default for the tiny captioner) prove the
 * check bites: a cap.cu with one parameter removed, one with a `const float *` turned into
 * `const int *`, one without extern "C", a cap.c whose kernel reads a float buffer as int,
 * and a plan whose step has two arguments of different types swapped must each fail with the
 * matching message.
 *
 * Usage: test_kernel_abi [MODEL] [--negative] [-D NAME=VALUE]...  (MODEL relative to the
 * source tree; without arguments: models/captioner_tiny.json --negative).
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <clang-c/Index.h>

#include "cap_artifact.h"
#include "passes/testfiles.h"

/* ---- signatures ------------------------------------------------------------------------- */

typedef enum {
    ARG_MISSING = 0, /* bufs[K] never seen (C) */
    ARG_UNTYPED,     /* bufs[K] used without a cast (memcpy's operands) */
    ARG_UNUSED,      /* (void)bufs[K] */
    ARG_F32,
    ARG_I32,
    ARG_OTHER, /* a pointer to anything else, or not a pointer at all */
} ArgType;

static const char *const ARG_TYPE_NAMES[] = {"missing", "untyped", "unused", "f32", "i32",
                                             "other"};

static bool typed(ArgType t) { return t == ARG_F32 || t == ARG_I32 || t == ARG_OTHER; }

typedef struct SigArg {
    ArgType type;
    bool is_const; /* meaningful when typed */
} SigArg;

typedef struct Sig {
    char *name;
    int n_args;
    SigArg *args;
    char *problem; /* the first thing wrong with its ABI as written (malloc'd), or NULL */
} Sig;

typedef struct SigTable {
    Sig *sigs;
    int n, cap;
    char *error; /* the file did not parse (malloc'd), or NULL */
} SigTable;

static void sig_table_free(SigTable *t) {
    for (int i = 0; i < t->n; i++) {
        free(t->sigs[i].name);
        free(t->sigs[i].args);
        free(t->sigs[i].problem);
    }
    free(t->sigs);
    free(t->error);
    memset(t, 0, sizeof *t);
}

static char *vformat(const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s != NULL) vsnprintf(s, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

static char *format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *format(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

/* The first problem of a signature only: one is enough to fail, and it is the clearest. */
static void sig_problem(Sig *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sig_problem(Sig *s, const char *fmt, ...) {
    if (s->problem != NULL) return;
    va_list ap;
    va_start(ap, fmt);
    s->problem = vformat(fmt, ap);
    va_end(ap);
}

static Sig *sig_add(SigTable *t, const char *name) {
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 64;
        Sig *s = realloc(t->sigs, (size_t)cap * sizeof *s);
        if (s == NULL) return NULL;
        t->sigs = s;
        t->cap = cap;
    }
    Sig *s = &t->sigs[t->n];
    memset(s, 0, sizeof *s);
    s->name = strdup(name);
    if (s->name == NULL) return NULL;
    t->n++;
    return s;
}

/* Argument k of s, growing the list (C kernels reveal their arguments in any order). */
static SigArg *sig_arg(Sig *s, int k) {
    if (k >= s->n_args) {
        SigArg *a = realloc(s->args, (size_t)(k + 1) * sizeof *a);
        if (a == NULL) return NULL;
        memset(a + s->n_args, 0, (size_t)(k + 1 - s->n_args) * sizeof *a);
        s->args = a;
        s->n_args = k + 1;
    }
    return &s->args[k];
}

static const Sig *sig_find(const SigTable *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->sigs[i].name, name) == 0) return &t->sigs[i];
    return NULL;
}

static char *take_string(CXString s) {
    const char *c = clang_getCString(s);
    char *out = strdup(c != NULL ? c : "");
    clang_disposeString(s);
    return out;
}

/* A pointer type's pointee as an ArgType (with its constness); ARG_OTHER for a non-pointer. */
static ArgType pointer_arg_type(CXType t, bool *is_const) {
    t = clang_getCanonicalType(t);
    *is_const = false;
    if (t.kind != CXType_Pointer) return ARG_OTHER;
    CXType pointee = clang_getPointeeType(t);
    *is_const = clang_isConstQualifiedType(pointee) != 0;
    switch (clang_getCanonicalType(pointee).kind) {
    case CXType_Float: return ARG_F32;
    case CXType_Int: return ARG_I32; /* int32_t in C, int in CUDA: the same 32-bit int here */
    default: return ARG_OTHER;
    }
}

/* The first error libclang reported, as "FILE:LINE:COL: message", or NULL. */
static char *first_error(CXTranslationUnit tu) {
    char *out = NULL;
    unsigned n = clang_getNumDiagnostics(tu);
    for (unsigned i = 0; i < n && out == NULL; i++) {
        CXDiagnostic dg = clang_getDiagnostic(tu, i);
        if (clang_getDiagnosticSeverity(dg) >= CXDiagnostic_Error)
            out = take_string(clang_formatDiagnostic(dg, CXDiagnostic_DisplaySourceLocation |
                                                             CXDiagnostic_DisplayColumn));
        clang_disposeDiagnostic(dg);
    }
    return out;
}

typedef struct Parse {
    CXIndex index;
    CXTranslationUnit tu;
} Parse;

static void parse_dispose(Parse *p) {
    if (p->tu != NULL) clang_disposeTranslationUnit(p->tu);
    if (p->index != NULL) clang_disposeIndex(p->index);
    memset(p, 0, sizeof *p);
}

/* Parses path; on failure t->error says why. */
static bool parse_file(Parse *p, SigTable *t, const char *path, const char *const *args, int n_args,
                       struct CXUnsavedFile *unsaved, unsigned n_unsaved, unsigned options) {
    p->index = clang_createIndex(0, 0);
    enum CXErrorCode ec =
        p->index == NULL ? CXError_Failure
                         : clang_parseTranslationUnit2(p->index, path, args, n_args, unsaved,
                                                       n_unsaved, options, &p->tu);
    if (ec != CXError_Success || p->tu == NULL) {
        t->error = format("libclang could not parse %s (error %d)", path, (int)ec);
        return false;
    }
    t->error = first_error(p->tu);
    return t->error == NULL;
}

/* ---- cap.c: kernels and how their bodies unpack bufs ---------------------------------- */

typedef struct CWalk {
    CXCursor bufs;   /* the kernel's parameter */
    Sig *sig;
    int cast;        /* the ArgType of the explicit cast directly above, or -1: none */
    bool cast_const;
    bool oom;
} CWalk;

/* A node's first two children and how many it has. */
typedef struct Kids {
    CXCursor c[2];
    int n;
} Kids;

static enum CXChildVisitResult collect_kid(CXCursor c, CXCursor parent, void *data) {
    (void)parent;
    Kids *k = data;
    if (k->n < 2) k->c[k->n] = c;
    k->n++;
    return CXChildVisit_Continue;
}

static Kids kids_of(CXCursor c) {
    Kids k = {.n = 0};
    clang_visitChildren(c, collect_kid, &k);
    return k;
}

/* c without the implicit conversions and parentheses libclang shows around it. */
static CXCursor strip(CXCursor c) {
    for (;;) {
        enum CXCursorKind kind = clang_getCursorKind(c);
        if (kind != CXCursor_UnexposedExpr && kind != CXCursor_ParenExpr) return c;
        Kids k = kids_of(c);
        if (k.n != 1) return c;
        c = k.c[0];
    }
}

static bool is_bufs(const CWalk *w, CXCursor c) {
    c = strip(c);
    return clang_getCursorKind(c) == CXCursor_DeclRefExpr &&
           clang_equalCursors(clang_getCursorReferenced(c), w->bufs);
}

/* bufs[K]: argument K, typed by the cast directly around it. */
static void c_subscript(CWalk *w, CXCursor c) {
    Kids kids = kids_of(c);
    long long k = -1;
    if (kids.n == 2) {
        CXEvalResult r = clang_Cursor_Evaluate(kids.c[1]);
        if (r != NULL && clang_EvalResult_getKind(r) == CXEval_Int)
            k = clang_EvalResult_getAsLongLong(r);
        if (r != NULL) clang_EvalResult_dispose(r);
    }
    if (k < 0 || k > 4096) {
        sig_problem(w->sig, "bufs indexed by something other than a small constant");
        return;
    }
    SigArg *a = sig_arg(w->sig, (int)k);
    if (a == NULL) {
        w->oom = true;
        return;
    }
    ArgType t = w->cast < 0 ? ARG_UNTYPED : (ArgType)w->cast;
    if (typed(t)) {
        if (typed(a->type) && (a->type != t || a->is_const != w->cast_const))
            sig_problem(w->sig, "bufs[%lld] is used as %s%s and as %s%s", k,
                        a->is_const ? "const " : "", ARG_TYPE_NAMES[a->type],
                        w->cast_const ? "const " : "", ARG_TYPE_NAMES[t]);
        a->type = t;
        a->is_const = w->cast_const;
    } else if (!typed(a->type) && a->type != ARG_UNTYPED) {
        a->type = t; /* untyped wins over unused: memcpy does use its operands */
    }
}

static enum CXChildVisitResult c_walk(CXCursor c, CXCursor parent, void *data) {
    (void)parent;
    CWalk *w = data;
    enum CXCursorKind k = clang_getCursorKind(c);
    if (k == CXCursor_ArraySubscriptExpr) {
        Kids kids = kids_of(c);
        if (kids.n == 2 && is_bufs(w, kids.c[0])) {
            c_subscript(w, c);
            return CXChildVisit_Continue;
        }
    }
    if (k == CXCursor_DeclRefExpr && clang_equalCursors(clang_getCursorReferenced(c), w->bufs)) {
        sig_problem(w->sig, "bufs used other than as bufs[K]");
        return CXChildVisit_Continue;
    }
    int saved = w->cast;
    bool saved_const = w->cast_const;
    if (k == CXCursor_CStyleCastExpr) {
        CXType ty = clang_getCanonicalType(clang_getCursorType(c));
        w->cast = ty.kind == CXType_Void ? (int)ARG_UNUSED
                                         : (int)pointer_arg_type(ty, &w->cast_const);
    } else if (k != CXCursor_UnexposedExpr && k != CXCursor_ParenExpr) {
        w->cast = -1; /* a cast further up does not type what is below this node */
    }
    clang_visitChildren(c, c_walk, w);
    w->cast = saved;
    w->cast_const = saved_const;
    return CXChildVisit_Continue;
}

static bool is_kernel_param(CXCursor fn) {
    if (clang_Cursor_getNumArguments(fn) != 1) return false;
    if (clang_getCanonicalType(clang_getResultType(clang_getCursorType(fn))).kind != CXType_Void)
        return false;
    /* void *const * */
    CXType t = clang_getCanonicalType(clang_getCursorType(clang_Cursor_getArgument(fn, 0)));
    if (t.kind != CXType_Pointer) return false;
    CXType p = clang_getPointeeType(t);
    if (!clang_isConstQualifiedType(p) || clang_getCanonicalType(p).kind != CXType_Pointer)
        return false;
    return clang_getCanonicalType(clang_getPointeeType(clang_getCanonicalType(p))).kind ==
           CXType_Void;
}

typedef struct TopWalk {
    SigTable *t;
    bool oom;
} TopWalk;

static enum CXChildVisitResult c_top(CXCursor c, CXCursor parent, void *data) {
    (void)parent;
    TopWalk *tw = data;
    if (clang_getCursorKind(c) != CXCursor_FunctionDecl || !clang_isCursorDefinition(c) ||
        !clang_Location_isFromMainFile(clang_getCursorLocation(c)) || !is_kernel_param(c))
        return CXChildVisit_Continue;
    char *name = take_string(clang_getCursorSpelling(c));
    Sig *s = name != NULL ? sig_add(tw->t, name) : NULL;
    free(name);
    if (s == NULL) {
        tw->oom = true;
        return CXChildVisit_Break;
    }
    CWalk w = {clang_Cursor_getArgument(c, 0), s, -1, false, false};
    /* The body only: the parameter's own declaration is not a use. */
    clang_visitChildren(c, c_walk, &w);
    if (w.oom) {
        tw->oom = true;
        return CXChildVisit_Break;
    }
    for (int i = 0; i < s->n_args; i++)
        if (s->args[i].type == ARG_MISSING) sig_problem(s, "bufs[%d] is never used", i);
    return CXChildVisit_Continue;
}

static SigTable parse_c(const char *path) {
    SigTable t = {0};
    Parse p = {0};
    static const char *const args[] = {"-xc", "-std=c11"};
    if (parse_file(&p, &t, path, args, 2, NULL, 0, CXTranslationUnit_None)) {
        TopWalk tw = {&t, false};
        clang_visitChildren(clang_getTranslationUnitCursor(p.tu), c_top, &tw);
        if (tw.oom) t.error = format("out of memory reading %s", path);
    }
    parse_dispose(&p);
    return t;
}

/* ---- cap.cu: __global__ functions and their parameters -------------------------------- */

/* What libclang needs besides cap.cu's own text: the CUDA keywords its declarations use, as
 * the CUDA headers define them. Bodies are skipped, so nothing they call is needed. */
static const char CUDA_SHIM_NAME[] = "/capc-abi/cuda_keywords.h";
static const char CUDA_SHIM[] =
    "#define __global__ __attribute__((global))\n"
    "#define __device__ __attribute__((device))\n"
    "#define __forceinline__ __inline__ __attribute__((always_inline))\n";

static enum CXChildVisitResult has_global_attr(CXCursor c, CXCursor parent, void *data) {
    (void)parent;
    if (clang_getCursorKind(c) == CXCursor_CUDAGlobalAttr) {
        *(bool *)data = true;
        return CXChildVisit_Break;
    }
    return CXChildVisit_Continue;
}

static enum CXChildVisitResult cu_top(CXCursor c, CXCursor parent, void *data) {
    (void)parent;
    TopWalk *tw = data;
    enum CXCursorKind k = clang_getCursorKind(c);
    if (k == CXCursor_LinkageSpec || k == CXCursor_UnexposedDecl) return CXChildVisit_Recurse;
    if (k != CXCursor_FunctionDecl || !clang_Location_isFromMainFile(clang_getCursorLocation(c)))
        return CXChildVisit_Continue;
    bool global = false;
    clang_visitChildren(c, has_global_attr, &global);
    if (!global) return CXChildVisit_Continue;
    char *name = take_string(clang_getCursorSpelling(c));
    char *mangled = take_string(clang_Cursor_getMangling(c));
    Sig *s = name != NULL && mangled != NULL ? sig_add(tw->t, name) : NULL;
    if (s != NULL && strcmp(mangled, name) != 0)
        sig_problem(s, "its symbol is %s, not its name (not extern \"C\")", mangled);
    free(name);
    free(mangled);
    if (s == NULL) {
        tw->oom = true;
        return CXChildVisit_Break;
    }
    if (clang_getCanonicalType(clang_getResultType(clang_getCursorType(c))).kind != CXType_Void)
        sig_problem(s, "it does not return void");
    int n = clang_Cursor_getNumArguments(c);
    for (int i = 0; i < n; i++) {
        SigArg *a = sig_arg(s, i);
        if (a == NULL) {
            tw->oom = true;
            return CXChildVisit_Break;
        }
        a->type = pointer_arg_type(clang_getCursorType(clang_Cursor_getArgument(c, (unsigned)i)),
                                   &a->is_const);
        if (a->type == ARG_OTHER) sig_problem(s, "parameter %d is not a float or int pointer", i);
    }
    return CXChildVisit_Continue;
}

static SigTable parse_cuda(const char *path) {
    SigTable t = {0};
    Parse p = {0};
    static const char *const args[] = {"-x", "cuda", "--cuda-device-only", "-nocudainc",
                                       "-nocudalib", "--cuda-gpu-arch=sm_80", "-include",
                                       CUDA_SHIM_NAME};
    struct CXUnsavedFile shim = {CUDA_SHIM_NAME, CUDA_SHIM, sizeof CUDA_SHIM - 1};
    if (parse_file(&p, &t, path, args, (int)(sizeof args / sizeof *args), &shim, 1,
                   CXTranslationUnit_SkipFunctionBodies)) {
        TopWalk tw = {&t, false};
        clang_visitChildren(clang_getTranslationUnitCursor(p.tu), cu_top, &tw);
        if (tw.oom) t.error = format("out of memory reading %s", path);
    }
    parse_dispose(&p);
    return t;
}

/* ---- the check -------------------------------------------------------------------------- */

typedef struct Report {
    int n_errors;
    char *text; /* the first few, one a line */
    size_t len;
    /* What was compared, so that a check that compared nothing cannot pass. */
    long n_c_typed;      /* kernel arguments typed in both cap.c and cap.cu */
    long n_tensor_args;  /* step arguments typed against a state/input/output tensor */
    long n_arena_reads;  /* step arguments typed by the arena flow */
} Report;

#define REPORT_MAX_SHOWN 12

static void report(Report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(Report *r, const char *fmt, ...) {
    if (r->n_errors++ >= REPORT_MAX_SHOWN) return;
    va_list ap;
    va_start(ap, fmt);
    char *line = vformat(fmt, ap);
    va_end(ap);
    if (line == NULL) return;
    size_t n = strlen(line);
    char *text = realloc(r->text, r->len + n + 2);
    if (text != NULL) {
        memcpy(text + r->len, line, n);
        text[r->len + n] = '\n';
        text[r->len + n + 1] = '\0';
        r->text = text;
        r->len += n + 1;
    }
    free(line);
}

static bool report_has(const Report *r, const char *what) {
    return r->text != NULL && strstr(r->text, what) != NULL;
}

/* Arena bytes by the type they were last written as: disjoint [lo, hi) runs, sorted. */
typedef struct Run {
    int64_t lo, hi;
    ArgType type;
} Run;

typedef struct ArenaTypes {
    Run *runs;
    int n, cap;
} ArenaTypes;

/* Marks [lo, hi) as type t: the runs it overlaps are cut back or dropped. */
static bool arena_write(ArenaTypes *m, int64_t lo, int64_t hi, ArgType t) {
    if (m->n + 2 > m->cap) {
        int cap = m->cap ? m->cap * 2 : 256;
        Run *r = realloc(m->runs, (size_t)cap * sizeof *r);
        if (r == NULL) return false;
        m->runs = r;
        m->cap = cap;
    }
    int out = 0, at = -1;
    Run tail = {0, 0, ARG_MISSING};
    bool has_tail = false;
    for (int i = 0; i < m->n; i++) {
        Run r = m->runs[i];
        if (r.hi <= lo || r.lo >= hi) { /* untouched */
            if (at < 0 && r.lo >= hi) at = out;
            m->runs[out++] = r;
            continue;
        }
        if (r.hi > hi) { /* the part after [lo, hi) survives */
            tail = (Run){hi, r.hi, r.type};
            has_tail = true;
        }
        if (r.lo < lo) m->runs[out++] = (Run){r.lo, lo, r.type};
    }
    if (at < 0) at = out;
    int add = has_tail ? 2 : 1;
    memmove(m->runs + at + add, m->runs + at, (size_t)(out - at) * sizeof *m->runs);
    m->runs[at] = (Run){lo, hi, t};
    if (has_tail) m->runs[at + 1] = tail;
    m->n = out + add;
    return true;
}

/* The first problem of reading [lo, hi) as type t: bytes never written, or written as
 * another type. NULL when it is fine. */
static const char *arena_read(const ArenaTypes *m, int64_t lo, int64_t hi, ArgType t,
                              ArgType *found) {
    int64_t covered = lo;
    for (int i = 0; i < m->n && m->runs[i].lo < hi; i++) {
        const Run *r = &m->runs[i];
        if (r->hi <= lo) continue;
        if (r->lo > covered) return "never written earlier in the entry";
        if (r->type != t) {
            *found = r->type;
            return "written as another type";
        }
        covered = r->hi;
    }
    return covered >= hi ? NULL : "never written earlier in the entry";
}

static const char *SPACE_NAMES[] = {"arena", "state", "input", "output"};

/* The tensor a non-arena ref points into, or NULL (reported) when it does not exist. */
static const CapTensorInfo *ref_tensor(const CapArtifact *a, const CapEntry *e,
                                       const CapBufRef *ref) {
    switch (ref->space) {
    case CAP_BUF_STATE:
        return ref->index >= 0 && ref->index < a->n_state ? &a->state[ref->index].t : NULL;
    case CAP_BUF_INPUT:
        return ref->index >= 0 && ref->index < e->n_inputs ? &e->inputs[ref->index] : NULL;
    case CAP_BUF_OUTPUT:
        return ref->index >= 0 && ref->index < e->n_outputs ? &e->outputs[ref->index] : NULL;
    default: return NULL;
    }
}

/* The kernel table against both files (and cap.so's symbols when lib is given). */
static void check_kernels(const CapArtifact *a, void *lib, const SigTable *c, const SigTable *cu,
                          Report *r) {
    for (int k = 0; k < a->n_kernels; k++) {
        const CapKernel *ker = &a->kernels[k];
        const Sig *sc = sig_find(c, ker->name), *scu = sig_find(cu, ker->name);
        if (sc == NULL) report(r, "kernel %s: no C kernel of that name in cap.c", ker->name);
        else if (sc->problem) report(r, "kernel %s in cap.c: %s", ker->name, sc->problem);
        if (scu == NULL)
            report(r, "kernel %s: no __global__ function of that name in cap.cu", ker->name);
        else if (scu->problem) report(r, "kernel %s in cap.cu: %s", ker->name, scu->problem);
        if (lib != NULL) {
            void *sym = dlsym(lib, ker->name);
            if (ker->cpu == NULL || (void *)ker->cpu != sym)
                report(r, "kernel %s: CapKernel.cpu is not cap.so's symbol %s", ker->name,
                       ker->name);
        }
        if (sc != NULL && sc->n_args != ker->n_args)
            report(r, "kernel %s: the table says %d arguments, cap.c's kernel uses %d", ker->name,
                   ker->n_args, sc->n_args);
        if (scu != NULL && scu->n_args != ker->n_args)
            report(r, "kernel %s: the table says %d arguments, cap.cu's kernel has %d parameters",
                   ker->name, ker->n_args, scu->n_args);
        if (sc == NULL || scu == NULL) continue;
        for (int i = 0; i < sc->n_args && i < scu->n_args; i++) {
            const SigArg *x = &sc->args[i], *y = &scu->args[i];
            if (typed(x->type)) r->n_c_typed++;
            if (typed(x->type) && (x->type != y->type || x->is_const != y->is_const))
                report(r, "kernel %s argument %d: %s%s in cap.c, %s%s in cap.cu", ker->name, i,
                       x->is_const ? "const " : "", ARG_TYPE_NAMES[x->type],
                       y->is_const ? "const " : "", ARG_TYPE_NAMES[y->type]);
        }
    }
}

/* One argument of a step. The parameter type is CUDA's, which is always typed; C's agrees
 * wherever C states one (check_kernels). */
static void check_arg(const CapArtifact *a, const CapEntry *e, int s, const CapKernel *ker, int i,
                      const SigArg *p, Report *r) {
    const CapBufRef *ref = &e->steps[s].args[i];
    if (ref->space < CAP_BUF_ARENA || ref->space > CAP_BUF_OUTPUT) {
        report(r, "%s step %d (%s) argument %d: no buffer space %d", e->name, s, ker->name, i,
               (int)ref->space);
        return;
    }
    const char *space = SPACE_NAMES[ref->space];
    if (ref->offset < 0 || ref->bytes <= 0 || ref->offset % 4 != 0 || ref->bytes % 4 != 0)
        report(r, "%s step %d (%s) argument %d: %s view at %lld of %lld bytes", e->name, s,
               ker->name, i, space, (long long)ref->offset, (long long)ref->bytes);
    if (ref->space == CAP_BUF_ARENA) {
        if (ref->offset + ref->bytes > e->arena_bytes)
            report(r,
                   "%s step %d (%s) argument %d: arena view [%lld, +%lld) past the arena's "
                   "%lld bytes",
                   e->name, s, ker->name, i, (long long)ref->offset, (long long)ref->bytes,
                   (long long)e->arena_bytes);
        return; /* typed by flow, in check_entry */
    }
    const CapTensorInfo *t = ref_tensor(a, e, ref);
    if (t == NULL) {
        report(r, "%s step %d (%s) argument %d: no %s tensor %d", e->name, s, ker->name, i, space,
               (int)ref->index);
        return;
    }
    if (ref->offset + ref->bytes > t->numel * 4)
        report(r, "%s step %d (%s) argument %d: view [%lld, +%lld) past %s %s's %lld bytes",
               e->name, s, ker->name, i, (long long)ref->offset, (long long)ref->bytes, space,
               t->name, (long long)(t->numel * 4));
    r->n_tensor_args++;
    ArgType want = t->dtype == CAP_DT_F32 ? ARG_F32 : t->dtype == CAP_DT_I32 ? ARG_I32 : ARG_OTHER;
    if (p->type != want)
        report(r, "%s step %d (%s) argument %d: %s %s is %s, the parameter is %s", e->name, s,
               ker->name, i, space, t->name, ARG_TYPE_NAMES[want], ARG_TYPE_NAMES[p->type]);
    if (ref->space == CAP_BUF_INPUT && !p->is_const)
        report(r, "%s step %d (%s) argument %d: input %s is passed to a written parameter",
               e->name, s, ker->name, i, t->name);
}

static void check_entry(const CapArtifact *a, const CapEntry *e, const SigTable *cu, Report *r) {
    ArenaTypes arena = {0};
    for (int s = 0; s < e->n_steps; s++) {
        const CapStep *step = &e->steps[s];
        if (step->kernel < 0 || step->kernel >= a->n_kernels) {
            report(r, "%s step %d: no kernel %d", e->name, s, (int)step->kernel);
            continue;
        }
        const CapKernel *ker = &a->kernels[step->kernel];
        if (step->n_args != ker->n_args) {
            report(r, "%s step %d (%s): %d arguments, the kernel takes %d", e->name, s, ker->name,
                   (int)step->n_args, (int)ker->n_args);
            continue;
        }
        const Sig *sig = sig_find(cu, ker->name);
        if (sig == NULL || sig->n_args != step->n_args) continue; /* reported by check_kernels */
        for (int i = 0; i < step->n_args; i++) check_arg(a, e, s, ker, i, &sig->args[i], r);
        /* Reads before writes: a kernel reads its inputs before it writes its result. */
        for (int i = 0; i < step->n_args; i++) {
            const CapBufRef *ref = &step->args[i];
            if (ref->space != CAP_BUF_ARENA || !sig->args[i].is_const) continue;
            ArgType found = ARG_MISSING;
            r->n_arena_reads++;
            const char *why = arena_read(&arena, ref->offset, ref->offset + ref->bytes,
                                         sig->args[i].type, &found);
            if (why != NULL)
                report(r, "%s step %d (%s) argument %d: reads arena [%lld, +%lld) as %s, %s%s%s",
                       e->name, s, ker->name, i, (long long)ref->offset, (long long)ref->bytes,
                       ARG_TYPE_NAMES[sig->args[i].type], why, found != ARG_MISSING ? ": " : "",
                       found != ARG_MISSING ? ARG_TYPE_NAMES[found] : "");
        }
        for (int i = 0; i < step->n_args; i++) {
            const CapBufRef *ref = &step->args[i];
            if (ref->space != CAP_BUF_ARENA || sig->args[i].is_const) continue;
            if (!arena_write(&arena, ref->offset, ref->offset + ref->bytes, sig->args[i].type)) {
                report(r, "out of memory");
                free(arena.runs);
                return;
            }
        }
    }
    free(arena.runs);
}

static void check_abi(const CapArtifact *a, void *lib, const SigTable *c, const SigTable *cu,
                      Report *r) {
    if (c->error != NULL) report(r, "cap.c: %s", c->error);
    if (cu->error != NULL) report(r, "cap.cu: %s", cu->error);
    if (c->error != NULL || cu->error != NULL) return;
    check_kernels(a, lib, c, cu, r);
    for (int e = 0; e < a->n_entries; e++) check_entry(a, &a->entries[e], cu, r);
}

/* ---- the model, compiled once ----------------------------------------------------------- */

#define MAX_DEFINES 8

static struct {
    const char *model;
    const char *name; /* the model and its -D overrides, for messages */
    const char *defines[MAX_DEFINES];
    int n_defines;
    bool negative;
} g_args = {"models/captioner_tiny.json", NULL, {0}, 0, true};

typedef struct Fixture {
    char *dir;
    void *lib;
    const CapArtifact *a;
    SigTable c, cu;
    char c_path[4200], cu_path[4200];
} Fixture;

/* Runs $CAPC_BIN with args, stderr into err_path; the exit status, or -1. */
static int run_capc(const char *err_path, char **args) {
    const char *bin = getenv("CAPC_BIN");
    if (bin == NULL) return -1;
    args[0] = (char *)bin;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0) _exit(127);
        execv(bin, args);
        _exit(127);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int setup(void **state) {
    Fixture *fx = calloc(1, sizeof *fx);
    if (fx == NULL) return -1;
    *state = fx;
    fx->dir = strdup("/tmp/capc-test-abi-XXXXXX");
    if (fx->dir == NULL || mkdtemp(fx->dir) == NULL) return -1;
    char model[4096], so[4200], src[4200], err[4200];
    snprintf(model, sizeof model, "%s/%s", source_dir(), g_args.model);
    snprintf(so, sizeof so, "%s/cap.so", fx->dir);
    snprintf(src, sizeof src, "--emit-src=%s", fx->dir);
    snprintf(err, sizeof err, "%s/stderr", fx->dir);
    char *args[8 + 2 * MAX_DEFINES] = {NULL, model, "--target=cpu", src, "-o", so};
    int n = 6;
    for (int i = 0; i < g_args.n_defines; i++) {
        args[n++] = "-D";
        args[n++] = (char *)g_args.defines[i];
    }
    args[n] = NULL;
    double t0 = now();
    int status = run_capc(err, args);
    if (status != 0) {
        char *text = read_text_file(err);
        fprintf(stderr, "capc %s exited %d: %s\n", model, status, text ? text : "");
        free(text);
        return -1;
    }
    double t1 = now();
    /* RTLD_NODELETE: cap.so pulls in libgomp, whose idle threads must not lose their code. */
    fx->lib = dlopen(so, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (fx->lib == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return -1;
    }
    fx->a = dlsym(fx->lib, CAP_ARTIFACT_SYMBOL);
    if (fx->a == NULL || fx->a->version != CAP_ARTIFACT_VERSION) return -1;
    snprintf(fx->c_path, sizeof fx->c_path, "%s/cap.c", fx->dir);
    snprintf(fx->cu_path, sizeof fx->cu_path, "%s/cap.cu", fx->dir);
    fx->c = parse_c(fx->c_path);
    fx->cu = parse_cuda(fx->cu_path);
    fprintf(stderr, "%s: capc %.1f s, libclang %.1f s; %d kernels, %d in cap.c, %d in cap.cu\n",
            g_args.name, t1 - t0, now() - t1, fx->a->n_kernels, fx->c.n, fx->cu.n);
    return 0;
}

static int teardown(void **state) {
    Fixture *fx = *state;
    if (fx == NULL) return 0;
    sig_table_free(&fx->c);
    sig_table_free(&fx->cu);
    if (fx->lib != NULL) dlclose(fx->lib);
    if (fx->dir != NULL) remove_tree(fx->dir);
    free(fx->dir);
    free(fx);
    return 0;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_signatures_match_plan(void **state) {
    Fixture *fx = *state;
    Report r = {0};
    check_abi(fx->a, fx->lib, &fx->c, &fx->cu, &r);
    /* Something was compared: every kernel in both files, and every entry has steps. */
    if (fx->a->n_kernels == 0 || fx->a->n_entries == 0) report(&r, "an empty artifact");
    if (r.n_c_typed == 0 || r.n_tensor_args == 0 || r.n_arena_reads == 0)
        report(&r,
               "nothing compared: %ld C/CUDA argument types, %ld tensor arguments, %ld arena "
               "reads",
               r.n_c_typed, r.n_tensor_args, r.n_arena_reads);
    if (fx->c.n < fx->a->n_kernels || fx->cu.n < fx->a->n_kernels)
        report(&r, "%d kernels in the table, %d in cap.c, %d in cap.cu", fx->a->n_kernels,
               fx->c.n, fx->cu.n);
    if (r.n_errors > 0) {
        fprintf(stderr, "%d ABI errors; the first:\n%s", r.n_errors, r.text);
        free(r.text);
        fail();
    }
    int steps = 0;
    for (int e = 0; e < fx->a->n_entries; e++) steps += fx->a->entries[e].n_steps;
    fprintf(stderr,
            "%s: %d kernels and %d steps in %d entries agree with cap.c and cap.cu (%ld argument "
            "types compared between the two, %ld arguments against their tensor's dtype, %ld "
            "arena reads against the type last written)\n",
            g_args.name, fx->a->n_kernels, steps, fx->a->n_entries, r.n_c_typed,
            r.n_tensor_args, r.n_arena_reads);
}

/* Writes text into the fixture's dir as name, returns the path (static buffer). */
static const char *write_copy(const Fixture *fx, const char *name, const char *text) {
    static char path[4300];
    snprintf(path, sizeof path, "%s/%s", fx->dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* text with the first `from` at or after `after` replaced by `to` (malloc'd). */
static char *replace_first(const char *text, const char *after, const char *from, const char *to) {
    const char *start = strstr(text, after);
    assert_non_null(start);
    const char *at = strstr(start, from);
    assert_non_null(at);
    size_t head = (size_t)(at - text), n = strlen(text), nf = strlen(from), nt = strlen(to);
    char *out = malloc(n - nf + nt + 1);
    assert_non_null(out);
    memcpy(out, text, head);
    memcpy(out + head, to, nt);
    memcpy(out + head + nt, at + nf, n - head - nf + 1);
    return out;
}

/* The check on the fixture's artifact with cap.cu (or cap.c) replaced by the mutated text;
 * it must fail with a message containing want. */
static void expect_failure(Fixture *fx, const char *c_text, const char *cu_text,
                           const char *want) {
    SigTable c = {0}, cu = {0};
    if (c_text != NULL) c = parse_c(write_copy(fx, "broken.c", c_text));
    if (cu_text != NULL) cu = parse_cuda(write_copy(fx, "broken.cu", cu_text));
    Report r = {0};
    check_abi(fx->a, fx->lib, c_text != NULL ? &c : &fx->c, cu_text != NULL ? &cu : &fx->cu, &r);
    sig_table_free(&c);
    sig_table_free(&cu);
    bool ok = r.n_errors > 0 && report_has(&r, want);
    if (!ok) fprintf(stderr, "wanted an error with \"%s\", got %d:\n%s", want, r.n_errors,
                     r.text ? r.text : "");
    else fprintf(stderr, "as wanted (%d errors), the first: %.*s", r.n_errors,
                 (int)(strchr(r.text, '\n') - r.text + 1), r.text);
    free(r.text);
    assert_true(ok);
}

/* The first kernel with at least min_args arguments whose argument 1 is a read-only f32
 * buffer in both files (so that a mutation of it shows in the comparison of the two). */
static const CapKernel *kernel_with_args(const Fixture *fx, int min_args) {
    for (int k = 0; k < fx->a->n_kernels; k++) {
        const CapKernel *ker = &fx->a->kernels[k];
        const Sig *c = sig_find(&fx->c, ker->name), *cu = sig_find(&fx->cu, ker->name);
        if (ker->n_args >= min_args && c != NULL && cu != NULL && c->n_args >= 2 &&
            cu->n_args >= 2 && c->args[1].type == ARG_F32 && c->args[1].is_const &&
            cu->args[1].type == ARG_F32 && cu->args[1].is_const)
            return ker;
    }
    fail_msg("no kernel with %d arguments", min_args);
    return NULL;
}

static void test_negative_cuda_param_removed(void **state) {
    Fixture *fx = *state;
    char *cu = read_text_file(fx->cu_path);
    assert_non_null(cu);
    const CapKernel *k = kernel_with_args(fx, 3);
    char head[400], last[64];
    snprintf(head, sizeof head, "__global__ void %s(", k->name);
    snprintf(last, sizeof last, " *a%d)", k->n_args - 1);
    /* ", const float *a2)" -> ")": the last parameter's type and name, with its comma. */
    const char *start = strstr(cu, head), *end = start ? strstr(start, last) : NULL;
    assert_non_null(end);
    const char *comma = end;
    while (comma > start && *comma != ',') comma--;
    char *from = strndup(comma, (size_t)(end - comma) + strlen(last));
    assert_non_null(from);
    char *broken = replace_first(cu, head, from, ")");
    char want[400];
    snprintf(want, sizeof want, "kernel %s: the table says %d arguments, cap.cu's kernel has %d",
             k->name, k->n_args, k->n_args - 1);
    expect_failure(fx, NULL, broken, want);
    free(from);
    free(broken);
    free(cu);
}

static void test_negative_cuda_float_to_int(void **state) {
    Fixture *fx = *state;
    char *cu = read_text_file(fx->cu_path);
    assert_non_null(cu);
    const CapKernel *k = kernel_with_args(fx, 2);
    char head[400], want[400];
    snprintf(head, sizeof head, "__global__ void %s(", k->name);
    char *broken = replace_first(cu, head, "const float *a1", "const int *a1");
    snprintf(want, sizeof want, "kernel %s argument 1: const f32 in cap.c, const i32 in cap.cu",
             k->name);
    expect_failure(fx, NULL, broken, want);
    free(broken);
    free(cu);
}

static void test_negative_cuda_not_extern_c(void **state) {
    Fixture *fx = *state;
    char *cu = read_text_file(fx->cu_path);
    assert_non_null(cu);
    const CapKernel *k = kernel_with_args(fx, 2);
    char from[400], to[400], want[400];
    snprintf(from, sizeof from, "extern \"C\" __global__ void %s(", k->name);
    snprintf(to, sizeof to, "__global__ void %s(", k->name);
    char *broken = replace_first(cu, from, from, to);
    snprintf(want, sizeof want, "kernel %s in cap.cu: its symbol is _Z", k->name);
    expect_failure(fx, NULL, broken, want);
    free(broken);
    free(cu);
}

static void test_negative_c_float_to_int(void **state) {
    Fixture *fx = *state;
    char *c = read_text_file(fx->c_path);
    assert_non_null(c);
    const CapKernel *k = kernel_with_args(fx, 2);
    char head[400], want[400];
    snprintf(head, sizeof head, "void %s(void *const *bufs) {", k->name);
    /* The declaration and its cast together, so the body still compiles (as int). */
    char *broken = replace_first(c, head, "const float *a1 = (const float *)bufs[1];",
                                 "const int32_t *a1 = (const int32_t *)bufs[1];");
    snprintf(want, sizeof want, "kernel %s argument 1: const i32 in cap.c, const f32 in cap.cu",
             k->name);
    expect_failure(fx, broken, NULL, want);
    free(broken);
    free(c);
}

/* A plan whose step passes two arguments of different types in the wrong order. */
static void test_negative_plan_args_swapped(void **state) {
    Fixture *fx = *state;
    const CapArtifact *a = fx->a;
    for (int e = 0; e < a->n_entries; e++) {
        const CapEntry *entry = &a->entries[e];
        for (int s = 0; s < entry->n_steps; s++) {
            const CapStep *step = &entry->steps[s];
            const Sig *sig = sig_find(&fx->cu, a->kernels[step->kernel].name);
            if (sig == NULL || sig->n_args != step->n_args) continue;
            for (int i = 0; i < step->n_args; i++)
                for (int j = i + 1; j < step->n_args; j++) {
                    if (sig->args[i].type == sig->args[j].type) continue;
                    /* A copy of the artifact sharing everything but this step's arguments. */
                    CapArtifact bad = *a;
                    CapEntry *entries = malloc((size_t)a->n_entries * sizeof *entries);
                    CapStep *steps = malloc((size_t)entry->n_steps * sizeof *steps);
                    CapBufRef *args = malloc((size_t)step->n_args * sizeof *args);
                    assert_true(entries != NULL && steps != NULL && args != NULL);
                    memcpy(entries, a->entries, (size_t)a->n_entries * sizeof *entries);
                    memcpy(steps, entry->steps, (size_t)entry->n_steps * sizeof *steps);
                    memcpy(args, step->args, (size_t)step->n_args * sizeof *args);
                    args[i] = step->args[j];
                    args[j] = step->args[i];
                    steps[s].args = args;
                    entries[e].steps = steps;
                    bad.entries = entries;
                    Report r = {0};
                    check_abi(&bad, fx->lib, &fx->c, &fx->cu, &r);
                    char want[400];
                    snprintf(want, sizeof want, "%s step %d (%s) argument %d", entry->name, s,
                             a->kernels[step->kernel].name, i);
                    bool ok = r.n_errors > 0 && report_has(&r, want);
                    fprintf(stderr, "arguments %d and %d of %s step %d swapped: %d errors%s%s",
                            i, j, entry->name, s, r.n_errors, r.text ? ", the first: " : "\n",
                            r.text ? r.text : "");
                    free(r.text);
                    free(args);
                    free(steps);
                    free(entries);
                    assert_true(ok);
                    return;
                }
        }
    }
    fail_msg("no step with arguments of two types");
}

int main(int argc, char **argv) {
    if (argc > 1) {
        g_args.model = NULL;
        g_args.negative = false;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--negative") == 0) {
            g_args.negative = true;
        } else if (strcmp(argv[i], "-D") == 0 && i + 1 < argc && g_args.n_defines < MAX_DEFINES) {
            g_args.defines[g_args.n_defines++] = argv[++i];
        } else if (argv[i][0] != '-' && g_args.model == NULL) {
            g_args.model = argv[i];
        } else {
            fprintf(stderr, "usage: %s [MODEL] [--negative] [-D NAME=VALUE]...\n", argv[0]);
            return 2;
        }
    }
    if (g_args.model == NULL) g_args.model = "models/captioner_tiny.json";
    /* The group's name says which variant ran: "models/captioner_tiny.json -D act=2". */
    char name[512];
    int len = snprintf(name, sizeof name, "%s", g_args.model);
    for (int i = 0; i < g_args.n_defines && len > 0 && (size_t)len < sizeof name; i++)
        len += snprintf(name + len, sizeof name - (size_t)len, " -D %s", g_args.defines[i]);
    g_args.name = name;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signatures_match_plan),
        cmocka_unit_test(test_negative_cuda_param_removed),
        cmocka_unit_test(test_negative_cuda_float_to_int),
        cmocka_unit_test(test_negative_cuda_not_extern_c),
        cmocka_unit_test(test_negative_c_float_to_int),
        cmocka_unit_test(test_negative_plan_args_swapped),
    };
    size_t n = g_args.negative ? sizeof tests / sizeof *tests : 1;
    return _cmocka_run_group_tests(name, tests, n, setup, teardown);
}
