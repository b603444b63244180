/* test_nonfinite.c — NaN, infinities and signed zeros behave as in PyTorch, op by op.
 *
 * tests/golden/nonfinite.txt (written once by tests/golden/make_nonfinite_golden.py with
 * PyTorch) holds one-op functions in IR text, inputs full of special values and PyTorch's
 * result. Each function runs in the float64 reference interpreter and as its generated C
 * kernel (all compiled into one shared object); both must give NaN exactly where PyTorch
 * does, the same infinities, finite values within 1e-5 * max(1, |want|) and i32 results
 * exactly (+0 and -0 count as equal).
 *
 * The first test walks the op table: an op with no case in the file fails it, unless it is
 * exempt below because no value of its result depends on a tensor operand. So a new op
 * cannot skip this check. (test_c_kernels also runs every op's kernel against the reference
 * on random inputs sprinkled with NaN and infinities; test_cuda_compile compiles the CUDA
 * form of every kernel, and test_cuda_kernels runs them on a GPU.)
 */
#include <dlfcn.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "codegen.h"
#include "codegen/case_kernel.h"
#include "interp.h"
#include "ops.h"
#include "passes/testfiles.h"

#define TOL 1e-5
#define MAX_CASES 128
#define MAX_INPUTS 8
#define MAX_IR 8192 /* bytes of one case's IR text */

/* Ops whose result no tensor operand can make non-finite: param reads module state (no
 * kernel), full and sinusoid_table are fixed at compile time. */
static const char *const EXEMPT[] = {"param", "full", "sinusoid_table"};

typedef struct Values {
    char type[64];
    double *v;
    int64_t n;
} Values;

typedef struct Golden {
    char op[64];
    int line;            /* of "case" in the file */
    char *ir;            /* the IR text */
    Values in[MAX_INPUTS], want;
    int n_in;
    Module *m;
    CaseKernel ck;
    char err[1200];
} Golden;

static Golden goldens[MAX_CASES];
static int n_goldens;
static void *lib;
static char dir[64];
static const char *GOLDEN_FILE = "tests/golden/nonfinite.txt";

/* "TYPE v v v" after the keyword; values parsed with strtod (nan, inf, -0.0). */
static int parse_values(const char *text, Values *out) {
    const char *sp = strchr(text, ' ');
    size_t len = sp ? (size_t)(sp - text) : strlen(text);
    if (len >= sizeof out->type) return -1;
    memcpy(out->type, text, len);
    out->type[len] = '\0';
    out->n = 0;
    out->v = malloc(strlen(text) * sizeof(double) + sizeof(double));
    const char *p = sp;
    while (p && *p) {
        while (*p == ' ' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        out->v[out->n++] = strtod(p, &end);
        if (end == p) return -1;
        p = end;
    }
    return 0;
}

/* Splits the file into goldens. Returns 0, or -1 with a message naming the line. */
static int read_goldens(const char *path, char *err, size_t size) {
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", source_dir(), path);
    char *text = read_text_file(full);
    if (!text) {
        snprintf(err, size, "cannot read %.900s", full);
        return -1;
    }
    Golden *g = NULL;
    bool in_ir = false;
    int line = 0;
    size_t ir_len = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        line++;
        if (strncmp(l, "case ", 5) == 0) {
            if (n_goldens == MAX_CASES) break;
            g = &goldens[n_goldens++];
            snprintf(g->op, sizeof g->op, "%s", l + 5);
            g->line = line;
            g->ir = calloc(1, MAX_IR);
            ir_len = 0;
            in_ir = true;
        } else if (g && in_ir && strcmp(l, "end") == 0) {
            in_ir = false;
        } else if (g && in_ir) {
            if (ir_len + strlen(l) + 2 > MAX_IR) goto bad;
            ir_len += (size_t)sprintf(g->ir + ir_len, "%s\n", l);
        } else if (g && strncmp(l, "in ", 3) == 0 && g->n_in < MAX_INPUTS) {
            if (parse_values(l + 3, &g->in[g->n_in++]) != 0) goto bad;
        } else if (g && strncmp(l, "want ", 5) == 0) {
            if (parse_values(l + 5, &g->want) != 0) goto bad;
        } else if (l[0] != '#') {
            goto bad;
        }
    }
    free(text);
    return 0;
bad:
    snprintf(err, size, "%s:%d: unexpected line", path, line);
    free(text);
    return -1;
}

static int setup(void **state) {
    (void)state;
    char err[1024];
    if (read_goldens(GOLDEN_FILE, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    snprintf(dir, sizeof dir, "/tmp/capc_nfXXXXXX");
    if (!mkdtemp(dir)) return -1;
    char *srcs[MAX_CASES];
    for (int i = 0; i < n_goldens; i++) {
        Golden *g = &goldens[i];
        Diag d = {0};
        srcs[i] = NULL;
        g->m = ir_parse(g->ir, GOLDEN_FILE, &d);
        if (!g->m) {
            snprintf(g->err, sizeof g->err, "IR text: %s", d.msg);
            continue;
        }
        if (case_kernel_build(g->m, &g->ck, g->err, sizeof g->err) == 0) srcs[i] = g->ck.c_src;
    }
    lib = ck_compile_c(dir, srcs, n_goldens, err, sizeof err);
    if (!lib) fprintf(stderr, "%s\n", err);
    return lib ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < n_goldens; i++) {
        Golden *g = &goldens[i];
        case_kernel_free(&g->ck);
        module_free(g->m);
        free(g->ir);
        for (int k = 0; k < g->n_in; k++) free(g->in[k].v);
        free(g->want.v);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return 0;
}

static void test_every_op_has_a_case(void **state) {
    (void)state;
    for (int k = 0; k < OP_COUNT; k++) {
        const char *name = OP_TABLE[k].name;
        bool found = false;
        for (size_t e = 0; e < sizeof EXEMPT / sizeof EXEMPT[0]; e++) found |= strcmp(EXEMPT[e], name) == 0;
        for (int i = 0; i < n_goldens && !found; i++) found = strcmp(goldens[i].op, name) == 0;
        if (!found)
            fail_msg("op %s has no case in %s: add one to tests/golden/make_nonfinite_golden.py "
                     "and rerun it", name, GOLDEN_FILE);
    }
}

/* PyTorch's value against ours. */
static bool same_value(double got, double want, bool integer) {
    if (isnan(want)) return isnan(got);
    if (isinf(want) || integer) return got == want;
    return fabs(got - want) <= TOL * fmax(1.0, fabs(want));
}

/* Compares n values; on the first mismatch fails naming who and where. */
static void expect_values(const Golden *g, const char *who, const double *got, int64_t n,
                          bool integer) {
    if (n != g->want.n)
        fail_msg("%s:%d %s (%s): %lld values, PyTorch has %lld", GOLDEN_FILE, g->line, g->op, who,
                 (long long)n, (long long)g->want.n);
    for (int64_t e = 0; e < n; e++)
        if (!same_value(got[e], g->want.v[e], integer))
            fail_msg("%s:%d %s (%s): element %lld is %.9g, PyTorch gives %.9g", GOLDEN_FILE,
                     g->line, g->op, who, (long long)e, got[e], g->want.v[e]);
}

static void check_reference(const Golden *g, RefTensor *ins, double *got, int64_t n) {
    const Function *f = g->m->funcs[0];
    RefTensor out;
    char err[1024];
    if (ref_run(f, ins, NULL, NULL, &out, NULL, err, sizeof err) != 0)
        fail_msg("%s:%d %s: the reference failed: %s", GOLDEN_FILE, g->line, g->op, err);
    assert_int_equal(ref_tensor_numel(&out), n);
    memcpy(got, out.data, (size_t)n * sizeof(double));
    ref_tensor_free(&out);
    expect_values(g, "reference", got, n, f->outputs[0]->dtype == DT_I32);
}

/* Runs the golden's kernel on f32/i32 copies of the inputs. */
static void check_kernel(const Golden *g, const RefTensor *ins, double *got, int64_t n) {
    const Function *f = g->m->funcs[0];
    bool integer = f->outputs[0]->dtype == DT_I32;
    void *bufs[MAX_INPUTS + 1];
    bufs[0] = calloc((size_t)(n ? n : 1), 4);
    for (int i = 0; i < f->n_inputs; i++) {
        int64_t k = ref_tensor_numel(&ins[i]);
        bufs[i + 1] = malloc((size_t)(k ? k : 1) * 4);
        for (int64_t e = 0; e < k; e++) {
            if (ins[i].dtype == DT_I32) ((int32_t *)bufs[i + 1])[e] = (int32_t)ins[i].data[e];
            else ((float *)bufs[i + 1])[e] = (float)ins[i].data[e];
        }
    }
    typedef void (*KernelFn)(void *const *bufs);
    KernelFn fn = (KernelFn)dlsym(lib, g->ck.k->desc->name);
    assert_non_null(fn);
    void *args[CK_MAX_ARGS];
    for (int a = 0; a < g->ck.k->n_args; a++) args[a] = bufs[g->ck.slot[a]];
    fn(args);
    for (int64_t e = 0; e < n; e++)
        got[e] = integer ? ((int32_t *)bufs[0])[e] : ((float *)bufs[0])[e];
    for (int i = 0; i <= f->n_inputs; i++) free(bufs[i]);
    expect_values(g, "C kernel", got, n, integer);
}

static void test_golden(void **state) {
    const Golden *g = *state;
    if (!g->m || g->err[0]) fail_msg("%s:%d %s: %s", GOLDEN_FILE, g->line, g->op, g->err);
    const Function *f = g->m->funcs[0];
    if (f->n_inputs != g->n_in)
        fail_msg("%s:%d: %d inputs listed, the function has %d", GOLDEN_FILE, g->line, g->n_in,
                 f->n_inputs);
    RefTensor ins[MAX_INPUTS];
    for (int i = 0; i < f->n_inputs; i++) {
        assert_int_equal(ref_tensor_init(&ins[i], f->inputs[i]->dtype, f->inputs[i]->shape), 0);
        assert_int_equal(ref_tensor_numel(&ins[i]), g->in[i].n);
        memcpy(ins[i].data, g->in[i].v, (size_t)g->in[i].n * sizeof(double));
    }
    int64_t n = g->want.n;
    double *got = malloc((size_t)(n ? n : 1) * sizeof(double));
    check_reference(g, ins, got, n);
    if (g->ck.k) check_kernel(g, ins, got, n); /* views (reshape) have no kernel */
    printf("[ %s:%d %-24s ] reference%s agree with PyTorch\n", GOLDEN_FILE, g->line, g->op,
           g->ck.k ? " and C kernel" : "");
    free(got);
    for (int i = 0; i < f->n_inputs; i++) ref_tensor_free(&ins[i]);
}

int main(void) {
    static struct CMUnitTest tests[MAX_CASES + 1];
    static char names[MAX_CASES][96];
    char err[1024];
    /* the cases are the file's, so read it once here to name them (setup reads it again
     * into a fresh table and builds the kernels) */
    if (read_goldens(GOLDEN_FILE, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int n = n_goldens;
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "line%d_%.60s", goldens[i].line, goldens[i].op);
        free(goldens[i].ir);
        for (int k = 0; k < goldens[i].n_in; k++) free(goldens[i].in[k].v);
        free(goldens[i].want.v);
        memset(&goldens[i], 0, sizeof goldens[i]);
    }
    n_goldens = 0;
    tests[0] = (struct CMUnitTest)cmocka_unit_test(test_every_op_has_a_case);
    for (int i = 0; i < n; i++) tests[i + 1] = (struct CMUnitTest){names[i], test_golden, NULL, NULL, &goldens[i]};
    return _cmocka_run_group_tests("nonfinite", tests, (size_t)n + 1, setup, teardown);
}
