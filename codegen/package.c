/* package.c — the code generation stages of the pipeline (passes/pipeline.c runs them in
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
 *   3. cuda target: render cap.cu and compile it with NVRTC per arch, plus compute_80 PTX,
 *      the archs in parallel threads (NVRTC is the slowest step by far: ~25 s per arch for
 *      the tiny captioner; nvrtc.c opens the library once, under pthread_once)
 *   4. render cap.c (package_emit.c); --emit-src writes cap.c and cap.cu to a directory
 *   5. cc cap.c in a private temp dir into OUT.tmp.PID, then rename over OUT: a reader never
 *      sees a half-written cap.so, and a failed build leaves the old one in place
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "package.h"

#define DEFAULT_CUDA_ARCHS "sm_80,sm_90"
#define PTX_ARCH "compute_80"

typedef struct Images {
    PkgCudaImage *items;
    int n;
} Images;

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void images_free(Images *im) {
    for (int i = 0; i < im->n; i++) {
        free(im->items[i].arch);
        free(im->items[i].data);
    }
    free(im->items);
    im->items = NULL;
    im->n = 0;
}

/* One NVRTC compile, run on its own thread. */
typedef struct ArchJob {
    const char *cu;
    char arch[32];
    int verbose;
    PkgCudaImage img;
    int rc;
    Diag d;
    pthread_t thread;
    bool started;
} ArchJob;

static void *compile_arch(void *arg) {
    ArchJob *job = arg;
    double t0 = now_seconds();
    if (job->verbose) fprintf(stderr, "capc: NVRTC %s ...\n", job->arch);
    job->rc = nvrtc_compile(job->cu, "cap.cu", job->arch, &job->img.data, &job->img.size,
                            &job->d);
    if (job->rc == 0 && job->verbose)
        fprintf(stderr, "capc: NVRTC %s: %zu bytes (%.1fs)\n", job->arch, job->img.size,
                now_seconds() - t0);
    return NULL;
}

/* The archs of the comma-separated list, then the PTX fallback unless listed. Returns the
 * number of jobs filled (at most max). */
static int plan_arch_jobs(const char *list, const char *cu, int verbose, ArchJob *jobs, int max) {
    int n = 0;
    bool have_ptx = false;
    for (const char *s = list; *s != '\0' && n < max - 1;) {
        size_t len = strcspn(s, ",");
        if (len > 0 && len < sizeof jobs[n].arch) {
            memcpy(jobs[n].arch, s, len);
            jobs[n].arch[len] = '\0';
            if (strncmp(jobs[n].arch, "compute_", 8) == 0) have_ptx = true;
            n++;
        }
        s += len + (s[len] == ',');
    }
    if (!have_ptx) snprintf(jobs[n++].arch, sizeof jobs[0].arch, "%s", PTX_ARCH);
    for (int i = 0; i < n; i++) {
        jobs[i].cu = cu;
        jobs[i].verbose = verbose;
    }
    return n;
}

/* Moves the jobs' images into im, in arch order ("compute_*" is PTX, labelled "ptx"). */
static int collect_images(ArchJob *jobs, int n, Images *im, Diag *d) {
    im->items = calloc((size_t)n, sizeof *im->items);
    if (im->items == NULL) {
        snprintf(d->msg, sizeof d->msg, "out of memory while packaging");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        PkgCudaImage *img = &im->items[im->n++];
        *img = jobs[i].img;
        jobs[i].img.data = NULL;
        img->arch = strdup(strncmp(jobs[i].arch, "compute_", 8) == 0 ? "ptx" : jobs[i].arch);
        if (img->arch == NULL) {
            snprintf(d->msg, sizeof d->msg, "out of memory while packaging");
            return -1;
        }
    }
    return 0;
}

static int compile_cuda(const char *cu, const PackageOptions *opts, Images *im, Diag *d) {
    if (!nvrtc_available()) {
        snprintf(d->msg, sizeof d->msg, "the cuda target needs NVRTC, which is not available "
                 "(install the CUDA toolkit, or use --target=cpu)");
        d->loc = SRCLOC_NONE;
        return -1;
    }
    const char *list = opts->cuda_archs != NULL && *opts->cuda_archs ? opts->cuda_archs
                                                                      : DEFAULT_CUDA_ARCHS;
    ArchJob jobs[8] = {0};
    int n = plan_arch_jobs(list, cu, opts->verbose, jobs, 8);
    for (int i = 0; i < n; i++)
        jobs[i].started = pthread_create(&jobs[i].thread, NULL, compile_arch, &jobs[i]) == 0;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (jobs[i].started) pthread_join(jobs[i].thread, NULL);
        else compile_arch(&jobs[i]); /* no thread to spare: compile here */
        if (jobs[i].rc != 0 && rc == 0) {
            *d = jobs[i].d;
            rc = -1;
        }
    }
    if (rc == 0) rc = collect_images(jobs, n, im, d);
    for (int i = 0; i < n; i++) free(jobs[i].img.data);
    return rc;
}

static int write_in_dir(const char *dir, const char *name, const char *text, Diag *d) {
    size_t size = strlen(dir) + strlen(name) + 2;
    char *path = malloc(size);
    if (path == NULL) return -1;
    snprintf(path, size, "%s/%s", dir, name);
    int rc = pkg_write_file(path, text, d);
    free(path);
    return rc;
}

static int emit_sources(const char *dir, const char *c_src, const char *cu_src, Diag *d) {
    if (pkg_make_dirs(dir, d) != 0) return -1;
    if (write_in_dir(dir, "cap.c", c_src, d) != 0) return -1;
    return write_in_dir(dir, "cap.cu", cu_src, d);
}

/* Creates OUT.tmp.PID (malloc'd path), so an unwritable output fails before the work. */
static char *reserve_output(const char *out, Diag *d) {
    size_t size = strlen(out) + 32;
    char *tmp = malloc(size);
    if (tmp == NULL) return NULL;
    snprintf(tmp, size, "%s.tmp.%ld", out, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (f == NULL) {
        snprintf(d->msg, sizeof d->msg, "cannot write '%s': %s", out, strerror(errno));
        d->loc = SRCLOC_NONE;
        free(tmp);
        return NULL;
    }
    fclose(f);
    return tmp;
}

/* Writes cap.c into a private temp dir and compiles it into tmp_out. On a compiler failure
 * the temp dir is kept, so the message's path to cap.c can be opened. */
static int compile_c(const char *c_src, const char *tmp_out, int verbose, Diag *d) {
    char *dir = pkg_make_temp_dir(d);
    if (dir == NULL) return -1;
    size_t size = strlen(dir) + 16;
    char *c_path = malloc(size), *log_path = malloc(size);
    int rc = -1;
    if (c_path != NULL && log_path != NULL) {
        snprintf(c_path, size, "%s/cap.c", dir);
        snprintf(log_path, size, "%s/cc.log", dir);
        double t0 = now_seconds();
        rc = pkg_write_file(c_path, c_src, d);
        if (rc == 0) rc = pkg_run_cc(c_path, tmp_out, log_path, verbose, d);
        if (rc == 0 && verbose)
            fprintf(stderr, "capc: cc: %.1fs for %zu KiB of C\n", now_seconds() - t0,
                    strlen(c_src) / 1024);
    }
    bool keep = rc != 0 && strstr(d->msg, "internal error") != NULL;
    if (!keep) pkg_remove_temp_dir(dir);
    free(c_path);
    free(log_path);
    free(dir);
    return rc;
}

typedef struct Sources {
    char *c, *cu;
    Images images;
} Sources;

/* Steps 3 and 4: cap.cu (when needed), the CUDA images, cap.c. */
static int render(const Package *p, const PackageOptions *opts, Sources *s, Diag *d) {
    bool cuda = (opts->targets & TARGET_CUDA) != 0;
    char hash[17] = "";
    if (cuda || opts->emit_src_dir != NULL) {
        s->cu = pkg_render_cuda(p);
        if (s->cu == NULL) goto oom;
        pkg_fnv1a_hex(s->cu, hash);
    }
    if (cuda && compile_cuda(s->cu, opts, &s->images, d) != 0) return -1;
    s->c = pkg_render_c(p, opts, s->images.items, s->images.n, hash);
    if (s->c == NULL) goto oom;
    return 0;
oom:
    snprintf(d->msg, sizeof d->msg, "out of memory while rendering cap.c");
    d->loc = SRCLOC_NONE;
    return -1;
}

static void report(const Package *p, const PackageOptions *opts, const Sources *s) {
    if (!opts->verbose) return;
    fprintf(stderr, "capc: wrote %s: %d entries, %d kernels (%d lowered), cap.c %zu KiB, "
            "%d CUDA images\n", opts->output_path, p->n_entries, p->n_kernels, p->n_lowered,
            strlen(s->c) / 1024, s->images.n);
}

static int check_options(const PackageOptions *opts, Diag *d) {
    d->loc = SRCLOC_NONE;
    if (opts->output_path == NULL || *opts->output_path == '\0') {
        snprintf(d->msg, sizeof d->msg, "no output path given");
        return -1;
    }
    if ((opts->targets & TARGET_ALL) == 0) {
        snprintf(d->msg, sizeof d->msg, "no target chosen (cpu, cuda or all)");
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
    Sources s = {0};
    int rc = render(p, opts, &s, d);
    if (rc == 0 && opts->emit_src_dir != NULL) rc = emit_sources(opts->emit_src_dir, s.c, s.cu, d);
    if (rc == 0) rc = compile_c(s.c, tmp_out, opts->verbose, d);
    if (rc == 0 && rename(tmp_out, opts->output_path) != 0) {
        snprintf(d->msg, sizeof d->msg, "cannot write '%s': %s", opts->output_path,
                 strerror(errno));
        rc = -1;
    }
    if (rc == 0) report(p, opts, &s);
    if (rc != 0) unlink(tmp_out);
    images_free(&s.images);
    free(s.c);
    free(s.cu);
    free(tmp_out);
    return rc;
}

int package_module(const Module *m, const PackageOptions *opts, Diag *d) {
    Package *p = package_new(m, opts->verbose);
    if (p == NULL) {
        snprintf(d->msg, sizeof d->msg, "out of memory while packaging");
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
