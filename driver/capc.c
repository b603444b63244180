/* capc.c — the `capc` command line (docs/cli.md).
 *
 * Reads the arguments into a CliArgs, then runs one of: --help, --version, --list-ops, --check
 * (load the model, run the pipeline up to the rendered kernels, print a summary with each
 * entry point's kernel counts), or a compile (load, run the whole pipeline with optional
 * dumps: passes, kernels, memory plans, cap.c, cc, NVRTC -> cap.so).
 *
 * This is the only layer of capc that decides exit statuses:
 *   0  success
 *   1  the model (or a file capc reads or writes) has a problem; the message says which
 *   2  the command line itself is wrong (unknown option, missing argument)
 * Everything below returns errors in a Diag and never exits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diag.h"
#include "files.h"
#include "frontend.h"
#include "options.h"
#include "ops.h"
#include "pipeline.h"

enum { EXIT_MODEL_ERROR = 1, EXIT_USAGE = 2 };

/* Where `capc MODEL.json` with no -o would write (like cc's a.out). */
#define DEFAULT_OUTPUT "cap.so"

typedef enum { ACTION_COMPILE, ACTION_CHECK, ACTION_HELP, ACTION_VERSION, ACTION_LIST_OPS } Action;

typedef struct CliArgs {
    Action action;
    const char *model_path;
    const char *dump_dir; /* NULL: no dumps */
    const char *output;   /* -o; NULL: none given */
    ConfigOverride *defines; /* -D, in command-line order; owned (free with cli_args_free) */
    int n_defines;
    int verbose;
    bool verify_each;     /* --verify-each */
    int targets;          /* CodegenTarget bits; 0: cpu, plus cuda when NVRTC is available */
    const char *emit_src; /* --emit-src DIR; NULL: none */
    PassOptions passes;   /* --no-fuse, --fuse=... */
    const char *cache_dir; /* --cache-dir; NULL: the default (codegen/cache.h) */
    int no_cache;
    int64_t cache_max;    /* --cache-max; 0: the default */
    int jobs;             /* -j; 0: the online CPUs */
} CliArgs;

static const OptSpec OPTIONS[] = {
    {"--check", 0, OPT_FLAG, 0, NULL,
     "load the model, run the passes and code generation, print a summary (with every entry "
     "point's kernel counts), write nothing", NULL},
    {NULL, 'o', OPT_VALUE, OPT_NONEMPTY, "FILE",
     "write the compiled library to FILE (default " DEFAULT_OUTPUT ")", NULL},
    {NULL, 'D', OPT_REPEAT, 0, "NAME=VALUE",
     "override the config variable NAME (also -DNAME=VALUE; repeatable, later wins)", NULL},
    {"--dump-ir", 0, OPT_VALUE, OPT_NONEMPTY, "DIR",
     "write what every stage left to DIR: NN-STAGE.ir and .dot after the IR passes, "
     "NN-memplan.txt, NN-kernels.c and .cu (also --dump-ir=DIR)", NULL},
    {"--target", 0, OPT_VALUE, 0, "T",
     "cpu, cuda or all (default: cpu, plus cuda when NVRTC is available)", NULL},
    {"--emit-src", 0, OPT_VALUE, OPT_NONEMPTY, "DIR",
     "also write the generated cap.c and cap.cu to DIR (also --emit-src=DIR)", NULL},
    {"--no-fuse", 0, OPT_FLAG, 0, NULL,
     "no fusion: every op its own kernel (same results up to rounding; docs/fusion.md)", NULL},
    {"--fuse", 0, OPT_REPEAT, OPT_NONEMPTY, "LIST",
     "switch fusion rules off (-RULE) or on (RULE), comma-separated: elementwise, reduction, "
     "contraction, attention, multi_reduction, multi_tensor; 'none' or 'all' for every rule "
     "(default: all; repeatable, applied left to right)", NULL},
    {"--cache-dir", 0, OPT_VALUE, OPT_NONEMPTY, "DIR",
     "keep compiled kernels in DIR (default: $CAPC_CACHE_DIR, else $XDG_CACHE_HOME/capc, else "
     "~/.cache/capc; docs/compile-cache.md)", NULL},
    {"--no-cache", 0, OPT_FLAG, 0, NULL,
     "compile every kernel, neither reading nor filling the cache", NULL},
    {"--cache-max", 0, OPT_VALUE, OPT_NONEMPTY, "SIZE",
     "evict least recently used kernels beyond SIZE bytes (K, M, G suffixes; default 2G)",
     NULL},
    {"--jobs", 'j', OPT_VALUE, OPT_NONEMPTY, "N",
     "compile with N threads and compiler processes (1-64; default: the CPUs)", NULL},
    {"--verify-each", 0, OPT_FLAG, 0, NULL,
     "run the IR verifier after every IR pass, not only after the last one (slower; names "
     "the pass that broke the IR)", NULL},
    {"--verbose", 'v', OPT_COUNTED, 0, NULL,
     "print each stage with its time, the compiles and the cache's hits and misses to stderr "
     "(-vv: every compiled unit too)", NULL},
    {"--version", 0, OPT_FLAG, OPT_EARLY, NULL, "print the version and exit", NULL},
    {"--list-ops", 0, OPT_FLAG, OPT_EARLY, NULL,
     "print the op table (operands, attributes, fusion kind, meaning) as markdown and exit; "
     "docs/ops.md is this output", NULL},
    OPT_END,
};

static const OptCommand CAPC = {
    .prog = "capc",
    .synopsis = "[options] MODEL.json",
    .about = "Compiles a model description (JSON) into cap.so, a library that trains the model "
             "and samples from it.",
    .tables = {OPTIONS},
    .min_pos = 1,
    .max_pos = 1,
    .pos_missing = "no model file given",
    .pos_extra = "more than one model file given ('%s')",
    .footer = "exit status: 0 success, 1 error in the model or a file, 2 bad command line. "
              "`--` ends the options: what follows is the model file. docs/cli.md has the "
              "details.",
};

static int add_define(CliArgs *a, const char *text) {
    Diag d = {0};
    if (frontend_parse_define(text, &a->defines[a->n_defines], &d) != 0)
        return opt_fail(&CAPC, "%s", d.msg);
    a->n_defines++;
    return 0;
}

static int parse_target(CliArgs *a, const OptResult *r) {
    static const int targets[] = {TARGET_CPU, TARGET_CUDA, TARGET_ALL};
    char err[256];
    int k = opt_choice(r, "--target", "cpu|cuda|all", -1, err, sizeof err);
    if (k == -1 && opt_has(r, "--target")) return opt_fail(&CAPC, "%s", err);
    a->targets = k >= 0 ? targets[k] : 0;
    return 0;
}

/* --fuse=LIST: "none", "all", RULE (on), -RULE (off), comma-separated, left to right. */
static int parse_fuse(CliArgs *a, const char *list) {
    for (const char *p = list; p != NULL && *p != '\0';) {
        size_t len = strcspn(p, ",");
        char item[64];
        if (len == 0 || len >= sizeof item) return opt_fail(&CAPC, "bad --fuse list '%s'", list);
        memcpy(item, p, len);
        item[len] = '\0';
        p += len + (p[len] == ',');
        bool off = item[0] == '-';
        const char *name = item + (off || item[0] == '+');
        if (strcmp(name, "none") == 0 || strcmp(name, "all") == 0) {
            a->passes.fuse_off = strcmp(name, "none") == 0 ? ~0u : 0u;
            continue;
        }
        int r = 0;
        while (fuse_rule_name((FuseRule)r) != NULL && strcmp(fuse_rule_name((FuseRule)r), name) != 0)
            r++;
        if (fuse_rule_name((FuseRule)r) == NULL)
            return opt_fail(&CAPC, "unknown fusion rule '%s' in --fuse", name);
        if (off) a->passes.fuse_off |= 1u << r;
        else a->passes.fuse_off &= ~(1u << r);
    }
    return 0;
}

/* --cache-max: bytes, with an optional K, M or G (powers of 1024). */
static int parse_size(CliArgs *a, const char *value) {
    if (value == NULL) return 0;
    char *end = NULL;
    errno = 0;
    double v = strtod(value, &end);
    double unit = *end == 'K' || *end == 'k' ? 1024.0 : *end == 'M' || *end == 'm' ? 1048576.0
                : *end == 'G' || *end == 'g' ? 1073741824.0 : 1.0;
    if (unit > 1.0) end++;
    if (end == value || *end != '\0' || errno != 0 || !(v * unit >= 1.0) || v * unit > 9e18)
        return opt_fail(&CAPC, "bad --cache-max '%s' (a size such as 500M or 4G)", value);
    a->cache_max = (int64_t)(v * unit);
    return 0;
}

static int parse_jobs(CliArgs *a, const OptResult *r) {
    long long n = 0;
    char err[256];
    if (opt_int(r, "--jobs", 0, 1, 64, &n, err, sizeof err) != 0)
        return opt_fail(&CAPC, "%s", err);
    a->jobs = (int)n;
    return 0;
}

static int take_defines(CliArgs *a, const OptValue *d) {
    a->defines = calloc((size_t)d->n_list + 1, sizeof *a->defines);
    if (a->defines == NULL) return opt_fail(&CAPC, "out of memory");
    for (int i = 0; i < d->n_list; i++)
        if (add_define(a, d->list[i]) != 0) return 2;
    return 0;
}

/* The parsed options into a; returns 0 or 2 after printing the first error. */
static int take_options(const OptResult *r, CliArgs *a) {
    a->model_path = r->pos[0];
    a->action = opt_has(r, "--check") ? ACTION_CHECK : ACTION_COMPILE;
    a->dump_dir = opt_str(r, "--dump-ir");
    a->output = opt_str(r, "-o");
    a->emit_src = opt_str(r, "--emit-src");
    a->passes.no_fuse = opt_has(r, "--no-fuse");
    a->cache_dir = opt_str(r, "--cache-dir");
    a->no_cache = opt_has(r, "--no-cache");
    a->verbose = opt_get(r, "--verbose")->count;
    a->verify_each = opt_has(r, "--verify-each");
    int rc = take_defines(a, opt_get(r, "-D"));
    if (rc == 0) rc = parse_target(a, r);
    const OptValue *fuse = opt_get(r, "--fuse");
    for (int i = 0; rc == 0 && i < fuse->n_list; i++) rc = parse_fuse(a, fuse->list[i]);
    if (rc == 0) rc = parse_size(a, opt_str(r, "--cache-max"));
    if (rc == 0) rc = parse_jobs(a, r);
    if (rc == 0 && a->action == ACTION_CHECK && a->output != NULL)
        rc = opt_fail(&CAPC, "--check writes nothing; it cannot be combined with -o");
    if (rc == 0 && a->action == ACTION_CHECK && a->emit_src != NULL)
        rc = opt_fail(&CAPC, "--check writes nothing; it cannot be combined with --emit-src");
    return rc;
}

/* Fills a from argv. Returns 0 to go on, else *status is the exit status (help: 0, a bad
 * line: 2, after printing). */
static int parse_args(int argc, char **argv, CliArgs *a, int *status) {
    OptResult r;
    if (!opt_begin(&CAPC, argc, argv, &r, status)) {
        a->action = ACTION_HELP;
        return -1;
    }
    if (r.early != NULL)
        a->action = strcmp(r.early->name, "--version") == 0 ? ACTION_VERSION : ACTION_LIST_OPS;
    else *status = take_options(&r, a);
    opt_free(&r);
    return *status == 0 ? 0 : -1;
}

/* ---- --check summary ------------------------------------------------------------------ */

/* Shortest %g form that reads back as the same double; reals keep a '.' (5.0, not 5) so
 * they read as they do in the IR text. */
static void format_number(double v, bool is_int, char *buf, size_t size) {
    if (is_int) {
        snprintf(buf, size, "%lld", (long long)v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (strpbrk(buf, ".eEni") == NULL && strlen(buf) + 3 <= size) strcat(buf, ".0");
}

static void print_config(FILE *out, const Module *m) {
    fprintf(out, "config:");
    if (m->n_config == 0) fprintf(out, " (none)");
    for (int i = 0; i < m->n_config; i++) {
        char num[64];
        format_number(m->config[i].value, m->config[i].is_int, num, sizeof num);
        fprintf(out, "%s %s=%s", i == 0 ? "" : ",", m->config[i].name, num);
    }
    fprintf(out, "\n");
}

/* An entry point's inputs, outputs, kernels (fused, and as --no-fuse would run it: one per
 * op), launches per call (the kernels plus the final output and state copies) and activation
 * memory (the arena its memory plan packs intermediates into). */
static void print_function(FILE *out, const Function *f, const EntryStats *e, int unfused) {
    char type[128];
    fprintf(out, "function @%s: %d ops\n", f->name, f->n_ops);
    for (int i = 0; i < f->n_inputs; i++) {
        const Value *v = f->inputs[i];
        fprintf(out, "  input  %s: %s\n", v->name,
                type_format(v->dtype, &v->shape, type, sizeof type));
    }
    for (int i = 0; i < f->n_outputs; i++) {
        const Value *v = f->outputs[i];
        fprintf(out, "  output %s: %s\n", f->output_names[i],
                type_format(v->dtype, &v->shape, type, sizeof type));
    }
    if (unfused >= 0)
        fprintf(out, "  kernels: %d (unfused %d), launches: %d\n", e->kernels, unfused,
                e->launches);
    else
        fprintf(out, "  kernels: %d (only when fused), launches: %d\n", e->kernels, e->launches);
    fprintf(out, "  activation bytes: %lld (naive %lld, %.1f%%)\n", (long long)e->arena_bytes,
            (long long)e->naive_bytes,
            e->naive_bytes > 0 ? 100.0 * (double)e->arena_bytes / (double)e->naive_bytes : 0.0);
}

static void print_params(FILE *out, const Module *m) {
    int weights = 0, frozen = 0, buffers = 0;
    for (int i = 0; i < m->n_params; i++) {
        const Param *p = m->params[i];
        /* optimizer state, folded BatchNorms (derived) and hyperparameters: not model tensors */
        if (p->kind == PARAM_STATE || p->kind == PARAM_DERIVED || p->kind == PARAM_HPARAM) continue;
        if (p->kind == PARAM_BUFFER) buffers++;
        else if (p->trainable) weights++;
        else { weights++; frozen++; }
    }
    fprintf(out, "parameter tensors: %d (%d trainable, %d frozen)\n", weights, weights - frozen,
            frozen);
    /* These two lines are relied on by scripts and tests: keep them exactly. */
    fprintf(out, "parameters: %lld\n", (long long)module_count_parameters(m, false));
    fprintf(out, "trainable: %lld\n", (long long)module_count_parameters(m, true));
    fprintf(out, "buffers: %d tensors, %lld elements\n", buffers,
            (long long)module_count_buffer_elements(m));
}

static void print_summary(FILE *out, const Module *m, const PipelineReport *r) {
    int n_ops = 0;
    fprintf(out, "model: %s\n", m->name);
    print_config(out, m);
    for (int i = 0; i < m->n_funcs && i < r->n_entries; i++) {
        print_function(out, m->funcs[i], &r->entries[i], r->unfused_kernels[i]);
        n_ops += m->funcs[i]->n_ops;
    }
    fprintf(out, "ops: %d\n", n_ops);
    print_params(out, m);
}

/* ---- running ---------------------------------------------------------------------------- */

/* Says "cannot open" in the driver's own words, before the frontend tries, so the message is
 * the same whatever the frontend would say. */
static int check_readable(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "capc: error: cannot open '%s': %s\n", path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

/* ---- outputs that are inputs ---------------------------------------------------------- */

/* capc's inputs are the model file and every file it names (extends, imports, C sources); an
 * output that is one of them (by device and inode, so a second name, a hard link or a
 * symlink count too) would replace it with the library or a dump, and rename() over it
 * leaves no trace. Every output is checked against the model file before anything runs, and
 * against all of them once the frontend has read them, before anything is written. */
typedef struct Clobber {
    const char *model_path;
    const char *const *inputs;
    int n_inputs;
    const char *option; /* the option that names the output, for the message */
    const char *dir;    /* the output's directory for names relative to it; NULL: a path */
} Clobber;

static int refuse_if_input(const Clobber *c, const char *path) {
    for (int i = 0; i < c->n_inputs; i++) {
        if (!file_same(path, c->inputs[i])) continue;
        fprintf(stderr, "capc: error: %s would overwrite '%s', which is %s '%s'; choose another "
                "output\n", c->option, path,
                file_same(c->inputs[i], c->model_path) ? "the model file" : "a file the model reads",
                c->inputs[i]);
        return -1;
    }
    return 0;
}

static int refuse_in_dir(const char *name, void *ctx) {
    const Clobber *c = ctx;
    size_t size = strlen(c->dir) + strlen(name) + 2;
    char *path = malloc(size);
    if (path == NULL) {
        fprintf(stderr, "capc: error: out of memory\n");
        return -1;
    }
    snprintf(path, size, "%s/%s", c->dir, name);
    int rc = refuse_if_input(c, path);
    free(path);
    return rc;
}

/* -o (the default cap.so included), --emit-src's cap.c and cap.cu, every --dump-ir file. */
static int check_outputs_are_not_inputs(const PipelineOptions *opts, const CliArgs *a,
                                        const char *const *inputs, int n_inputs) {
    /* a missing model: the frontend says so */
    Clobber c = {.model_path = a->model_path, .inputs = inputs, .n_inputs = n_inputs};
    if (opts->goal >= PIPELINE_LIBRARY) {
        c.option = a->output != NULL ? "-o" : "the default output (no -o)";
        if (refuse_if_input(&c, opts->package.output_path) != 0) return -1;
        if (opts->package.emit_src_dir != NULL) {
            c.option = "--emit-src";
            c.dir = opts->package.emit_src_dir;
            if (refuse_in_dir("cap.c", &c) != 0 || refuse_in_dir("cap.cu", &c) != 0) return -1;
        }
    }
    c.option = "--dump-ir";
    c.dir = opts->dump_dir;
    return pipeline_dump_files(opts, refuse_in_dir, &c);
}

/* Loads the model and runs the pipeline as far as opts->goal. Returns the module or NULL
 * after printing why. */
static Module *compile(const CliArgs *a, PipelineOptions *opts) {
    if (check_readable(a->model_path) != 0) return NULL;
    opts->passes = a->passes;
    opts->dump_dir = a->dump_dir;
    opts->verbose = a->verbose;
    opts->verify_each = a->verify_each;
    const char *model_only[] = {a->model_path};
    if (check_outputs_are_not_inputs(opts, a, model_only, 1) != 0) return NULL;
    Diag d = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    Module *m = frontend_load_file(a->model_path, a->defines, a->n_defines, &d);
    if (m == NULL) {
        diag_print(stderr, &d);
        return NULL;
    }
    if (check_outputs_are_not_inputs(opts, a, m->input_files, m->n_input_files) != 0) {
        module_free(m);
        return NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (a->verbose) /* the same format as the pipeline's stages */
        fprintf(stderr, "capc: %-10s %9.3f ms\n", "frontend",
                (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6);
    if (pipeline_run(m, opts, &d) != 0) {
        diag_print(stderr, &d);
        module_free(m);
        return NULL;
    }
    return m;
}

static int run_check(const CliArgs *a) {
    PipelineReport report = {0};
    PipelineOptions opts = {.goal = PIPELINE_KERNELS, .report = &report};
    Module *m = compile(a, &opts);
    if (m == NULL) return EXIT_MODEL_ERROR;
    print_summary(stdout, m, &report);
    if (a->dump_dir != NULL) printf("capc: IR dumps written to %s/\n", a->dump_dir);
    pipeline_report_free(&report);
    module_free(m);
    return 0;
}

/* "-D batch=32 -D vocab=9000": recorded in cap.so so the runtime can say how to rebuild. */
static char *join_defines(const CliArgs *a) {
    size_t size = 1;
    for (int i = 0; i < a->n_defines; i++)
        size += strlen(a->defines[i].name) + strlen(a->defines[i].value) + 5;
    char *text = malloc(size);
    if (text == NULL) return NULL;
    text[0] = '\0';
    for (int i = 0; i < a->n_defines; i++) {
        size_t len = strlen(text);
        /* name points into the argument: it runs on to "=VALUE". */
        const char *name = a->defines[i].name;
        snprintf(text + len, size - len, "%s-D %.*s=%s", i ? " " : "", (int)strcspn(name, "="),
                 name, a->defines[i].value);
    }
    return text;
}

/* The whole pipeline; cap.so at -o (default cap.so). --dump-ir alone asks only for the dumps
 * (every stage but writing the library). */
static int run_compile(const CliArgs *a) {
    bool library = a->output != NULL || a->dump_dir == NULL || a->emit_src != NULL;
    int targets = a->targets;
    if (targets == 0) targets = TARGET_CPU | (nvrtc_available() ? TARGET_CUDA : 0);
    char *flags = join_defines(a);
    PipelineOptions opts = {
        .goal = library ? PIPELINE_LIBRARY : PIPELINE_KERNELS,
        .package = {
            .output_path = a->output != NULL ? a->output : DEFAULT_OUTPUT,
            .targets = targets,
            .emit_src_dir = a->emit_src,
            .cuda_archs = NULL, /* the default list, codegen/package.c */
            .compile_flags = flags != NULL ? flags : "",
            .verbose = a->verbose,
            .cache_dir = a->cache_dir,
            .no_cache = a->no_cache,
            .cache_max_bytes = a->cache_max,
            .jobs = a->jobs,
        },
    };
    Module *m = compile(a, &opts);
    free(flags);
    if (m == NULL) return EXIT_MODEL_ERROR;
    if (a->dump_dir != NULL) printf("capc: IR dumps written to %s/\n", a->dump_dir);
    module_free(m);
    return 0;
}

/* ---- --list-ops ----------------------------------------------------------------------- */

static void print_operand_count(const OpInfo *info) {
    if (info->max_inputs < 0) printf("%d or more", info->min_inputs);
    else if (info->min_inputs == info->max_inputs) printf("%d", info->min_inputs);
    else printf("%d-%d", info->min_inputs, info->max_inputs);
}

static void print_attrs(const OpInfo *info) {
    for (int j = 0; j < info->n_attrs; j++) {
        const AttrSpec *spec = &info->attrs[j];
        printf("%s`%s`: %s", j ? ", " : "", spec->name, attr_kind_name(spec->kind));
        if (spec->default_text) printf(" = `%s`", spec->default_text);
        else printf(" (required)");
    }
}

/* The op table as a markdown reference; docs/ops.md is exactly this (a test diffs them). */
static int list_ops(void) {
    printf("# Ops\n\nThe op table (`ir/ops.def`), as `capc --list-ops` prints it. Binary "
           "elementwise ops broadcast numpy-style; docs/ir.md has the semantics that kernels "
           "depend on.\n\n");
    printf("| op | operands | attributes | fusion | meaning |\n|---|---|---|---|---|\n");
    for (int k = 0; k < OP_COUNT; k++) {
        const OpInfo *info = op_info(k);
        printf("| `%s` | ", info->name);
        print_operand_count(info);
        printf(" | ");
        print_attrs(info);
        printf(" | %s | %s |\n", fusion_kind_name(info->fusion), info->doc);
    }
    return 0;
}

static int dispatch(const CliArgs *a) {
    switch (a->action) {
    case ACTION_HELP: return 0; /* printed while parsing */
    case ACTION_VERSION: printf("capc %s\n", CAPC_VERSION); return 0;
    case ACTION_LIST_OPS: return list_ops();
    case ACTION_CHECK: return run_check(a);
    case ACTION_COMPILE: return run_compile(a);
    }
    return EXIT_USAGE;
}

int main(int argc, char **argv) {
    CliArgs args = {0};
    int status = 0;
    if (parse_args(argc, argv, &args, &status) == 0) status = dispatch(&args);
    free(args.defines);
    return status;
}
