/* pipeline.c — the pass pipeline: the table of passes below is capc's table of contents.
 *
 * pipeline_run() takes the module the frontend built and runs each pass in order, verifying
 * the IR between passes (a pass that leaves invalid IR is a bug in that pass, and this says
 * which one). With a dump directory it writes the IR as the frontend left it (00-frontend)
 * and after every pass (NN-NAME), each as IR text (.ir, which parses back) and Graphviz
 * (.dot), so people can see what each stage did.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "passes.h"

/* The passes, in the order they run. Adding a pass = one line here plus its file. */
static const Pass PASSES[] = {
    {"shapes", pass_infer_shapes}, /* every value gets its dtype and static shape */
    {"training", pass_build_training_program}, /* eval_loss, train_step (docs/training.md) */
};
enum { N_PASSES = sizeof PASSES / sizeof PASSES[0] };

static int fail_path(Diag *d, const char *what, const char *path, int err) {
    snprintf(d->msg, sizeof d->msg, "cannot %s '%s': %s", what, path, strerror(err));
    d->loc = SRCLOC_NONE;
    return -1;
}

/* mkdir -p: creates dir and any missing parents; an existing directory is fine. */
static int make_dirs(const char *dir, Diag *d) {
    char path[4096];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof path)
        return fail_path(d, "create directory", dir, len == 0 ? ENOENT : ENAMETOOLONG);
    memcpy(path, dir, len + 1);

    /* Walk the separators so that each prefix exists before its child is made. */
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return fail_path(d, "create directory", path, errno);
        path[i] = saved;
    }
    struct stat st;
    if (stat(dir, &st) != 0) return fail_path(d, "create directory", dir, errno);
    if (!S_ISDIR(st.st_mode)) return fail_path(d, "create directory", dir, ENOTDIR);
    return 0;
}

typedef void (*Printer)(FILE *out, const Module *m);

/* Writes one dump file; write errors (disk full...) surface at fclose, so both are checked. */
static int write_file(const Module *m, const char *dir, const char *stem, const char *ext,
                      Printer print, Diag *d) {
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s.%s", dir, stem, ext);
    if (n < 0 || (size_t)n >= sizeof path) return fail_path(d, "write", dir, ENAMETOOLONG);

    FILE *f = fopen(path, "w");
    if (f == NULL) return fail_path(d, "write", path, errno);
    print(f, m);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return fail_path(d, "write", path, bad ? EIO : errno);
    return 0;
}

int dump_module(const Module *m, const char *dir, const char *stem, Diag *d) {
    if (make_dirs(dir, d) != 0) return -1;
    if (write_file(m, dir, stem, "ir", ir_print_module, d) != 0) return -1;
    return write_file(m, dir, stem, "dot", ir_print_dot, d);
}

/* Dumps stage number `index` (0 = frontend) when a dump directory was asked for. */
static int dump_stage(const Module *m, const PipelineOptions *opts, int index, const char *name,
                      Diag *d) {
    if (opts == NULL || opts->dump_dir == NULL) return 0;
    char stem[128];
    snprintf(stem, sizeof stem, "%02d-%s", index, name);
    return dump_module(m, opts->dump_dir, stem, d);
}

/* Invalid IR between passes is capc's fault, not the model's: say so and name the stage. */
static int verify_after(const Module *m, const char *stage, bool require_shapes, Diag *d) {
    Diag inner = {0};
    if (ir_verify_module(m, require_shapes, &inner) == 0) return 0;
    snprintf(d->msg, sizeof d->msg,
             "internal error: invalid IR after %s (this is a bug in capc): %.900s", stage,
             inner.msg);
    d->loc = inner.loc;
    return -1;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int pipeline_run(Module *m, const PipelineOptions *opts, Diag *d) {
    bool verbose = opts != NULL && opts->verbose;
    /* The frontend leaves result shapes unknown; every pass from "shapes" on keeps them. */
    /* Dump before verifying, so that invalid IR can be looked at. */
    if (dump_stage(m, opts, 0, "frontend", d) != 0) return -1;
    if (verify_after(m, "the frontend", false, d) != 0) return -1;

    for (int i = 0; i < N_PASSES; i++) {
        const Pass *p = &PASSES[i];
        double start = now_seconds();
        if (p->run(m, d) != 0) return -1;
        if (verbose)
            fprintf(stderr, "capc: pass %-12s %8.3f ms\n", p->name,
                    (now_seconds() - start) * 1e3);

        char stage[64];
        snprintf(stage, sizeof stage, "pass '%s'", p->name);
        if (dump_stage(m, opts, i + 1, p->name, d) != 0) return -1;
        if (verify_after(m, stage, true, d) != 0) return -1;
    }
    /* The memory plan changes no IR; its dump follows the last pass's (passes/memplan.c). */
    if (opts != NULL && opts->dump_dir != NULL) {
        char stem[128];
        snprintf(stem, sizeof stem, "%02d-memplan", N_PASSES + 1);
        if (memplan_dump_module(m, opts->dump_dir, stem, d) != 0) return -1;
    }
    return 0;
}
