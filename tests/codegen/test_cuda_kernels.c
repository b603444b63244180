/* test_cuda_kernels.c — every op's CUDA kernel, run on the GPU, against the float64 reference
 * interpreter: the CUDA half of test_c_kernels.c.
 *
 * All cases of op_cases.h are lowered, their CUDA sources put in ONE program after the CUDA
 * prelude and compiled once with NVRTC for the device's exact arch (sm_XY cubin). Each case
 * then draws the same random inputs as the C test (same generator and seeds), launches its
 * kernel with the kernel's own grid/block/shared sizes through the driver API
 * (runtime/core/cuda_driver.c), and compares with ref_run:
 *     |kernel - reference| <= 1e-5 * max(1, |reference|)   (NaN/inf must match; i32 exactly)
 * the C kernels' tolerance: CUDA's expf/logf/tanhf are within 2 ulp and the kernels sum in
 * float, as the C ones do. Output buffers are filled with NaN first, so an element a kernel
 * never writes fails. The worst error of each case is printed.
 * Without a GPU (or without NVRTC) every case reports itself SKIPPED with the reason. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codegen.h"
#include "codegen/case_inputs.h"
#include "codegen/case_kernel.h"
#include "codegen/op_cases.h"
#include "cuda_driver.h"
#include "interp.h"

#define TOL 1e-5

typedef struct Case {
    int index;
    Module *m;
    const Op *op;
    CaseKernel ck;
    char build_err[1200];
} Case;

static Case cases[N_OP_CASES];
static const CuDriver *cu;
static CUdevice dev;
static CUcontext ctx;
static CUmodule mod;
static char skip_why[512]; /* non-empty: no GPU or no NVRTC */
static char arch[16];


/* Appends s to the growing program text. */
static int append(char **text, size_t *len, size_t *cap, const char *s) {
    size_t n = strlen(s);
    if (*len + n + 2 > *cap) {
        *cap = (*len + n + 2) * 2;
        char *t = realloc(*text, *cap);
        if (!t) return -1;
        *text = t;
    }
    memcpy(*text + *len, s, n);
    *len += n;
    (*text)[(*len)++] = '\n';
    (*text)[*len] = 0;
    return 0;
}

/* Lowers every case and returns the whole CUDA program (prelude first), or NULL. */
static char *build_program(void) {
    char *text = NULL;
    size_t len = 0, cap = 0;
    if (append(&text, &len, &cap, codegen_cuda_prelude())) return NULL;
    for (int i = 0; i < N_OP_CASES; i++) {
        Case *c = &cases[i];
        c->index = i;
        c->m = oc_build(i, &c->op, c->build_err, sizeof c->build_err);
        if (!c->m) continue;
        if (case_kernel_build(c->m, &c->ck, c->build_err, sizeof c->build_err) != 0) continue;
        if (c->ck.cuda_src && append(&text, &len, &cap, c->ck.cuda_src)) return NULL;
    }
    return text;
}

/* The GPU, its context and the module of every case's kernel; skip_why says what is missing. */
static int setup(void **state) {
    char *program = build_program();
    if (!program) return -1;
    char name[128];
    int major = 0, minor = 0;
    if (cu_driver_open(&cu, skip_why, sizeof skip_why) != 0 ||
        cu_device_first(cu, &dev, name, sizeof name, &major, &minor, skip_why,
                        sizeof skip_why) != 0) {
        free(program);
        return 0;
    }
    if (!nvrtc_available()) {
        snprintf(skip_why, sizeof skip_why, "NVRTC (libnvrtc.so) not found");
        free(program);
        return 0;
    }
    snprintf(arch, sizeof arch, "sm_%d%d", major, minor);
    printf("GPU: %s (%s)\n", name, arch);
    unsigned char *image = NULL;
    size_t size = 0;
    Diag d = {0};
    int rc = nvrtc_compile(program, "op_cases.cu", arch, &image, &size, &d);
    free(program);
    if (rc != 0) {
        fprintf(stderr, "%s\n", d.msg);
        return -1;
    }
    CUresult r = cu->PrimaryCtxRetain(&ctx, dev);
    if (!r) r = cu->CtxSetCurrent(ctx);
    if (!r) r = cu->ModuleLoadData(&mod, image);
    free(image);
    if (r) {
        char err[512];
        cu_fail(cu, r, "context/module", err, sizeof err);
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    for (int i = 0; i < N_OP_CASES; i++) {
        case_kernel_free(&cases[i].ck);
        module_free(cases[i].m);
    }
    if (mod) cu->ModuleUnload(mod);
    if (ctx) cu->PrimaryCtxRelease(dev);
    return 0;
}

/* Device buffers of one case: args[0] the result, args[1..] the kernel's operands. */
typedef struct Run {
    CUdeviceptr args[OC_MAX_INPUTS + 1];
    void *params[OC_MAX_INPUTS + 1];
    int n;
} Run;

static void check(CUresult r, const char *call) {
    if (r) {
        char err[512];
        cu_fail(cu, r, call, err, sizeof err);
        fail_msg("%s", err);
    }
}

static CUdeviceptr upload(const void *host, size_t bytes) {
    CUdeviceptr p = 0;
    check(cu->MemAlloc(&p, bytes ? bytes : 4), "cuMemAlloc_v2");
    if (bytes) check(cu->MemcpyHtoD(p, host, bytes), "cuMemcpyHtoD_v2");
    return p;
}

/* Runs the case's kernel on the GPU and the reference on the same random inputs (with NaN,
 * infinities and signed zeros in the f32 operands when `special`); compares. */
static void run_case(Case *c, bool special) {
    const Function *f = c->m->funcs[0];
    const OpCase *oc = &OP_CASES[c->index];
    const CaseKernel *ck = &c->ck;
    const char *name = ck->k->desc->name;
    int n_in = f->n_inputs;
    RefTensor ins[OC_MAX_INPUTS], out;
    CUdeviceptr dev_in[OC_MAX_INPUTS];
    rng_state = 0x9E3779B97F4A7C15ULL * (uint64_t)(c->index + 1);
    for (int i = 0; i < n_in; i++) {
        const Value *v = f->inputs[i];
        assert_int_equal(ref_tensor_init(&ins[i], v->dtype, v->shape), 0);
        int64_t n = ref_tensor_numel(&ins[i]);
        char mode = oc->modes[i] ? oc->modes[i] : (v->dtype == DT_I32 ? 'i' : 'r');
        void *host = malloc((size_t)(n ? n : 1) * 4);
        for (int64_t e = 0; e < n; e++) {
            double x = draw(mode, oc->id_limit);
            if (special && v->dtype == DT_F32) x = with_specials(x);
            ins[i].data[e] = x;
            if (v->dtype == DT_I32) ((int32_t *)host)[e] = (int32_t)x;
            else ((float *)host)[e] = (float)x;
        }
        dev_in[i] = upload(host, (size_t)n * 4);
        free(host);
    }
    char err[1024];
    if (ref_run(f, ins, NULL, NULL, &out, NULL, err, sizeof err)) fail_msg("ref_run: %s", err);
    int64_t n = ref_tensor_numel(&out);
    float *got = malloc((size_t)(n ? n : 1) * 4);
    for (int64_t e = 0; e < n; e++) got[e] = NAN; /* unwritten elements must show */
    Run r = {.n = ck->k->n_args};
    CUdeviceptr result = upload(got, (size_t)n * 4);
    for (int j = 0; j < r.n; j++) r.args[j] = ck->slot[j] == 0 ? result : dev_in[ck->slot[j] - 1];
    for (int j = 0; j < r.n; j++) r.params[j] = &r.args[j];
    CUfunction fn;
    check(cu->ModuleGetFunction(&fn, mod, name), "cuModuleGetFunction");
    if (ck->cuda_grid > 0)
        check(cu->LaunchKernel(fn, (unsigned)ck->cuda_grid, 1, 1, (unsigned)ck->cuda_block, 1, 1,
                               0, NULL, r.params, NULL),
              "cuLaunchKernel");
    check(cu->CtxSynchronize(), "cuCtxSynchronize (kernel execution)");
    if (n) check(cu->MemcpyDtoH(got, result, (size_t)n * 4), "cuMemcpyDtoH_v2");
    double worst = 0;
    for (int64_t e = 0; e < n; e++) {
        double want = out.data[e];
        double g = out.dtype == DT_I32 ? ((int32_t *)got)[e] : got[e];
        bool ok;
        if (isnan(want) || isinf(want)) ok = (isnan(want) && isnan(g)) || g == want;
        else if (out.dtype == DT_I32) ok = g == want;
        else ok = fabs(g - want) <= TOL * fmax(1.0, fabs(want));
        double rel = isfinite(want) ? fabs(g - want) / fmax(1.0, fabs(want)) : (ok ? 0 : INFINITY);
        if (!(rel <= worst)) worst = rel;
        if (!ok) {
            fprintf(stderr, "%s: element %lld is %.9g, reference %.17g\n", name, (long long)e,
                    g, want);
            break;
        }
    }
    printf("[ cuda c%-3d %-26s ] worst scaled error %.3g%s\n", c->index, oc->op, worst,
           special ? " (NaN, inf, signed zeros in the f32 operands)" : "");
    cu->MemFree(result);
    for (int i = 0; i < n_in; i++) {
        cu->MemFree(dev_in[i]);
        ref_tensor_free(&ins[i]);
    }
    ref_tensor_free(&out);
    free(got);
    if (!(worst <= TOL)) fail_msg("%s differs from the reference (scaled error %g)", name, worst);
}

static void test_case(void **state) {
    Case *c = *state;
    if (skip_why[0]) {
        if (c->index == 0) print_message("no GPU: cuda checks skipped (%s)\n", skip_why);
        skip();
    }
    const char *op = OP_CASES[c->index].op;
    if (!c->m || c->build_err[0]) fail_msg("case c%d (%s): %s", c->index, op, c->build_err);
    const Op *last = c->op;
    if (last->kind == OP_PARAM || op_is_view(last)) {
        assert_int_equal(c->ck.fk.n_kernels, 0);
        return;
    }
    assert_non_null(c->ck.k);
    run_case(c, false);
    run_case(c, true);
}

int main(void) {
    struct CMUnitTest tests[N_OP_CASES];
    static char names[N_OP_CASES][64];
    for (int i = 0; i < N_OP_CASES; i++) {
        snprintf(names[i], sizeof names[i], "cuda_c%d_%s", i, OP_CASES[i].op);
        tests[i] = (struct CMUnitTest){names[i], test_case, NULL, NULL, &cases[i]};
    }
    return _cmocka_run_group_tests("cuda_kernels", tests, N_OP_CASES, setup, teardown);
}
