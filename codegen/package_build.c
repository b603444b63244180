/* package_build.c — from rendered kernels to cap.so: modules, compiles through the kernel
 * cache on every core, the link.
 *
 * Needs: every kernel's C and CUDA source (pkg_render_kernels) and its module
 * (pkg_assign_modules). Keeps true: cap.so's bytes depend only on the sources, the compilers
 * and the options, never on what the cache held or on the number of threads, so a warm
 * compile gives the same file as a cold one.
 *
 * The kernels are cut into modules, at most PKG_MAX_MODULES of them, by a hash of each
 * kernel's name (a kernel keeps its module when others come and go). Each module is one C
 * translation unit and, per CUDA arch, one NVRTC program: one job each. A job's key is the
 * SHA-256 of everything that decides its output (source, compiler identity, options, arch);
 * on a hit the output comes from the cache, on a miss the job compiles and stores it. Jobs
 * run on `jobs` threads (NVRTC inside the thread, cc as a child process), NVRTC's first as
 * they take longest. Then the tables (another cached C unit: a `-D lr=` change recompiles
 * only it) and an assembly file that .incbin's the CUDA images are compiled, and cc links
 * all of it.
 *
 * Why modules and not one unit per kernel: NVRTC and cc each spend ~0.1 s on the prelude of
 * every unit, about half of an average kernel's own time; with 32 modules that overhead
 * stays small while a changed kernel recompiles about 1/32 of the code.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "diag.h"
#include "package.h"

#define DEFAULT_CUDA_ARCHS "sm_80,sm_90"
#define PTX_ARCH "compute_80"
#define MAX_ARCHS 8

typedef enum { JOB_NVRTC, JOB_C } JobKind;

typedef struct Job {
    JobKind kind;
    int module;             /* -1: the tables */
    char arch[32];          /* NVRTC */
    char name[48];          /* the unit's file or program name, part of the key */
    char *source;           /* owned */
    unsigned char key[32];
    unsigned char *out;     /* owned: object file or CUDA image */
    size_t out_size;
    bool cached;
    double seconds;         /* compiling (0 on a hit) */
    int rc;
    Diag d;
} Job;

typedef struct Build {
    const Package *p;
    const PackageOptions *opts;
    char *dir;              /* private temp dir */
    KernelCache *cache;     /* NULL: no cache */
    char *cc_id;            /* pkg_cc_identity */
    Job *jobs;
    int n_jobs;
    char archs[MAX_ARCHS][32];
    int n_archs;
    /* shared by the workers */
    pthread_mutex_t lock;
    int next, done, from_cache;
    bool failed, progress;
} Build;

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int oom(Diag *d) {
    diag_set(d, SRCLOC_NONE, "out of memory while packaging");
    return -1;
}

/* ---- modules -------------------------------------------------------------------------- */

void pkg_assign_modules(Package *p) {
    int number[PKG_MAX_MODULES];
    for (int g = 0; g < PKG_MAX_MODULES; g++) number[g] = -1;
    for (int k = 0; k < p->n_kernels; k++) {
        const char *name = p->kernels[k].name;
        p->kernels[k].module = (int)(pkg_fnv1a(name, strlen(name), 0) % PKG_MAX_MODULES);
        number[p->kernels[k].module] = 0;
    }
    p->n_modules = 0;
    for (int g = 0; g < PKG_MAX_MODULES; g++) {
        if (number[g] < 0) continue;
        p->module_group[p->n_modules] = g;
        number[g] = p->n_modules++;
    }
    for (int k = 0; k < p->n_kernels; k++) p->kernels[k].module = number[p->kernels[k].module];
}

/* ---- the jobs ------------------------------------------------------------------------- */

static void key_c(const Build *b, Job *j) {
    char flags[256] = "";
    for (int i = 0; PKG_CC_FLAGS[i] != NULL; i++) {
        strncat(flags, PKG_CC_FLAGS[i], sizeof flags - strlen(flags) - 2);
        strcat(flags, " ");
    }
    const char *parts[] = {"cc object", b->cc_id, flags, j->name, j->source};
    size_t lens[5];
    for (int i = 0; i < 5; i++) lens[i] = strlen(parts[i]);
    kcache_key(j->key, parts, lens, 5);
}

static void key_nvrtc(Job *j) {
    const char *parts[] = {"nvrtc image", nvrtc_version_text(), nvrtc_options_text(), j->arch,
                           j->name, j->source};
    size_t lens[6];
    for (int i = 0; i < 6; i++) lens[i] = strlen(parts[i]);
    kcache_key(j->key, parts, lens, 6);
}

/* Compiles a C job's unit in the temp dir and reads the object back. */
static int compile_c(const Build *b, Job *j) {
    char *src = pkg_path_join(b->dir, j->name), *obj_name = NULL, *obj = NULL;
    size_t n = strlen(j->name) + 3;
    int rc = -1;
    if (src == NULL || (obj_name = malloc(n)) == NULL) goto done;
    snprintf(obj_name, n, "%s.o", j->name);
    obj = pkg_path_join(b->dir, obj_name);
    if (obj == NULL) goto done;
    if (pkg_write_file(src, j->source, &j->d) != 0) goto done;
    if (pkg_cc_object(b->dir, j->name, obj_name, &j->d) != 0) goto done;
    j->out = pkg_read_file(obj, &j->out_size, &j->d);
    rc = j->out != NULL ? 0 : -1;
done:
    if (rc != 0 && j->d.msg[0] == '\0') oom(&j->d);
    free(src);
    free(obj_name);
    free(obj);
    return rc;
}

static void run_job(const Build *b, Job *j) {
    if (b->cache != NULL && kcache_get(b->cache, j->key, &j->out, &j->out_size)) {
        j->cached = true;
        return;
    }
    double t0 = now_seconds();
    if (j->kind == JOB_NVRTC)
        j->rc = nvrtc_compile(j->source, j->name, j->arch, &j->out, &j->out_size, &j->d);
    else j->rc = compile_c(b, j);
    j->seconds = now_seconds() - t0;
    if (j->rc == 0 && b->cache != NULL) kcache_put(b->cache, j->key, j->out, j->out_size);
    if (j->rc == 0 && b->opts->verbose > 1)
        fprintf(stderr, "capc: %s %s%s%s: %.1fs\n", j->kind == JOB_NVRTC ? "NVRTC" : "cc",
                j->name, j->kind == JOB_NVRTC ? " " : "", j->arch, j->seconds);
}

static void *worker(void *arg) {
    Build *b = arg;
    for (;;) {
        pthread_mutex_lock(&b->lock);
        int i = b->failed ? b->n_jobs : b->next++;
        pthread_mutex_unlock(&b->lock);
        if (i >= b->n_jobs) return NULL;
        run_job(b, &b->jobs[i]);
        pthread_mutex_lock(&b->lock);
        b->done++;
        b->from_cache += b->jobs[i].cached;
        if (b->jobs[i].rc != 0) b->failed = true;
        if (b->progress)
            fprintf(stderr, "\rcapc: compiling kernels %d/%d (%d from the cache)", b->done,
                    b->n_jobs, b->from_cache);
        pthread_mutex_unlock(&b->lock);
    }
}

static int thread_count(const Build *b) {
    long n = b->opts->jobs > 0 ? b->opts->jobs : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 64) n = 64;
    return n < b->n_jobs ? (int)n : (b->n_jobs > 0 ? b->n_jobs : 1);
}

/* Runs every job on the threads (the calling thread is one of them). Returns 0, or -1 with d
 * from the first job that failed. */
static int run_jobs(Build *b, int *threads_used, Diag *d) {
    int n = thread_count(b);
    pthread_t tid[64];
    bool started[64] = {false};
    b->next = b->done = b->from_cache = 0;
    for (int i = 1; i < n; i++) started[i] = pthread_create(&tid[i], NULL, worker, b) == 0;
    worker(b);
    for (int i = 1; i < n; i++)
        if (started[i]) pthread_join(tid[i], NULL);
    if (b->progress && b->n_jobs > 0) fputs("\r\033[K", stderr);
    *threads_used = n;
    for (int i = 0; i < b->n_jobs; i++)
        if (b->jobs[i].rc != 0) {
            *d = b->jobs[i].d;
            return -1;
        }
    return 0;
}

static void jobs_free(Build *b) {
    for (int i = 0; i < b->n_jobs; i++) {
        free(b->jobs[i].source);
        free(b->jobs[i].out);
    }
    free(b->jobs);
    b->jobs = NULL;
    b->n_jobs = 0;
}

/* The archs of the comma-separated list, then the PTX fallback unless one is listed. */
static void plan_archs(Build *b) {
    const char *list = b->opts->cuda_archs != NULL && *b->opts->cuda_archs ? b->opts->cuda_archs
                                                                            : DEFAULT_CUDA_ARCHS;
    bool have_ptx = false;
    for (const char *s = list; *s != '\0' && b->n_archs < MAX_ARCHS - 1;) {
        size_t len = strcspn(s, ",");
        if (len > 0 && len < sizeof b->archs[0]) {
            memcpy(b->archs[b->n_archs], s, len);
            b->archs[b->n_archs][len] = '\0';
            if (strncmp(b->archs[b->n_archs], "compute_", 8) == 0) have_ptx = true;
            b->n_archs++;
        }
        s += len + (s[len] == ',');
    }
    if (!have_ptx) snprintf(b->archs[b->n_archs++], sizeof b->archs[0], "%s", PTX_ARCH);
}

/* NVRTC jobs (arch-major: the images' order in cap.so) and then the C jobs. */
static int plan_jobs(Build *b, Diag *d) {
    const Package *p = b->p;
    bool cpu = (b->opts->targets & TARGET_CPU) != 0, cuda = (b->opts->targets & TARGET_CUDA) != 0;
    if (cuda) plan_archs(b);
    int n = p->n_modules * ((cpu ? 1 : 0) + (cuda ? b->n_archs : 0));
    b->jobs = calloc((size_t)n + 1, sizeof *b->jobs);
    if (b->jobs == NULL) return oom(d);
    for (int a = 0; a < (cuda ? b->n_archs : 0); a++)
        for (int m = 0; m < p->n_modules; m++) {
            Job *j = &b->jobs[b->n_jobs++];
            j->kind = JOB_NVRTC;
            j->module = m;
            snprintf(j->arch, sizeof j->arch, "%s", b->archs[a]);
            snprintf(j->name, sizeof j->name, "cap_group%02d.cu", p->module_group[m]);
            if ((j->source = pkg_render_cuda(p, m)) == NULL) return oom(d);
            key_nvrtc(j);
        }
    for (int m = 0; cpu && m < p->n_modules; m++) {
        Job *j = &b->jobs[b->n_jobs++];
        j->kind = JOB_C;
        j->module = m;
        snprintf(j->name, sizeof j->name, "cap_group%02d.c", p->module_group[m]);
        if ((j->source = pkg_render_c_module(p, m)) == NULL) return oom(d);
        key_c(b, j);
    }
    return 0;
}

/* ---- images, tables, link ------------------------------------------------------------- */

/* The CUDA images, in job order (arch-major), taking the jobs' outputs. */
static int collect_images(Build *b, PkgCudaImage **out, int *n_out, Diag *d) {
    int n = 0;
    for (int i = 0; i < b->n_jobs; i++) n += b->jobs[i].kind == JOB_NVRTC;
    *out = NULL;
    *n_out = 0;
    if (n == 0) return 0;
    PkgCudaImage *images = calloc((size_t)n, sizeof *images);
    if (images == NULL) return oom(d);
    *out = images;
    for (int i = 0; i < b->n_jobs; i++) {
        Job *j = &b->jobs[i];
        if (j->kind != JOB_NVRTC) continue;
        PkgCudaImage *img = &images[(*n_out)++];
        img->arch = strdup(strncmp(j->arch, "compute_", 8) == 0 ? "ptx" : j->arch);
        if (img->arch == NULL) return oom(d);
        img->data = j->out;
        img->size = j->out_size;
        j->out = NULL;
        img->module = j->module;
        unsigned char sum[32];
        Sha256 s;
        sha256_init(&s);
        sha256_update(&s, j->source, strlen(j->source));
        sha256_final(&s, sum);
        sha256_hex(sum, img->source_hash);
    }
    return 0;
}

static void images_free(PkgCudaImage *images, int n) {
    for (int i = 0; i < n; i++) {
        free(images[i].arch);
        free(images[i].data);
    }
    free(images);
}

/* images.s: each image's bytes by .incbin from its own file, under the symbol the tables
 * declare; assembling it costs nothing next to compiling the bytes as a C literal. */
static int write_images_asm(const Build *b, const PkgCudaImage *images, int n, Diag *d) {
    StrBuf s = {0};
    strbuf_puts(&s, "/* the CUDA images of cap.so (capc) */\n\t.section .rodata\n");
    for (int i = 0; i < n; i++) {
        char sym[32], name[48];
        pkg_cuda_image_symbol(i, sym, sizeof sym);
        snprintf(name, sizeof name, "cuda_image%d.bin", i);
        char *path = pkg_path_join(b->dir, name);
        int rc = path != NULL ? pkg_write_bytes(path, images[i].data, images[i].size, d) : oom(d);
        free(path);
        if (rc != 0) {
            free(strbuf_take(&s));
            return -1;
        }
        strbuf_printf(&s, "\t.balign 16\n\t.globl %s\n\t.hidden %s\n%s:\n\t.incbin \"%s\"\n", sym,
                       sym, sym, name);
    }
    strbuf_puts(&s, "\t.section .note.GNU-stack,\"\",@progbits\n");
    char *text = strbuf_take(&s), *path = pkg_path_join(b->dir, "cuda_images.s");
    int rc = text != NULL && path != NULL ? pkg_write_file(path, text, d) : oom(d);
    if (rc == 0) rc = pkg_cc_object(b->dir, "cuda_images.s", "cuda_images.s.o", d);
    free(text);
    free(path);
    return rc;
}

/* The tables' unit, as one more cached C job run on this thread. */
static int compile_tables(Build *b, const PkgCudaImage *images, int n_images, Diag *d) {
    Job *j = &b->jobs[b->n_jobs]; /* plan_jobs left a slot */
    memset(j, 0, sizeof *j);
    j->kind = JOB_C;
    j->module = -1;
    snprintf(j->name, sizeof j->name, "cap_tables.c");
    j->source = pkg_render_c_tables(b->p, b->opts, images, n_images);
    if (j->source == NULL) return oom(d);
    b->n_jobs++;
    key_c(b, j);
    run_job(b, j);
    if (j->rc != 0) *d = j->d;
    return j->rc;
}

/* Writes the objects that came from the cache (compiled ones are already there) and links. */
static int link_objects(Build *b, bool with_images, const char *out_path, Diag *d) {
    char **objects = calloc((size_t)b->n_jobs + 2, sizeof *objects);
    if (objects == NULL) return oom(d);
    int n = 0, rc = 0;
    for (int i = 0; i < b->n_jobs && rc == 0; i++) {
        Job *j = &b->jobs[i];
        if (j->kind != JOB_C) continue;
        char name[64];
        snprintf(name, sizeof name, "%s.o", j->name);
        if ((objects[n] = pkg_path_join(b->dir, name)) == NULL) rc = oom(d);
        else if (j->cached) rc = pkg_write_bytes(objects[n], j->out, j->out_size, d);
        n++;
    }
    if (rc == 0 && with_images && (objects[n++] = pkg_path_join(b->dir, "cuda_images.s.o")) == NULL)
        rc = oom(d);
    char *log = pkg_path_join(b->dir, "link.log");
    if (rc == 0) rc = log != NULL ? pkg_cc_link(objects, n, out_path, log, d) : oom(d);
    free(log);
    for (int i = 0; i < n; i++) free(objects[i]);
    free(objects);
    return rc;
}

/* ---- --emit-src and the report -------------------------------------------------------- */

static int write_in_dir(const char *dir, const char *name, const char *text, Diag *d) {
    char *path = pkg_path_join(dir, name);
    if (path == NULL) return oom(d);
    int rc = pkg_write_file(path, text, d);
    free(path);
    return rc;
}

static int emit_sources(const Build *b, const PkgCudaImage *images, int n_images, Diag *d) {
    const char *dir = b->opts->emit_src_dir;
    if (diag_make_dirs(d, dir) != 0) return -1;
    char *c = pkg_render_c(b->p, b->opts, images, n_images), *cu = pkg_render_cuda(b->p, -1);
    int rc = c != NULL && cu != NULL ? 0 : oom(d);
    if (rc == 0) rc = write_in_dir(dir, "cap.c", c, d);
    if (rc == 0) rc = write_in_dir(dir, "cap.cu", cu, d);
    free(c);
    free(cu);
    return rc;
}

static void report_kind(const Build *b, JobKind kind, const char *label) {
    int n = 0, cached = 0;
    double seconds = 0;
    for (int i = 0; i < b->n_jobs; i++) {
        if (b->jobs[i].kind != kind) continue;
        n++;
        cached += b->jobs[i].cached;
        seconds += b->jobs[i].seconds;
    }
    if (n > 0)
        fprintf(stderr, "capc: %-5s %d units, %d from the cache, %.1fs compiling\n", label, n,
                cached, seconds);
}

static void report(const Build *b, int threads, double compile_s, double link_s,
                   const char *cache_dir, const KernelCacheStats *cs) {
    if (!b->opts->verbose) return;
    report_kind(b, JOB_NVRTC, "NVRTC");
    report_kind(b, JOB_C, "cc");
    fprintf(stderr, "capc: build %.1fs on %d threads, link %.2fs\n", compile_s, threads, link_s);
    if (cache_dir == NULL) {
        fprintf(stderr, "capc: no kernel cache\n");
        return;
    }
    fprintf(stderr, "capc: cache %s: %d hits, %d misses, %d stored", cache_dir,
            cs->hits, cs->misses, cs->stored);
    if (cs->damaged > 0) fprintf(stderr, ", %d damaged", cs->damaged);
    if (cs->stored > 0)
        fprintf(stderr, ", %d evicted, %.1f MiB in all", cs->evicted, (double)cs->bytes / 1048576.0);
    fputc('\n', stderr);
}

/* ---- the build ------------------------------------------------------------------------ */

static KernelCache *open_cache(const PackageOptions *opts) {
    if (opts->no_cache) return NULL;
    char *dir = opts->cache_dir != NULL && *opts->cache_dir ? strdup(opts->cache_dir)
                                                             : kcache_default_dir();
    if (dir == NULL) {
        if (opts->verbose)
            fprintf(stderr, "capc: no kernel cache: neither CAPC_CACHE_DIR, XDG_CACHE_HOME nor "
                    "HOME is set\n");
        return NULL;
    }
    char why[600];
    KernelCache *c = kcache_open(dir, opts->cache_max_bytes, why, sizeof why);
    if (c == NULL) fprintf(stderr, "capc: warning: %s; compiling without the kernel cache\n", why);
    free(dir);
    return c;
}

static int build(Build *b, const char *out_path, Diag *d) {
    const PackageOptions *opts = b->opts;
    if (plan_jobs(b, d) != 0) return -1;
    if ((opts->targets & TARGET_CUDA) != 0 && !nvrtc_available()) {
        diag_set(d, SRCLOC_NONE, "the cuda target needs NVRTC, which is not available "
                 "(install the CUDA toolkit, or use --target=cpu)");
        return -1;
    }
    if (opts->verbose)
        fprintf(stderr, "capc: compiling %d kernels in %d modules (%d units, then the tables)\n",
                b->p->n_kernels, b->p->n_modules, b->n_jobs);
    int threads = 1;
    double t0 = now_seconds();
    if (run_jobs(b, &threads, d) != 0) return -1;
    PkgCudaImage *images = NULL;
    int n_images = 0;
    int rc = collect_images(b, &images, &n_images, d);
    if (rc == 0 && opts->emit_src_dir != NULL) rc = emit_sources(b, images, n_images, d);
    if (rc == 0) rc = compile_tables(b, images, n_images, d);
    if (rc == 0 && n_images > 0) rc = write_images_asm(b, images, n_images, d);
    double t1 = now_seconds();
    if (rc == 0) rc = link_objects(b, n_images > 0, out_path, d);
    double t2 = now_seconds();
    KernelCacheStats cs = {0};
    char *cache_dir = b->cache != NULL ? strdup(kcache_dir(b->cache)) : NULL;
    kcache_close(b->cache, &cs);
    b->cache = NULL;
    if (rc == 0) report(b, threads, t1 - t0, t2 - t1, cache_dir, &cs);
    free(cache_dir);
    images_free(images, n_images);
    return rc;
}

int pkg_build(const Package *p, const PackageOptions *opts, const char *out_path, Diag *d) {
    Build b = {.p = p, .opts = opts};
    b.dir = pkg_make_temp_dir(d);
    if (b.dir == NULL) return -1;
    pthread_mutex_init(&b.lock, NULL);
    b.progress = !opts->verbose && isatty(STDERR_FILENO);
    b.cc_id = pkg_cc_identity(b.dir);
    int rc;
    if (b.cc_id == NULL) {
        diag_set(d, SRCLOC_NONE, "cannot run the C compiler '%s' (install gcc, or set "
                 "CAPC_CC to a C compiler)", pkg_cc_command());
        rc = -1;
    } else {
        b.cache = open_cache(opts);
        rc = build(&b, out_path, d);
    }
    kcache_close(b.cache, NULL);
    /* A compiler that rejected generated code is a capc bug: keep the sources to look at. */
    if (rc != 0 && strstr(d->msg, "internal error") != NULL)
        fprintf(stderr, "capc: the generated sources are kept in %s\n", b.dir);
    else pkg_remove_temp_dir(b.dir);
    jobs_free(&b);
    pthread_mutex_destroy(&b.lock);
    free(b.cc_id);
    free(b.dir);
    return rc;
}
