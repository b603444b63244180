/* test_cuda_compile.c — the CUDA side without a GPU: every op's CUDA kernel (op_cases.h)
 * compiles through NVRTC for sm_90 and sm_80 and as compute_80 PTX, all kernels in ONE
 * program; and every kernel of every entry point of the tiny captioner (forward, and
 * train_step / eval_loss / the sampling entries when the pipeline builds them) compiles with
 * NVRTC for sm_90 and, rendered as C, with the system C compiler (-Wall -Wextra -Werror).
 * NVRTC checks report themselves skipped when libnvrtc.so is not installed. */
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
#include "codegen/op_cases.h"
#include "frontend.h"
#include "pipeline.h"

/* A growable text buffer for whole programs. */
typedef struct Text {
    char *s;
    size_t len, cap;
} Text;

static void text_add(Text *t, const char *s) {
    size_t n = strlen(s);
    if (t->len + n + 2 > t->cap) {
        t->cap = (t->len + n + 2) * 2;
        t->s = realloc(t->s, t->cap);
        assert_non_null(t->s);
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len++] = '\n';
    t->s[t->len] = 0;
}

static void nvrtc_ok(const char *src, const char *name, const char *arch) {
    unsigned char *image = NULL;
    size_t size = 0;
    Diag d = {0};
    if (nvrtc_compile(src, name, arch, &image, &size, &d) != 0)
        fail_msg("%s for %s: %s", name, arch, d.msg);
    assert_true(size > 0);
    free(image);
}

/* Every op case's CUDA kernel, in one program. */
static void test_op_kernels_nvrtc(void **state) {
    if (!nvrtc_available()) skip();
    Text t = {0};
    text_add(&t, codegen_cuda_prelude());
    int n_kernels = 0;
    for (int i = 0; i < N_OP_CASES; i++) {
        char err[512];
        const Op *op;
        Module *m = oc_build(i, &op, err, sizeof err);
        if (!m) fail_msg("case c%d (%s): %s", i, OP_CASES[i].op, err);
        CaseKernel ck = {0};
        if (case_kernel_build(m, &ck, err, sizeof err) != 0)
            fail_msg("case c%d (%s): %s", i, OP_CASES[i].op, err);
        if (ck.cuda_src) text_add(&t, ck.cuda_src), n_kernels++;
        case_kernel_free(&ck);
        module_free(m);
    }
    assert_true(n_kernels >= N_OP_CASES - 2); /* param and reshape have none */
    nvrtc_ok(t.s, "op_cases.cu", "sm_90");
    nvrtc_ok(t.s, "op_cases.cu", "sm_80");
    nvrtc_ok(t.s, "op_cases.cu", "compute_80");
    free(t.s);
}

/* The tiny captioner through the whole pipeline; c and cu receive every distinct kernel of
 * every function (prelude first), compared by structure as the packager merges them. */
static void captioner_sources(Text *c, Text *cu, int *n_kernels, const ConfigOverride *ov,
                              int n_ov) {
    Diag d = {0};
    Module *m = frontend_load_file("models/captioner_tiny.json", ov, n_ov, &d);
    if (!m) fail_msg("captioner_tiny.json: %s", d.msg);
    PipelineOptions opts = {0};
    if (pipeline_run(m, &opts, &d) != 0) {
        module_free(m);
        fail_msg("pipeline: %s", d.msg);
    }
    assert_non_null(module_find_function(m, "forward"));
    text_add(c, codegen_c_prelude());
    text_add(cu, codegen_cuda_prelude());
    *n_kernels = 0;
    FunctionKernels *fks = calloc((size_t)m->n_funcs, sizeof *fks);
    const LoweredKernel **seen = NULL;
    int n_seen = 0;
    assert_non_null(fks);
    for (int i = 0; i < m->n_funcs; i++) {
        if (codegen_lower_function(m->funcs[i], &fks[i], &d) != 0)
            fail_msg("lowering %s: %s", m->funcs[i]->name, d.msg);
        for (int k = 0; k < fks[i].n_kernels; k++) {
            const LoweredKernel *lk = &fks[i].kernels[k];
            bool dup = false;
            for (int j = 0; j < n_seen && !dup; j++)
                dup = kd_equal(seen[j]->desc, lk->desc) &&
                      kd_equal(lowered_cuda_desc(seen[j]), lowered_cuda_desc(lk));
            if (dup) continue;
            seen = realloc(seen, sizeof *seen * (size_t)(n_seen + 1));
            assert_non_null(seen);
            seen[n_seen++] = lk;
            /* distinct names: the same name in two functions may be two kernels */
            char name[300];
            snprintf(name, sizeof name, "%s_k%d", lk->desc->name, n_seen);
            lk->desc->name = kd_strdup(lk->desc, name);
            if (lk->cuda) lk->cuda->name = kd_strdup(lk->cuda, name);
            char *csrc = kernel_render(lk->desc, KTARGET_C, &d);
            char *cusrc = kernel_render(lowered_cuda_desc(lk), KTARGET_CUDA, &d);
            if (!csrc || !cusrc) fail_msg("rendering %s: %s", name, d.msg);
            text_add(c, csrc);
            text_add(cu, cusrc);
            free(csrc);
            free(cusrc);
            (*n_kernels)++;
        }
    }
    for (int i = 0; i < m->n_funcs; i++) function_kernels_free(&fks[i]);
    free(fks);
    free(seen);
    module_free(m);
}

static void test_captioner_c(void **state) {
    Text c = {0}, cu = {0};
    int n = 0;
    captioner_sources(&c, &cu, &n, NULL, 0);
    assert_true(n > 0);
    char dir[] = "/tmp/capc_ccXXXXXX", path[64], cmd[512];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/captioner.c", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(c.s, f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "cc -std=c11 -O1 -fopenmp -Wall -Wextra -Werror -c -o %s/captioner.o %s 2>&1 | head -30",
             dir, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char log[4096] = "";
    size_t got = fread(log, 1, sizeof log - 1, p);
    log[got] = 0;
    int rc = pclose(p);
    snprintf(cmd, sizeof cmd, "test -s %s/captioner.o", dir);
    int built = system(cmd);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    free(c.s);
    free(cu.s);
    if (rc != 0 || built != 0 || got) fail_msg("the captioner's C kernels (%d) do not compile cleanly:\n%s", n, log);
    printf("captioner: %d distinct kernels compile as C\n", n);
}

static void test_captioner_nvrtc(void **state) {
    if (!nvrtc_available()) skip();
    Text c = {0}, cu = {0};
    int n = 0;
    captioner_sources(&c, &cu, &n, NULL, 0);
    nvrtc_ok(cu.s, "captioner_tiny.cu", "sm_90");
    nvrtc_ok(cu.s, "captioner_tiny.cu", "sm_80");
    printf("captioner: %d distinct kernels compile with NVRTC (sm_90, sm_80)\n", n);
    free(c.s);
    free(cu.s);
}

/* The captioner with its ReLUs swapped for Mish written in C (models/acts.c, -D act=2): the
 * custom function renders and fuses into CUDA kernels that NVRTC accepts, and into C that cc
 * accepts. */
static void test_captioner_custom_activation(void **state) {
    static const ConfigOverride mish = {"act", "2"};
    Text c = {0}, cu = {0};
    int n = 0;
    captioner_sources(&c, &cu, &n, &mish, 1);
    assert_non_null(strstr(c.s, "expf")); /* mish = x * tanh(softplus(x)) is in the kernels */
    if (nvrtc_available()) {
        nvrtc_ok(cu.s, "captioner_tiny_mish.cu", "sm_90");
        nvrtc_ok(cu.s, "captioner_tiny_mish.cu", "sm_80");
        printf("captioner -D act=2 (Mish in C): %d distinct kernels compile with NVRTC\n", n);
    }
    free(c.s);
    free(cu.s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_op_kernels_nvrtc),
        cmocka_unit_test(test_captioner_c),
        cmocka_unit_test(test_captioner_nvrtc),
        cmocka_unit_test(test_captioner_custom_activation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
