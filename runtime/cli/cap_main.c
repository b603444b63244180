/* cap_main.c — the `cap` command line over libcaprt (cap.h): the command table (COMMANDS,
 * which `cap --help` lists and `cap help --list-commands` walks), main, and the commands
 * info, init, loss and train (with --data it hands over to cli_caption.c). Every command's
 * options are a table of support/options.h, which parses them and prints their --help.
 * docs/cli.md ("cap") describes them. Exit 0 on success, 1 on an error (the library's
 * message, prefixed "cap: error: "), 2 on a bad command line: every command returns its
 * status, and only main exits.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cap.h"
#include "files.h"
#include "options.h"
#include "cli_common.h"
#include "cli_data.h" /* cap_cmd_data, cap_cmd_vocab */
#include "cli_caption.h" /* cap train --data, cap sample, cap eval */
#include "cli_score.h"
#include "metrics.h"
#include "cli_plot.h" /* cap_cmd_plot */
#include "distributed.h" /* mpirun -np N cap train --data */
#include "safetensors.h"

#define ERR_SIZE 2048

/* ---- command line ------------------------------------------------------------------------ */

/* One command's parsed line: the model (the positional) and the options this file reads. */
typedef struct Args {
    const OptResult *r;
    const char *model;
    const char *out, *weights, *batch, *batches, *batch_dir, *grads, *resume, *log;
    const char *from, *prefix;
    int verbose;
} Args;

static void args_from(const OptResult *r, Args *a) {
    *a = (Args){
        .r = r, .model = r->pos[0], .out = opt_str(r, "--out"), .weights = opt_str(r, "--weights"),
        .batch = opt_str(r, "--batch"), .batches = opt_str(r, "--batches"),
        .batch_dir = opt_str(r, "--batch-dir"), .grads = opt_str(r, "--grads"),
        .resume = opt_str(r, "--resume"), .log = opt_str(r, "--log"), .from = opt_str(r, "--from"),
        .prefix = opt_str(r, "--prefix"), .verbose = opt_get(r, "--verbose")->count,
    };
}

/* A bad option value: the message; returns 2, the exit status. */
__attribute__((format(printf, 2, 3))) static int usage_error(const Args *a, const char *fmt,
                                                            ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = opt_vfail(a->r->cmd, fmt, ap);
    va_end(ap);
    return rc;
}

/* An integer option into *out (dflt when absent); returns 0, or 2 after the message. */
static int int_option(const Args *a, const char *name, int64_t dflt, int64_t min, int64_t max,
                      int64_t *out) {
    long long x;
    char err[512];
    if (opt_int(a->r, name, dflt, min, max, &x, err, sizeof err)) return usage_error(a, "%s", err);
    *out = (int64_t)x;
    return 0;
}

/* --seed: Philox keys are 32-bit, so a larger value would silently become another seed. */
static int seed_option(const Args *a, uint32_t *seed) {
    int64_t x = 0;
    int rc = int_option(a, "--seed", 0, 0, UINT32_MAX, &x);
    *seed = (uint32_t)x;
    return rc;
}

/* The library's message when st is an error: returns 1, the exit status; else 0. */
static int fail_if(CapStatus st, const char *err) {
    if (st == CAP_OK) return 0;
    fprintf(stderr, "cap: error: %s\n", err);
    return 1;
}

/* An output of the command (`what` names its option): writable, and none of its inputs.
 * Returns 0 or 1. */
static int check_output(const char *out, const char *what, const char *const *inputs, int n) {
    char err[ERR_SIZE];
    if (out && file_check_new_output(out, what, inputs, n, err, sizeof err))
        return fail_if(CAP_E_ARG, err);
    return 0;
}

/* ---- shared steps ---------------------------------------------------------------------- */

/* The model, once the session options are known to be good (a bad one is exit 2). */
static int open_model(const OptResult *r, const char *path, CapModel **m) {
    char err[ERR_SIZE];
    CapBackendKind kind;
    int threads;
    *m = NULL;
    int rc = cap_cli_session_options(r, &kind, &threads);
    return rc ? rc : fail_if(cap_model_open(path, m, err, sizeof err), err);
}

/* ---- cap info ---------------------------------------------------------------------------- */

/* Launches per call: the entry's kernels (one per fused group or lone op) plus the copies of
 * its results into the caller's outputs and into state (the copy kernels, "capc_copy_*"). */
static void print_entry(const CapArtifact *a, const CapEntry *e) {
    char ty[192];
    int n_updates = 0, n_copies = 0;
    for (int s = 0; s < e->n_steps; s++)
        n_copies += strncmp(a->kernels[e->steps[s].kernel].name, "capc_copy_", 10) == 0;
    printf("  %s: %d kernel launches (%d kernels, %d copies), arena %lld bytes\n", e->name,
           (int)e->n_steps, (int)e->n_steps - n_copies, n_copies, (long long)e->arena_bytes);
    for (int i = 0; i < e->n_inputs; i++)
        printf("    input  %s: %s\n", e->inputs[i].name, cap_tensor_type_str(&e->inputs[i], ty, sizeof ty));
    for (int i = 0; i < e->n_outputs; i++) {
        if (e->output_state && e->output_state[i] >= 0) {
            n_updates++;
            continue;
        }
        printf("    output %s: %s\n", e->outputs[i].name, cap_tensor_type_str(&e->outputs[i], ty, sizeof ty));
    }
    if (n_updates) printf("    updates %d state tensors in place (@X outputs)\n", n_updates);
}

static int cmd_info(const OptResult *r) {
    CapModel *m;
    int rc = open_model(r, r->pos[0], &m);
    if (rc) return rc;
    const CapArtifact *art = cap_model_artifact(m);
    CapCounts c;
    cap_model_counts(m, &c);
    printf("model: %s\n", art->model_name ? art->model_name : "?");
    printf("compiled by: capc %s%s%s\n", art->capc_version ? art->capc_version : "?",
           art->compile_flags && *art->compile_flags ? " " : "",
           art->compile_flags ? art->compile_flags : "");
    if (art->config_json) printf("config: %s\n", art->config_json);
    printf("parameters: %lld\n", (long long)c.params);
    printf("trainable: %lld\n", (long long)c.trainable);
    printf("state: %d weights (%d trainable), %d buffers (%lld elements), %d optimizer "
           "tensors (%lld elements), %d derived (%lld elements), %d hyperparameters, %lld "
           "bytes\n", c.n_weights, c.n_trainable, c.n_buffers, (long long)c.buffer_elems,
           c.n_optim, (long long)c.optim_elems, c.n_derived, (long long)c.derived_elems,
           c.n_hparams, (long long)c.state_bytes);
    /* The values a recompile with another -D would change without touching a kernel. */
    for (int i = 0; i < art->n_state; i++)
        if (art->state[i].kind == CAP_STATE_HPARAM)
            printf("hyperparameter %s: %s\n", art->state[i].t.name,
                   art->state[i].init ? art->state[i].init : "");
    printf("vocab: %lld (pad %d, start %d, end %d, unk %d)\n", (long long)art->vocab_size,
           (int)art->pad_id, (int)art->start_id, (int)art->end_id, (int)art->unk_id);
    printf("entry points: %d\n", (int)art->n_entries);
    for (int i = 0; i < art->n_entries; i++) print_entry(art, &art->entries[i]);
    printf("kernels: %d\n", (int)art->n_kernels);
    printf("arena bytes: %lld\n", (long long)c.max_arena_bytes);
    char why[512];
    int has_cpu = art->n_kernels == 0 || art->kernels[0].cpu != NULL;
    printf("backends: cpu: %s; ", has_cpu ? "available" : "not built into this cap.so");
    if (art->n_cuda_images == 0) printf("cuda: no CUDA images in this cap.so\n");
    else {
        cap_backend_probe(CAP_BACKEND_CUDA, why, sizeof why);
        printf("cuda: %s\n", why);
    }
    /* per arch: its modules' images together */
    for (int i = 0; i < art->n_cuda_images; i++) {
        if (art->cuda_images[i].module != 0) continue;
        size_t bytes = 0;
        for (int j = 0; j < art->n_cuda_images; j++)
            if (strcmp(art->cuda_images[j].arch, art->cuda_images[i].arch) == 0)
                bytes += art->cuda_images[j].size;
        printf("  cuda %s: %d modules, %zu bytes\n", art->cuda_images[i].arch,
               (int)art->n_cuda_modules, bytes);
    }
    cap_model_close(m);
    return 0;
}

/* ---- cap init ---------------------------------------------------------------------------- */

/* "encoder (40), decoder (45)": names counted by their first component, in first-seen order;
 * at most `show` groups, then "...". */
static void print_groups(char *const *names, int n, int show) {
    int printed = 0;
    for (int i = 0; i < n && printed < show; i++) {
        size_t len = strcspn(names[i], ".");
        int seen = 0, count = 0;
        for (int j = 0; j < i && !seen; j++) seen = strncmp(names[j], names[i], len) == 0 && strcspn(names[j], ".") == len;
        if (seen) continue;
        for (int j = i; j < n; j++) count += strncmp(names[j], names[i], len) == 0 && strcspn(names[j], ".") == len;
        printf("%s%.*s%s (%d)", printed ? ", " : "", (int)len, names[i], names[i][len] ? ".*" : "", count);
        printed++;
    }
    printf("%s\n", printed == show ? ", ..." : "");
}

/* CAP_E_MISMATCH with a formatted message (the CLI's own refusals). */
__attribute__((format(printf, 3, 4))) static CapStatus cap_fail_msg(char *err, size_t size,
                                                                    const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
    return CAP_E_MISMATCH;
}

static void print_import(const char *from, const char *prefix, const CapImportReport *r) {
    printf("loaded %d tensors from %s into %s*\n", r->n_loaded, from, prefix);
    if (r->n_random) {
        printf("%d weights and buffers stayed as initialized: ", r->n_random);
        print_groups(r->random, r->n_random, 8);
    }
    if (r->n_unused) {
        /* BatchNorm step counters are never used (PyTorch's own momentum ignores them): count
         * them, and name what else went unused, which is what the user wants to see */
        int counters = 0, shown = 0;
        printf("%d tensors of %s unused:", r->n_unused, from);
        for (int i = 0; i < r->n_unused; i++) {
            size_t n = strlen(r->unused[i]);
            if (n >= 19 && strcmp(r->unused[i] + n - 19, "num_batches_tracked") == 0) counters++;
            else if (shown++ < 8) printf("%s %s", shown > 1 ? "," : "", r->unused[i]);
        }
        if (shown > 8) printf(", ... (%d more)", shown - 8);
        if (counters) printf("%s %d num_batches_tracked", shown ? " and" : "", counters);
        printf("\n");
    }
}

/* Initializers, then --from's tensors, then the weights written to -o; returns 0 or 1. */
static int init_weights(const Args *a, CapSession *s, uint32_t seed) {
    char err[ERR_SIZE];
    CapStatus st = cap_session_init(s, seed, err, sizeof err);
    if (!st && a->from) {
        CapImportReport r;
        st = cap_import_weights(s, a->from, a->prefix, &r, err, sizeof err);
        if (!st) print_import(a->from, a->prefix ? a->prefix : "", &r);
        if (!st && r.n_loaded == 0)
            st = cap_fail_msg(err, sizeof err, "%s: none of its tensors is a weight of this model "
                              "under the prefix '%s' (its first is '%s'; is --prefix right?)",
                              a->from, a->prefix ? a->prefix : "", r.n_unused ? r.unused[0] : "");
        cap_import_report_free(&r);
    }
    if (!st) st = cap_save_weights(s, a->out, err, sizeof err);
    return fail_if(st, err);
}

static int cmd_init(const OptResult *r) {
    Args args, *a = &args;
    args_from(r, a);
    uint32_t seed = 0;
    CapModel *m = NULL;
    CapSession *s = NULL;
    int rc = seed_option(a, &seed);
    if (!rc) rc = check_output(a->out, "-o", (const char *[]){a->model, a->from}, 2);
    if (!rc) rc = open_model(a->r, a->model, &m);
    if (!rc) rc = cap_cli_open_session(a->r, m, &s);
    if (!rc) rc = init_weights(a, s, seed);
    if (!rc) {
        CapCounts c;
        cap_model_counts(m, &c);
        printf("wrote %s: %d tensors, %lld parameters (seed %u)\n", a->out,
               c.n_weights + c.n_buffers, (long long)c.params, seed);
    }
    cap_session_free(s);
    cap_model_close(m);
    return rc;
}

/* ---- cap loss ---------------------------------------------------------------------------- */

/* The gradient entry for a mode: outputs "loss" and "grad.<param>". NULL if absent. */
static const char *grads_entry(const CapModel *m, const char *mode) {
    static const char *names[2][2] = {{"eval_grads", NULL}, {"train_grads", "grads"}};
    int t = strcmp(mode, "train") == 0;
    for (int i = 0; i < 2; i++)
        if (names[t][i] && cap_model_find_entry(m, names[t][i]) >= 0) return names[t][i];
    return NULL;
}

/* Runs the gradient entry, prints the loss and writes the gradients to path; returns 0 or 1. */
static int write_grads(const CapModel *m, const char *entry, CapSession *s, CapBatch *b,
                       uint32_t seed, const char *path) {
    const CapArtifact *art = cap_model_artifact(m);
    const CapEntry *e = &art->entries[cap_model_find_entry(m, entry)];
    void **outs = calloc((size_t)e->n_outputs + 1, sizeof *outs);
    StWriteTensor *ts = calloc((size_t)e->n_outputs + 1, sizeof *ts);
    char err[ERR_SIZE] = "out of memory";
    CapStatus st = outs && ts ? CAP_OK : CAP_E_NOMEM;
    int n = 0, li = -1;
    for (int i = 0; !st && i < e->n_outputs; i++) {
        if (e->output_state && e->output_state[i] >= 0) continue;
        outs[i] = malloc(cap_tensor_bytes(&e->outputs[i]) + 1);
        if (!outs[i]) st = CAP_E_NOMEM;
        if (strcmp(e->outputs[i].name, "loss") == 0) li = i;
        if (strncmp(e->outputs[i].name, "grad.", 5) == 0)
            ts[n++] = (StWriteTensor){e->outputs[i].name + 5, ST_F32, e->outputs[i].rank,
                                      e->outputs[i].dims, outs[i]};
    }
    if (!st) st = cap_session_run_batch(s, entry, b, seed, 0, outs, err, sizeof err);
    if (!st && li >= 0) printf("loss: %.9g\n", (double)*(float *)outs[li]);
    const char *keys[] = {"format", "entry"};
    const char *values[] = {"capc-grads", entry};
    if (!st && st_write_file(path, ts, n, keys, values, 2, err, sizeof err)) st = CAP_E_IO;
    if (!st) fprintf(stderr, "cap: wrote %d gradients to %s\n", n, path);
    for (int i = 0; outs && i < e->n_outputs; i++) free(outs[i]);
    free(outs);
    free(ts);
    return fail_if(st, err);
}

/* The entry point `cap loss` runs for mode (*gentry: the gradient entry with --grads).
 * Returns 0, or 1 after saying that cap.so lacks it. */
static int loss_entries(const Args *a, const CapModel *m, const char *mode, const char **entry,
                        const char **gentry) {
    char err[ERR_SIZE];
    *entry = strcmp(mode, "eval") == 0 ? "eval_loss"
             : cap_model_find_entry(m, "train_loss") >= 0 ? "train_loss"
                                                           : "train_step";
    *gentry = a->grads ? grads_entry(m, mode) : NULL;
    if (a->grads && !*gentry)
        return fail_if(CAP_E_UNSUPPORTED,
                       strcmp(mode, "eval") == 0
                           ? "--grads: this cap.so has no gradient entry point ('eval_grads' "
                             "with outputs 'loss' and 'grad.<param>'); compile a model with a "
                             "\"train\" section"
                           : "--grads: this cap.so has no gradient entry point ('train_grads' "
                             "with outputs 'loss' and 'grad.<param>'); compile a model with a "
                             "\"train\" section");
    if (*gentry) *entry = *gentry;
    if (cap_model_find_entry(m, *entry) >= 0) return 0;
    snprintf(err, sizeof err, "%s has no entry point '%s'%s", a->model, *entry,
             strcmp(mode, "train") == 0 ? " (nor 'train_loss'): it was compiled without a "
                                          "train section" : "");
    return fail_if(CAP_E_UNSUPPORTED, err);
}

/* Loads the weights and the batch, then prints the loss (or writes the gradients). */
static int run_loss(const Args *a, const CapModel *m, CapSession *s, const char *entry,
                    const char *gentry, uint32_t seed) {
    char err[ERR_SIZE];
    CapBatch *b = NULL;
    double loss = 0;
    int rc = fail_if(cap_load_weights(s, a->weights, err, sizeof err), err);
    if (!rc) rc = fail_if(cap_batch_open(m, entry, a->batch, &b, err, sizeof err), err);
    if (!rc && gentry) rc = write_grads(m, gentry, s, b, seed, a->grads);
    else if (!rc) rc = fail_if(cap_session_loss(s, entry, b, seed, 0, &loss, err, sizeof err), err);
    if (!rc && !gentry) printf("loss: %.9g\n", loss);
    cap_batch_free(b);
    return rc;
}

static int cmd_loss(const OptResult *r) {
    Args args, *a = &args;
    args_from(r, a);
    char err[ERR_SIZE];
    uint32_t seed = 0;
    int train = opt_choice(a->r, "--mode", "eval|train", 0, err, sizeof err);
    int rc = train < 0 ? usage_error(a, "%s", err) : seed_option(a, &seed);
    const char *mode = train > 0 ? "train" : "eval", *entry = NULL, *gentry = NULL;
    const char *inputs[] = {a->model, a->weights, a->batch};
    if (!rc) rc = check_output(a->grads, "--grads", inputs, 3);
    CapModel *m = NULL;
    CapSession *s = NULL;
    if (!rc) rc = open_model(a->r, a->model, &m);
    if (!rc) rc = loss_entries(a, m, mode, &entry, &gentry);
    if (!rc) rc = cap_cli_open_session(a->r, m, &s);
    if (!rc) rc = run_loss(a, m, s, entry, gentry, seed);
    cap_session_free(s);
    cap_model_close(m);
    return rc;
}

/* ---- cap train --------------------------------------------------------------------------- */

typedef struct PathList {
    char **items;
    int n;
} PathList;

static void paths_free(PathList *p) {
    for (int i = 0; i < p->n; i++) free(p->items[i]);
    free(p->items);
}

/* Appends "PREFIX" + the first len bytes of s (prefix may be ""); -1 when out of memory. */
static int paths_add(PathList *p, const char *prefix, const char *s, size_t len) {
    char **items = realloc(p->items, (size_t)(p->n + 1) * sizeof *p->items);
    if (!items) return -1;
    p->items = items;
    size_t np = strlen(prefix);
    char *item = malloc(np + len + 1);
    if (!item) return -1;
    memcpy(item, prefix, np);
    memcpy(item + np, s, len);
    item[np + len] = 0;
    p->items[p->n++] = item;
    return 0;
}

static int cmp_str(const void *x, const void *y) {
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* DIR's *.safetensors, sorted by name (a stable order); returns 0 or 1. */
static int list_batch_dir(const char *dir, PathList *p) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "cap: error: %s: cannot open directory: %s\n", dir, strerror(errno));
        return 1;
    }
    size_t nd = strlen(dir);
    char *prefix = malloc(nd + 2);
    int rc = prefix ? 0 : -1;
    if (prefix) snprintf(prefix, nd + 2, "%s/", dir);
    for (struct dirent *de; !rc && (de = readdir(d));) {
        size_t n = strlen(de->d_name);
        if (n > 12 && strcmp(de->d_name + n - 12, ".safetensors") == 0)
            rc = paths_add(p, prefix, de->d_name, n);
    }
    closedir(d);
    free(prefix);
    if (rc) return fail_if(CAP_E_NOMEM, "out of memory");
    qsort(p->items, (size_t)p->n, sizeof *p->items, cmp_str);
    if (p->n == 0) {
        fprintf(stderr, "cap: error: %s: no .safetensors batch files\n", dir);
        return 1;
    }
    return 0;
}

/* --batches B1,B2,... or --batch-dir DIR; returns 0 or 1. */
static int collect_batches(const Args *a, PathList *p) {
    if (!a->batches) return list_batch_dir(a->batch_dir, p);
    for (const char *s = a->batches; *s;) {
        size_t n = strcspn(s, ",");
        if (n && paths_add(p, "", s, n)) return fail_if(CAP_E_NOMEM, "out of memory");
        s += n + (s[n] == ',');
    }
    return 0;
}

/* The state to start from: --resume's, else the initializers and --weights. Returns 0 or 1. */
static int prepare_state(const Args *a, CapSession *s, CapTrainMeta *meta, uint32_t seed) {
    char err[ERR_SIZE];
    memset(meta, 0, sizeof *meta);
    if (!a->resume) {
        int rc = fail_if(cap_session_init(s, seed, err, sizeof err), err); /* optimizer state */
        if (!rc && a->weights) rc = fail_if(cap_load_weights(s, a->weights, err, sizeof err), err);
        return rc;
    }
    if (fail_if(cap_load_checkpoint(s, a->resume, meta, err, sizeof err), err)) return 1;
    if (opt_has(a->r, "--seed") && meta->seed != seed) {
        fprintf(stderr, "cap: error: %s was trained with --seed %u, not %u\n", a->resume,
                meta->seed, seed);
        return 1;
    }
    fprintf(stderr, "cap: resuming %s at step %lld\n", a->resume, (long long)meta->step);
    char changes[1024];
    if (cap_checkpoint_config_changes(cap_session_model(s), a->resume, changes, sizeof changes))
        fprintf(stderr, "cap: note: %s was trained with another config (checkpoint -> this "
                "cap.so): %s\n", a->resume, changes);
    return 0;
}

/* cap train's option values into o (steps, or *epochs to multiply by the batches); returns
 * 0 or 2 after the message. --time-limit DURATION (--time is the same option). */
static int train_options(const Args *a, CapTrainOptions *o, int64_t *epochs) {
    const char *limit = opt_str(a->r, "--time-limit"), *nonfinite = opt_str(a->r, "--on-nonfinite");
    *o = (CapTrainOptions){.out_path = a->out, .log_path = a->log, .progress = stdout};
    *epochs = 0;
    int rc = opt_has(a->r, "--steps") ? int_option(a, "--steps", 0, 1, INT64_MAX, &o->steps)
                                      : int_option(a, "--epochs", 0, 1, INT32_MAX, epochs);
    if (!rc) rc = seed_option(a, &o->seed);
    if (!rc) rc = int_option(a, "--save-every", 0, 0, INT64_MAX, &o->save_every);
    if (!rc) rc = int_option(a, "--print-every", 10, 0, INT64_MAX, &o->print_every);
    if (!rc && limit && cap_parse_duration(limit, &o->max_seconds) != 0)
        rc = usage_error(a, "--time-limit takes a duration such as 90, 90s, 5m or 2h, not '%s'",
                         limit);
    if (!rc && cap_nonfinite_parse(nonfinite, &o->on_nonfinite) != 0)
        rc = usage_error(a, "--on-nonfinite must be stop or skip, not '%s'", nonfinite);
    return rc;
}

static int train_batches(const Args *a, CapSession *s, CapTrainOptions *o, const PathList *b,
                         int64_t epochs) {
    CapTrainMeta meta;
    char err[ERR_SIZE];
    o->batch_paths = (const char *const *)b->items;
    o->n_batches = b->n;
    if (epochs) o->steps = epochs * b->n;
    if (prepare_state(a, s, &meta, o->seed)) return 1;
    if (fail_if(cap_train(s, o, &meta, err, sizeof err), err)) return 1;
    printf("saved %s (step %lld", a->out, (long long)meta.step);
    if (meta.skipped) printf(", %lld non-finite steps skipped", (long long)meta.skipped);
    printf(")\n");
    return 0;
}

static int cmd_train(const OptResult *r) {
    Args args, *a = &args;
    args_from(r, a);
    CapTrainOptions o;
    int64_t epochs;
    PathList batches = {0};
    CapModel *m = NULL;
    CapSession *s = NULL;
    int rc = train_options(a, &o, &epochs);
    /* --out may be the --resume checkpoint: continuing a run in place is the common case, and
     * the save is atomic (the old checkpoint stays whole until the new one is complete) */
    if (!rc) rc = check_output(a->out, "--out", (const char *[]){a->model, a->weights}, 2);
    const char *log_inputs[] = {a->model, a->weights, a->resume};
    if (!rc) rc = check_output(a->log, "--log", log_inputs, 3);
    if (!rc) rc = collect_batches(a, &batches);
    if (!rc) rc = open_model(a->r, a->model, &m);
    if (!rc) rc = cap_cli_open_session(a->r, m, &s);
    if (!rc) rc = train_batches(a, s, &o, &batches, epochs);
    paths_free(&batches);
    cap_session_free(s);
    cap_model_close(m);
    return rc;
}

/* ---- the commands ------------------------------------------------------------------------ */

#define SEED_OPTION(what) {"--seed", 0, OPT_VALUE, 0, "S", what " (0..4294967295, default 0)", NULL}

static const OptCommand INFO = {
    .prog = "cap info",
    .synopsis = "cap.so",
    .summary = "what the model holds: parameters, entry points, kernels, arena, backends",
    .tables = {CAP_SESSION_OPTIONS},
    .min_pos = 1, .max_pos = 1, .pos_missing = "cap info needs a cap.so",
};

static int info_main(int argc, char **argv) { return opt_run(&INFO, argc, argv, cmd_info); }

static const OptSpec INIT_OPTIONS[] = {
    {"--out", 'o', OPT_VALUE, OPT_REQUIRED, "W.safetensors", "the weights file to write", NULL},
    SEED_OPTION("the initializers' seed"),
    {"--from", 0, OPT_VALUE, 0, "PRETRAINED.safetensors",
     "fill the tensors it has (named --prefix + its names), report what stayed random", NULL},
    {"--prefix", 0, OPT_VALUE, 0, "P",
     "the model's name for --from's tensors: P + their names (e.g. backbone. for a "
     "torchvision ResNet)", NULL},
    OPT_END,
};

static const OptRule INIT_RULES[] = {
    {OPT_GOES_WITH, {"--prefix", "--from"}},
    {OPT_RULE_END, {NULL}},
};

static const OptCommand INIT = {
    .prog = "cap init",
    .synopsis = "cap.so -o W.safetensors [--seed N] [--from PRETRAINED.safetensors [--prefix P]]",
    .summary = "initial weights (PyTorch's default initializers), or a pretrained backbone's",
    .tables = {INIT_OPTIONS, CAP_SESSION_OPTIONS},
    .rules = INIT_RULES,
    .min_pos = 1, .max_pos = 1, .pos_missing = "cap init needs a cap.so",
};

static int init_main(int argc, char **argv) { return opt_run(&INIT, argc, argv, cmd_init); }

static const OptSpec LOSS_OPTIONS[] = {
    {"--weights", 0, OPT_VALUE, OPT_REQUIRED, "W.safetensors", "weights or a checkpoint", NULL},
    {"--batch", 0, OPT_VALUE, OPT_REQUIRED, "B.safetensors", "the batch's data inputs", NULL},
    {"--mode", 0, OPT_VALUE, 0, "eval|train",
     "eval_loss (default) or the training program's loss", NULL},
    {"--grads", 0, OPT_VALUE, 0, "G.safetensors",
     "also write the gradients, named as the parameters", NULL},
    SEED_OPTION("the dropout seed"),
    OPT_END,
};

static const OptCommand LOSS = {
    .prog = "cap loss",
    .synopsis = "cap.so --weights W.safetensors --batch B.safetensors [--mode eval|train] "
                "[--grads G.safetensors] [--seed N]",
    .summary = "print `loss: <value>` of one batch; --grads writes the gradients",
    .tables = {LOSS_OPTIONS, CAP_SESSION_OPTIONS},
    .min_pos = 1, .max_pos = 1, .pos_missing = "cap loss needs a cap.so",
};

static int loss_main(int argc, char **argv) { return opt_run(&LOSS, argc, argv, cmd_loss); }

static const OptSpec TRAIN_OPTIONS[] = {
    {"--data", 0, OPT_VALUE, 0, "SPEC",
     "train on a dataset's train split (docs/data.md): FORMAT:PATH[,IMAGE_DIR][,split=RULE]",
     NULL},
    {"--batches", 0, OPT_VALUE, 0, "B1[,B2...]", "train on these batch files, in turn", NULL},
    {"--batch-dir", 0, OPT_VALUE, 0, "DIR", "train on DIR's *.safetensors, in name order", NULL},
    {"--steps", 0, OPT_VALUE, 0, "N",
     "stop after update N, counted from step 0 (a resumed run stops at the same total)", NULL},
    {"--epochs", 0, OPT_VALUE, 0, "N", "train N passes over the batches or the train split",
     NULL},
    {"--out", 0, OPT_VALUE, OPT_REQUIRED, "CKPT",
     "the checkpoint to write (may be the --resume one: saves are atomic)", NULL},
    {"--weights", 0, OPT_VALUE, 0, "W", "start from these weights (default: the initializers)",
     NULL},
    {"--resume", 0, OPT_VALUE, 0, "CKPT", "continue from this checkpoint", NULL},
    {"--log", 0, OPT_VALUE, 0, "metrics.jsonl",
     "append one JSON line per step (step, loss, lr, grad_norm, ...)", NULL},
    SEED_OPTION("the run's seed: initializers, dropout, shuffling"),
    {"--save-every", 0, OPT_VALUE, 0, "N", "also save every N steps (default 0: at the end)",
     NULL},
    {"--print-every", 0, OPT_VALUE, 0, "N", "a progress line every N steps (default 10; 0: none)",
     NULL},
    {"--time-limit", 0, OPT_VALUE, 0, "DURATION",
     "also stop, with a checkpoint, at the first step after DURATION (90, 90s, 5m, 2h)",
     "--time"},
    {"--on-nonfinite", 0, OPT_VALUE, 0, "stop|skip",
     "a batch whose loss or gradient is NaN/inf updates nothing and stops the run (default) "
     "or is skipped", NULL},
    {"--vocab", 0, OPT_VALUE, 0, "VOCAB.txt",
     "with --data: the vocabulary (a resume takes the checkpoint's)", NULL},
    {"--workers", 0, OPT_VALUE, 0, "K", "with --data: decoding threads, 0..64 (default 2)", NULL},
    {"--no-feature-cache", 0, OPT_FLAG, 0, NULL,
     "with --data: run the backbone every step even when cap.so could cache its features",
     NULL},
    {"--eval-every", 0, OPT_VALUE, 0, "N",
     "with --data: every N steps log val loss, BLEU-4 and CIDEr-D", NULL},
    {"--eval-images", 0, OPT_VALUE, 0, "M",
     "with --eval-every: caption the val split's first M images (default 100)", NULL},
    OPT_END,
};

static const OptRule TRAIN_RULES[] = {
    {OPT_ONE_OF, {"--data", "--batches", "--batch-dir"}},
    {OPT_ONE_OF, {"--steps", "--epochs"}},
    {OPT_EXCLUDE, {"--weights", "--resume"}},
    {OPT_GOES_WITH, {"--vocab", "--data"}},
    {OPT_GOES_WITH, {"--workers", "--data"}},
    {OPT_GOES_WITH, {"--no-feature-cache", "--data"}},
    {OPT_GOES_WITH, {"--eval-every", "--data"}},
    {OPT_GOES_WITH, {"--eval-images", "--eval-every"}},
    {OPT_RULE_END, {NULL}},
};

static const OptCommand TRAIN = {
    .prog = "cap train",
    .synopsis = "cap.so (--data SPEC --vocab VOCAB.txt | --batches B1[,B2...] | --batch-dir DIR) "
                "(--steps N | --epochs N) --out CKPT [--weights W | --resume CKPT] "
                "[--log metrics.jsonl] [options]",
    .summary = "train: runs train_step on batch files or a dataset, writes a checkpoint",
    .about = "Runs train_step on batch files (--batches, --batch-dir) or on a dataset's train "
             "split (--data, docs/data.md; the data position and vocabulary go in the "
             "checkpoint), printing progress.",
    .tables = {TRAIN_OPTIONS, CAP_SESSION_OPTIONS},
    .rules = TRAIN_RULES,
    .min_pos = 1, .max_pos = 1, .pos_missing = "cap train needs a cap.so",
    .footer = CAP_DIST_HELP,
};

/* `cap train --data`, data parallel when mpirun started it (distributed.h). */
static int train_data(int argc, char **argv, const OptResult *r) {
    CapComm comm;
    char err[ERR_SIZE];
    int dist = cap_dist_init(&argc, &argv, &comm, err, sizeof err);
    if (dist < 0) {
        fprintf(stderr, "cap: error: %s\n", err);
        return 1;
    }
    int rc = cap_cmd_train_data(r, dist ? &comm : NULL);
    cap_dist_finish(rc);
    return rc;
}

static int train_main(int argc, char **argv) {
    OptResult r;
    char err[512];
    int rc = opt_parse(&TRAIN, argc, argv, &r, err, sizeof err);
    if (rc == OPT_HELP) opt_help(stdout, &TRAIN);
    if (rc == OPT_ERROR) rc = opt_fail(&TRAIN, "%s", err);
    else if (rc == OPT_OK) rc = opt_has(&r, "--data") ? train_data(argc, argv, &r) : cmd_train(&r);
    else rc = 0;
    opt_free(&r);
    return rc;
}

static const OptCommand CAP;

static void print_prog(const OptCommand *cmd, void *ctx) {
    (void)ctx;
    printf("%s\n", cmd->prog);
}

static const OptSpec HELP_OPTIONS[] = {
    {"--list-commands", 0, OPT_FLAG, 0, NULL, "print every command and subcommand, one a line",
     NULL},
    OPT_END,
};

static const OptCommand HELP = {
    .prog = "cap help",
    .synopsis = "[COMMAND [SUBCOMMAND]] | --list-commands",
    .summary = "the help of cap or of a command",
    .tables = {HELP_OPTIONS, CAP_VERBOSE_OPTIONS},
    .max_pos = 2,
};

/* `cap help [COMMAND...]`: that command's --help; --list-commands: every command's name
 * (tests/runtime walks them). */
static int help_run(const OptResult *r) {
    if (opt_has(r, "--list-commands")) {
        opt_walk(&CAP, print_prog, NULL);
        return 0;
    }
    const OptCommand *cmd = &CAP;
    char err[512];
    for (int i = 0; i < r->n_pos; i++) {
        if (cmd->subs == NULL)
            return opt_fail(&HELP, "%s has no subcommands ('%s')", cmd->prog, r->pos[i]);
        const OptSub *sub = opt_find_sub(cmd, r->pos[i], err, sizeof err);
        if (sub == NULL) return opt_fail(&HELP, "%s", err);
        cmd = sub->cmd;
    }
    opt_help(stdout, cmd);
    return 0;
}

static int help_main(int argc, char **argv) { return opt_run(&HELP, argc, argv, help_run); }

static const OptSub COMMANDS[] = {
    {"info", &INFO, info_main, 0},
    {"init", &INIT, init_main, 0},
    {"loss", &LOSS, loss_main, 0},
    {"train", &TRAIN, train_main, 0},
    {"sample", &CAP_SAMPLE_COMMAND, cap_cmd_sample, 0},
    {"eval", &CAP_EVAL_COMMAND, cap_cmd_eval, 0},
    {"attend", &CAP_ATTEND_COMMAND, cap_cmd_attend, 0},
    {"score", &CAP_SCORE_COMMAND, cap_cmd_score, 0},
    {"plot", &CAP_PLOT_COMMAND, cap_cmd_plot, 0},
    {"data", &CAP_DATA_COMMAND, cap_cmd_data, 0},
    {"vocab", &CAP_VOCAB_COMMAND, cap_cmd_vocab, 0},
    {"help", &HELP, help_main, OPT_HIDDEN},
    {NULL, NULL, NULL, 0},
};

static const OptSpec CAP_OPTIONS[] = {
    {"--version", 0, OPT_FLAG, OPT_EARLY, NULL, "print the runtime's version and exit", NULL},
    OPT_END,
};

static const OptCommand CAP = {
    .prog = "cap",
    .synopsis = "COMMAND [cap.so] [options]",
    .about = "Runs what capc compiled (libcaprt). `cap COMMAND --help` describes a command and "
             "all its options.",
    .tables = {CAP_OPTIONS, CAP_SESSION_OPTIONS},
    .table_titles = {"options", "options for every command that runs a cap.so"},
    .subs = COMMANDS,
    .footer = "exit status: 0 success, 1 error, 2 bad command line. docs/cli.md has the "
              "details.",
};

int main(int argc, char **argv) {
    OptResult r;
    int status;
    if (opt_dispatch(&CAP, argc, argv, &r, &status)) return status;
    if (r.early != NULL)
        printf("cap %s (artifact version %d)\n", CAPC_VERSION, CAP_ARTIFACT_VERSION);
    else status = opt_fail(&CAP, "no command");
    opt_free(&r);
    return status;
}
