/* nvrtc.c — compiles CUDA source with NVRTC, opened with dlopen so capc builds and runs
 * without the CUDA toolkit (then nvrtc_available() is false and CUDA images are skipped).
 *
 * "sm_XX" asks for a cubin for that exact arch; "compute_XX" asks for PTX, which the driver
 * JIT-compiles for newer GPUs. Failures return NVRTC's log so the generated line is visible. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen.h"
#include "diag.h"

/* The few NVRTC entry points used, with their C ABI (nvrtcResult is an int enum, 0 = ok). */
typedef int (*CreateProgramFn)(void **prog, const char *src, const char *name, int n_headers,
                               const char *const *headers, const char *const *include_names);
typedef int (*CompileProgramFn)(void *prog, int n_options, const char *const *options);
typedef int (*DestroyProgramFn)(void **prog);
typedef int (*GetSizeFn)(void *prog, size_t *size);
typedef int (*GetDataFn)(void *prog, char *data);
typedef const char *(*ErrorStringFn)(int result);
typedef int (*VersionFn)(int *major, int *minor);

static struct {
    void *lib;
    CreateProgramFn create;
    CompileProgramFn compile;
    DestroyProgramFn destroy;
    GetSizeFn log_size, cubin_size, ptx_size;
    GetDataFn log, cubin, ptx;
    ErrorStringFn error_string;
    VersionFn version;
    char version_text[64];
} nv;

static pthread_once_t nv_once = PTHREAD_ONCE_INIT;

static void *sym(const char *name) { return nv.lib ? dlsym(nv.lib, name) : NULL; }

static void nv_open(void) {
    static const char *const names[] = {
        "libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2",
        "/usr/local/cuda/lib64/libnvrtc.so", "/usr/local/cuda/lib/libnvrtc.so",
        "/usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !nv.lib; i++)
        nv.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!nv.lib) return;
    nv.create = (CreateProgramFn)sym("nvrtcCreateProgram");
    nv.compile = (CompileProgramFn)sym("nvrtcCompileProgram");
    nv.destroy = (DestroyProgramFn)sym("nvrtcDestroyProgram");
    nv.log_size = (GetSizeFn)sym("nvrtcGetProgramLogSize");
    nv.log = (GetDataFn)sym("nvrtcGetProgramLog");
    nv.cubin_size = (GetSizeFn)sym("nvrtcGetCUBINSize");
    nv.cubin = (GetDataFn)sym("nvrtcGetCUBIN");
    nv.ptx_size = (GetSizeFn)sym("nvrtcGetPTXSize");
    nv.ptx = (GetDataFn)sym("nvrtcGetPTX");
    nv.error_string = (ErrorStringFn)sym("nvrtcGetErrorString");
    nv.version = (VersionFn)sym("nvrtcVersion");
    int major = 0, minor = 0;
    if (nv.version == NULL || nv.version(&major, &minor) != 0) major = minor = -1;
    snprintf(nv.version_text, sizeof nv.version_text, "nvrtc %d.%d", major, minor);
    if (!nv.create || !nv.compile || !nv.destroy || !nv.log_size || !nv.log || !nv.ptx_size ||
        !nv.ptx || !nv.error_string) {
        dlclose(nv.lib);
        memset(&nv, 0, sizeof nv);
    }
}

bool nvrtc_available(void) {
    pthread_once(&nv_once, nv_open);
    return nv.lib != NULL;
}

const char *nvrtc_version_text(void) { return nvrtc_available() ? nv.version_text : ""; }

const char *nvrtc_options_text(void) { return "--std=c++14 -default-device"; }

/* Copies the tail of NVRTC's log (the errors come last) into d after a prefix. */
static void put_log(void *prog, const char *prefix, Diag *d) {
    size_t size = 0;
    int n = snprintf(d->msg, sizeof d->msg, "%s", prefix);
    if (nv.log_size(prog, &size) != 0 || size == 0 || n < 0) return;
    char *log = malloc(size);
    if (!log) return;
    if (nv.log(prog, log) == 0) {
        size_t room = sizeof d->msg - (size_t)n - 1, len = strlen(log);
        const char *from = len > room ? log + len - room : log;
        snprintf(d->msg + n, sizeof d->msg - (size_t)n, "%s", from);
    }
    free(log);
}

int nvrtc_compile(const char *source, const char *name, const char *arch, unsigned char **image,
                  size_t *size, Diag *d) {
    *image = NULL;
    *size = 0;
    if (!nvrtc_available()) {
        diag_msg(d, "NVRTC not available (libnvrtc.so not found)");
        return -1;
    }
    bool ptx = strncmp(arch, "compute_", 8) == 0;
    if (!ptx && strncmp(arch, "sm_", 3) != 0) {
        diag_msg(d, "unknown CUDA arch \"%s\" (want sm_XX or compute_XX)", arch);
        return -1;
    }
    if (!ptx && (!nv.cubin_size || !nv.cubin)) {
        diag_msg(d, "this NVRTC cannot emit cubins (too old); use compute_XX");
        return -1;
    }
    char arch_opt[64];
    snprintf(arch_opt, sizeof arch_opt, "--gpu-architecture=%s", arch);
    const char *opts[] = {arch_opt, "--std=c++14", "-default-device"};
    void *prog = NULL;
    int rc = nv.create(&prog, source, name, 0, NULL, NULL);
    if (rc != 0) {
        diag_msg(d, "nvrtcCreateProgram: %s", nv.error_string(rc));
        return -1;
    }
    rc = nv.compile(prog, (int)(sizeof opts / sizeof opts[0]), opts);
    if (rc != 0) {
        char prefix[256];
        snprintf(prefix, sizeof prefix, "NVRTC (%s) failed to compile %s: %s\n", arch, name,
                 nv.error_string(rc));
        put_log(prog, prefix, d);
        nv.destroy(&prog);
        return -1;
    }
    size_t n = 0;
    rc = ptx ? nv.ptx_size(prog, &n) : nv.cubin_size(prog, &n);
    unsigned char *out = rc == 0 ? malloc(n ? n : 1) : NULL;
    if (out) rc = ptx ? nv.ptx(prog, (char *)out) : nv.cubin(prog, (char *)out);
    nv.destroy(&prog);
    if (rc != 0 || !out) {
        free(out);
        diag_msg(d, "NVRTC: could not fetch the %s image: %s",
                 ptx ? "PTX" : "cubin", rc ? nv.error_string(rc) : "out of memory");
        return -1;
    }
    *image = out;
    *size = n;
    return 0;
}
