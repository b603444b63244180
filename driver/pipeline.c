/* pipeline.c — capc's table of contents: the whole path from the module the frontend built to
 * cap.so, stage by stage, in the order of STAGES below.
 *
 *   shapes -> training -> features -> fold -> fuse  (IR passes: passes/)
 *          -> lower -> rewrite -> memplan -> render  (code generation: codegen/)
 *          -> package                                (NVRTC, cc, cap.so)
 *
 * After every stage a checker runs, so that a stage that breaks an invariant is named as the
 * culprit: the IR verifier after the IR passes, the kernel checker after lowering and after
 * the rewrites, the memory plan's checker inside `memplan` (always). The IR verifier re-runs
 * every shape rule, ~8% of a deep model's compile per run, so by default it runs once, after
 * the last IR pass; --verify-each (and any build without NDEBUG, as the tests are) runs it
 * after each IR pass, to name the pass that broke the IR. With a dump directory
 * each stage writes what it left: the IR as the frontend left it (00-frontend) and after each
 * IR pass (NN-NAME.ir, which parses back, and NN-NAME.dot), the memory plans
 * (NN-memplan.txt) and the rendered kernels of every entry point (NN-kernels.c and .cu).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diag.h"
#include "pipeline.h"

typedef struct Run {
    Module *m;
    const PipelineOptions *opts;
    Package *p;    /* from `lower` on */
    int *unfused;  /* per function after `features`: its kernels if every op ran alone */
    int n_unfused;
} Run;

typedef enum { DUMP_NONE, DUMP_IR, DUMP_MEMPLAN, DUMP_KERNELS } DumpKind;

typedef struct Stage {
    const char *name;
    PipelineGoal goal; /* the goal that needs it */
    int (*run)(Run *r, Diag *d);
    int (*check)(Run *r, const char *stage, Diag *d); /* NULL: none */
    DumpKind dump;
} Stage;

static int run_shapes(Run *r, Diag *d) { return pass_infer_shapes(r->m, &r->opts->passes, d); }
/* The entry points are all there after `features`: count their kernels as --no-fuse would
 * run them (before `fold` and `fuse` change that), for the report. */
static int count_unfused(Run *r, Diag *d) {
    if (r->opts->report == NULL) return 0;
    r->n_unfused = r->m->n_funcs;
    r->unfused = malloc(sizeof *r->unfused * ((size_t)r->n_unfused + 1));
    if (r->unfused == NULL) {
        diag_msg(d, "out of memory");
        return -1;
    }
    for (int i = 0; i < r->n_unfused; i++) r->unfused[i] = schedule_count_unfused(r->m->funcs[i]);
    return 0;
}

static int run_training(Run *r, Diag *d) {
    return pass_build_training_program(r->m, &r->opts->passes, d);
}
static int run_features(Run *r, Diag *d) {
    if (pass_feature_cache(r->m, &r->opts->passes, d) != 0) return -1;
    return count_unfused(r, d);
}
static int run_fold(Run *r, Diag *d) { return pass_fold_bn(r->m, &r->opts->passes, d); }
static int run_fuse(Run *r, Diag *d) { return pass_fuse(r->m, &r->opts->passes, d); }

static int run_lower(Run *r, Diag *d) {
    r->p = package_new(r->m, r->opts->verbose);
    if (r->p == NULL) {
        diag_msg(d, "out of memory");
        return -1;
    }
    return package_lower(r->p, d);
}
static int run_rewrite(Run *r, Diag *d) { return package_rewrite(r->p, d); }
static int run_memplan(Run *r, Diag *d) { return package_plan(r->p, d); }
static int run_render(Run *r, Diag *d) { return package_render(r->p, d); }
static int run_package(Run *r, Diag *d) { return package_write(r->p, &r->opts->package, d); }

static int verify_ir(Run *r, const char *stage, Diag *d);
static int check_kernels(Run *r, const char *stage, Diag *d) {
    Diag inner = {0};
    if (package_check_kernels(r->p, &inner) == 0) return 0;
    diag_set(d, inner.loc, "%.900s, found after %s", inner.msg, stage);
    return -1;
}

/* The stages, in the order they run. */
static const Stage STAGES[] = {
    {"shapes", PIPELINE_IR, run_shapes, verify_ir, DUMP_IR},     /* static shapes everywhere */
    {"training", PIPELINE_IR, run_training, verify_ir, DUMP_IR}, /* train_step, eval_loss... */
    {"features", PIPELINE_IR, run_features, verify_ir, DUMP_IR}, /* the frozen prefix cut off */
    {"fold", PIPELINE_IR, run_fold, verify_ir, DUMP_IR},         /* frozen BN into its conv */
    {"fuse", PIPELINE_IR, run_fuse, verify_ir, DUMP_IR},         /* groups: one kernel each */
    {"lower", PIPELINE_KERNELS, run_lower, check_kernels, DUMP_NONE}, /* kernel descriptions */
    {"rewrite", PIPELINE_KERNELS, run_rewrite, check_kernels, DUMP_NONE}, /* codegen/opt_*.c */
    {"memplan", PIPELINE_KERNELS, run_memplan, NULL, DUMP_MEMPLAN}, /* arena offsets, steps */
    {"render", PIPELINE_KERNELS, run_render, NULL, DUMP_KERNELS},   /* C and CUDA source */
    {"package", PIPELINE_LIBRARY, run_package, NULL, DUMP_NONE},    /* NVRTC, cc, cap.so */
};
enum { N_STAGES = sizeof STAGES / sizeof STAGES[0] };

/* mkdir -p: creates dir and any missing parents; an existing directory is fine. */
typedef void (*Printer)(FILE *out, const Module *m);

/* Writes one dump file; write errors (disk full...) surface at fclose, so both are checked. */
static int write_file(const Module *m, const char *dir, const char *stem, const char *ext,
                      Printer print, Diag *d) {
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s.%s", dir, stem, ext);
    if (n < 0 || (size_t)n >= sizeof path) return diag_path_error(d, "write", dir, ENAMETOOLONG);

    FILE *f = fopen(path, "w");
    if (f == NULL) return diag_path_error(d, "write", path, errno);
    print(f, m);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return diag_path_error(d, "write", path, bad ? EIO : errno);
    return 0;
}

int dump_module(const Module *m, const char *dir, const char *stem, Diag *d) {
    if (diag_make_dirs(d, dir) != 0) return -1;
    if (write_file(m, dir, stem, "ir", ir_print_module, d) != 0) return -1;
    return write_file(m, dir, stem, "dot", ir_print_dot, d);
}

/* Dumps stage number `index` (0 = the frontend) when a dump directory was asked for. */
static int dump_stage(Run *r, int index, const char *name, DumpKind kind, Diag *d) {
    const char *dir = r->opts->dump_dir;
    if (dir == NULL || kind == DUMP_NONE) return 0;
    char stem[128];
    snprintf(stem, sizeof stem, "%02d-%s", index, name);
    switch (kind) {
    case DUMP_IR: return dump_module(r->m, dir, stem, d);
    case DUMP_MEMPLAN: return package_dump_memplan(r->p, dir, stem, d);
    case DUMP_KERNELS:
        snprintf(stem, sizeof stem, "%02d-kernels", index);
        return package_dump_kernels(r->p, dir, stem, d);
    default: return 0;
    }
}

/* Invalid IR between passes is capc's fault, not the model's: say so and name the stage. */
static int verify_ir(Run *r, const char *stage, Diag *d) {
    Diag inner = {0};
    if (ir_verify_module(r->m, true, &inner) == 0) return 0;
    diag_set(d, inner.loc,
             "internal error: invalid IR after %s (this is a bug in capc): %.900s", stage,
             inner.msg);
    return -1;
}

#ifdef NDEBUG
enum { VERIFY_EACH_ALWAYS = 0 };
#else
enum { VERIFY_EACH_ALWAYS = 1 };
#endif

/* Whether stage i's checker runs: the IR verifier only after the last IR stage unless every
 * stage is to be verified; the other checkers always. Writes the culprit's name to stage. */
static bool want_check(const Run *r, int i, char *stage, size_t size) {
    snprintf(stage, size, "stage '%s'", STAGES[i].name);
    if (STAGES[i].check == NULL) return false;
    if (STAGES[i].check != verify_ir || r->opts->verify_each || VERIFY_EACH_ALWAYS) return true;
    if (i + 1 < N_STAGES && STAGES[i + 1].check == verify_ir) return false;
    snprintf(stage, size, "the IR stages (shapes to %s; --verify-each names the stage)",
             STAGES[i].name);
    return true;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int fill_report(Run *r, PipelineReport *rep, Diag *d) {
    int n = package_n_entries(r->p);
    rep->entries = calloc((size_t)n + 1, sizeof *rep->entries);
    rep->unfused_kernels = calloc((size_t)n + 1, sizeof *rep->unfused_kernels);
    if (rep->entries == NULL || rep->unfused_kernels == NULL) {
        diag_msg(d, "out of memory");
        return -1;
    }
    rep->n_entries = n;
    for (int i = 0; i < n; i++) {
        package_entry_stats(r->p, i, &rep->entries[i]);
        rep->unfused_kernels[i] = i < r->n_unfused ? r->unfused[i] : -1;
    }
    return 0;
}

void pipeline_report_free(PipelineReport *rep) {
    if (rep == NULL) return;
    free(rep->entries);
    free(rep->unfused_kernels);
    memset(rep, 0, sizeof *rep);
}

static int run_stages(Run *r, Diag *d) {
    const PipelineOptions *opts = r->opts;
    /* An output that cannot be written fails now, not after the long work. */
    if (opts->goal >= PIPELINE_LIBRARY && package_check_output(&opts->package, d) != 0) return -1;
    /* Dump before verifying, so that invalid IR can be looked at. */
    if (dump_stage(r, 0, "frontend", DUMP_IR, d) != 0) return -1;
    Diag inner = {0};
    if (ir_verify_module(r->m, false, &inner) != 0) {
        diag_set(d, inner.loc,
                 "internal error: invalid IR after the frontend (this is a bug in capc): %.900s",
                 inner.msg);
        return -1;
    }
    for (int i = 0; i < N_STAGES && STAGES[i].goal <= opts->goal; i++) {
        const Stage *st = &STAGES[i];
        double start = now_seconds();
        if (st->run(r, d) != 0) return -1;
        if (opts->verbose)
            fprintf(stderr, "capc: %-10s %9.3f ms\n", st->name, (now_seconds() - start) * 1e3);
        char stage[128];
        bool check = want_check(r, i, stage, sizeof stage);
        if (dump_stage(r, i + 1, st->name, st->dump, d) != 0) return -1;
        if (check && st->check(r, stage, d) != 0) return -1;
    }
    if (opts->report != NULL && r->p != NULL) return fill_report(r, opts->report, d);
    return 0;
}

/* Mirrors dump_stage's names: frontend, then every stage up to the goal, with its kind's
 * extensions. Kept next to run_stages so that a new dump kind is added in both. */
int pipeline_dump_files(const PipelineOptions *opts, int (*each)(const char *name, void *ctx),
                        void *ctx) {
    static const char *const exts[][3] = {
        [DUMP_NONE] = {NULL}, [DUMP_IR] = {"ir", "dot", NULL}, [DUMP_MEMPLAN] = {"txt", NULL},
        [DUMP_KERNELS] = {"c", "cu", NULL}};
    if (opts == NULL || opts->dump_dir == NULL) return 0;
    for (int i = -1; i < N_STAGES && (i < 0 || STAGES[i].goal <= opts->goal); i++) {
        DumpKind kind = i < 0 ? DUMP_IR : STAGES[i].dump;
        const char *stage = i < 0 ? "frontend" : kind == DUMP_KERNELS ? "kernels" : STAGES[i].name;
        for (int e = 0; exts[kind][e] != NULL; e++) {
            char name[160];
            snprintf(name, sizeof name, "%02d-%s.%s", i + 1, stage, exts[kind][e]);
            int rc = each(name, ctx);
            if (rc != 0) return rc;
        }
    }
    return 0;
}

int pipeline_run(Module *m, const PipelineOptions *opts, Diag *d) {
    PipelineOptions defaults = {0};
    Run r = {m, opts != NULL ? opts : &defaults, NULL, NULL, 0};
    int rc = run_stages(&r, d);
    package_free(r.p);
    free(r.unfused);
    return rc;
}
