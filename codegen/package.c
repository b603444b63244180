/* package.c — the code generation stages of the pipeline (driver/pipeline.c runs them in
 * order; package_module() runs them all), from a module to cap.so (docs/artifact.md):
 *
 *   lower    every function's schedule to kernel descriptions (package_plan.c)
 *   rewrite  kernel rewrites (codegen/opt_*.c)
 *   plan     memory plans (always checked), kernel arguments resolved to buffers, final
 *            output/state copies, identical kernels merged (package_plan.c)
 *   render   C and CUDA source of each distinct kernel (package_kernels.c)
 *   write:
 *   1. reserve OUT.tmp.PID next to the output (package_check_output does the same before any
 *      long step, so an unwritable place fails first)
 *   2. (the stages above)
 *   3. cut the kernels into modules and build (package_build.c): NVRTC per module and arch
 *      (plus compute_80 PTX), cc per module, the tables, all through the kernel cache and
 *      on every core, linked into OUT.tmp.PID; --emit-src writes cap.c and cap.cu
 *   4. rename over OUT: a reader never sees a half-written cap.so, and a failed build leaves
 *      the old one in place
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "diag.h"
#include "package.h"

/* Creates OUT.tmp.PID (malloc'd path), so an unwritable output fails before the work. */
static char *reserve_output(const char *out, Diag *d) {
    size_t size = strlen(out) + 32;
    char *tmp = malloc(size);
    if (tmp == NULL) return NULL;
    snprintf(tmp, size, "%s.tmp.%ld", out, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (f == NULL) {
        diag_set(d, SRCLOC_NONE, "cannot write '%s': %s", out, strerror(errno));
        free(tmp);
        return NULL;
    }
    fclose(f);
    return tmp;
}

static int check_options(const PackageOptions *opts, Diag *d) {
    if (opts->output_path == NULL || *opts->output_path == '\0') {
        diag_set(d, SRCLOC_NONE, "no output path given");
        return -1;
    }
    if ((opts->targets & TARGET_ALL) == 0) {
        diag_set(d, SRCLOC_NONE, "no target chosen (cpu, cuda or all)");
        return -1;
    }
    return 0;
}

Package *package_new(const Module *m, int verbose) {
    Package *p = calloc(1, sizeof *p);
    if (p == NULL) return NULL;
    p->m = m;
    p->verbose = verbose;
    return p;
}

void package_free(Package *p) {
    if (p == NULL) return;
    pkg_free(p);
    free(p);
}

int package_lower(Package *p, Diag *d) { return pkg_lower(p, d); }

int package_rewrite(Package *p, Diag *d) {
    for (int i = 0; i < p->n_entries; i++)
        if (codegen_rewrite_kernels(&p->fk[i], d) != 0) return -1;
    return 0;
}

int package_plan(Package *p, Diag *d) { return pkg_plan(p, d); }

int package_check_kernels(const Package *p, Diag *d) {
    for (int i = 0; i < p->n_entries; i++)
        if (codegen_check_kernels(&p->fk[i], d) != 0) return -1;
    return 0;
}

int package_render(Package *p, Diag *d) { return pkg_render_kernels(p, d); }

int package_check_output(const PackageOptions *opts, Diag *d) {
    if (check_options(opts, d) != 0) return -1;
    char *tmp = reserve_output(opts->output_path, d);
    if (tmp == NULL) return -1;
    unlink(tmp);
    free(tmp);
    return 0;
}

int package_write(Package *p, const PackageOptions *opts, Diag *d) {
    if (check_options(opts, d) != 0) return -1;
    char *tmp_out = reserve_output(opts->output_path, d);
    if (tmp_out == NULL) return -1;
    pkg_assign_modules(p);
    int rc = pkg_build(p, opts, tmp_out, d);
    if (rc == 0 && rename(tmp_out, opts->output_path) != 0) {
        diag_msg(d, "cannot write '%s': %s", opts->output_path,
                 strerror(errno));
        rc = -1;
    }
    if (rc == 0 && opts->verbose)
        fprintf(stderr, "capc: wrote %s: %d entries, %d kernels (%d lowered) in %d modules\n",
                opts->output_path, p->n_entries, p->n_kernels, p->n_lowered, p->n_modules);
    if (rc != 0) unlink(tmp_out);
    free(tmp_out);
    return rc;
}

int package_module(const Module *m, const PackageOptions *opts, Diag *d) {
    Package *p = package_new(m, opts->verbose);
    if (p == NULL) {
        diag_msg(d, "out of memory while packaging");
        return -1;
    }
    int rc = package_lower(p, d);
    if (rc == 0) rc = package_rewrite(p, d);
    if (rc == 0) rc = package_plan(p, d);
    if (rc == 0) rc = package_render(p, d);
    if (rc == 0) rc = package_write(p, opts, d);
    package_free(p);
    return rc;
}

int package_n_entries(const Package *p) { return p->n_entries; }

void package_entry_stats(const Package *p, int i, EntryStats *out) {
    const PkgEntry *e = &p->entries[i];
    out->name = e->f->name;
    out->kernels = e->n_kernels;
    out->launches = e->n_steps;
    out->arena_bytes = e->arena_bytes;
    out->naive_bytes = e->naive_bytes;
}

const MemPlan *package_entry_plan(const Package *p, int i) { return &p->plans[i]; }
