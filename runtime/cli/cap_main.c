/* cap_main.c — the `cap` command line over libcaprt (cap.h): info, init, loss, train.
 * docs/cli.md ("cap") describes it; `cap --help` prints the same usage. This is the only
 * layer that prints to stderr or exits: exit 0 on success, 1 on an error (the library's
 * message, prefixed "cap: error: "), 2 on a bad command line.
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
#include "cli_data.h" /* cap_cmd_data, cap_cmd_vocab */
#include "cli_caption.h" /* cap train --data, cap sample, cap eval */
#include "cli_score.h"
#include "metrics.h"
#include "cli_plot.h" /* cap_cmd_plot */
#include "distributed.h" /* mpirun -np N cap train --data */
#include "safetensors.h"

#define ERR_SIZE 2048

static const char USAGE[] =
    "usage: cap COMMAND cap.so [options]\n"
    "\n"
    "commands:\n"
    "  info  cap.so                      what the model holds: parameters, entry points,\n"
    "                                    kernels, arena, backends\n"
    "  init  cap.so -o W.safetensors [--seed N] [--from PRETRAINED.safetensors [--prefix P]]\n"
    "                                    initial weights (PyTorch's default initializers);\n"
    "                                    --from fills the tensors it has (named P + its\n"
    "                                    names, e.g. --prefix backbone. for a torchvision\n"
    "                                    ResNet) and reports what stayed random\n"
    "  loss  cap.so --weights W.safetensors --batch B.safetensors [--mode eval|train]\n"
    "        [--grads G.safetensors] [--seed N]\n"
    "                                    prints `loss: <value>`; --grads writes the\n"
    "                                    gradients named as the parameters\n"
    "  train cap.so (--batches B1[,B2...] | --batch-dir DIR) (--steps N | --epochs N)\n"
    "        --out CKPT [--weights W | --resume CKPT] [--log metrics.jsonl] [--seed S]\n"
    "        [--save-every N] [--print-every N] [--time-limit 5m] [--on-nonfinite stop|skip]\n"
    "                                    runs train_step; --steps counts from step 0, so a\n"
    "                                    resumed run stops at the same total; --time-limit\n"
    "                                    (s, m, h) also stops at the first step after it, with\n"
    "                                    a checkpoint; a batch whose loss\n"
    "                                    or gradient is NaN/inf updates nothing and stops\n"
    "                                    the run (default) or is skipped\n"
    "  train cap.so --data SPEC --vocab VOCAB.txt (--steps N | --epochs N) --out CKPT\n"
    "        [--weights W | --resume CKPT] [--log L] [--seed S] [--workers K] [--time-limit 5m]\n"
    "        [--no-feature-cache] [--on-nonfinite stop|skip] [--eval-every N [--eval-images M]]\n"
    "                                    trains on a dataset's train split (docs/data.md);\n"
    "                                    the data position and vocabulary go in CKPT;\n"
    "                                    --eval-every logs val loss, BLEU-4 and CIDEr-D\n"
    "  sample cap.so --weights CKPT --image FILE... [--greedy | --temperature T]\n"
    "        [--top-k K] [--top-p P] [--beam N] [--max-len L] [--seed S] [--vocab V]\n"
    "                                    prints `FILE: caption` per image\n"
    "  eval  cap.so --weights CKPT --data SPEC [--split test] [--beam N]\n"
    "        [--results results.json]    captions a split, prints BLEU-1..4 and CIDEr-D\n"
    "  score RESULTS.json --refs CAPTIONS.json [--tokenizer ptb|none]\n"
    "                                    BLEU-1..4 and CIDEr-D of a COCO results file\n"
    "                                    (no cap.so; docs/metrics.md)\n"
    "  plot  metrics.jsonl -o curves.svg  the curves of a --log file (loss, lr, grad_norm,\n"
    "                                    validation scores), one panel each, as SVG\n"
    "\n"
    "options for every command:\n"
    "  --backend auto|cpu|cuda           where to run (default auto: cuda if a GPU is usable)\n"
    "  --threads N                       CPU threads (default: OMP_NUM_THREADS, else every\n"
    "                                    CPU this process may use)\n"
    "  -v, --verbose                     also say why auto chose the cpu\n"
    "  -h, --help                        this text\n"
    "  --version                         the runtime's version\n"
    "\n"
    "exit status: 0 success, 1 error, 2 bad command line. docs/cli.md has the details.\n";

/* ---- command line ------------------------------------------------------------------------ */

typedef struct Args {
    const char *cmd, *model;
    const char *out, *weights, *batch, *batches, *batch_dir, *grads, *resume, *log, *mode;
    const char *backend, *threads;
    const char *seed, *steps, *epochs, *save_every, *print_every, *time, *on_nonfinite;
    const char *from, *prefix;
} Args;

static void usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "cap: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see cap --help)\n");
    exit(2);
}

static const char **option_slot(Args *a, const char *name) {
    static const struct {
        const char *name;
        size_t off;
    } table[] = {
        {"-o", offsetof(Args, out)},           {"--out", offsetof(Args, out)},
        {"--weights", offsetof(Args, weights)}, {"--batch", offsetof(Args, batch)},
        {"--batches", offsetof(Args, batches)}, {"--batch-dir", offsetof(Args, batch_dir)},
        {"--grads", offsetof(Args, grads)},     {"--resume", offsetof(Args, resume)},
        {"--log", offsetof(Args, log)},         {"--mode", offsetof(Args, mode)},
        {"--backend", offsetof(Args, backend)}, {"--seed", offsetof(Args, seed)},
        {"--threads", offsetof(Args, threads)}, {"--time", offsetof(Args, time)},
        {"--time-limit", offsetof(Args, time)},
        {"--steps", offsetof(Args, steps)},     {"--epochs", offsetof(Args, epochs)},
        {"--save-every", offsetof(Args, save_every)},
        {"--print-every", offsetof(Args, print_every)},
        {"--on-nonfinite", offsetof(Args, on_nonfinite)},
        {"--from", offsetof(Args, from)},       {"--prefix", offsetof(Args, prefix)},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0) return (const char **)((char *)a + table[i].off);
    return NULL;
}

static void parse_args(int argc, char **argv, Args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            fputs(USAGE, stdout);
            fputs(cap_dist_help(), stdout);
            exit(0);
        }
        if (strcmp(s, "--version") == 0) {
            printf("cap %s (artifact version %d)\n", CAPC_VERSION, CAP_ARTIFACT_VERSION);
            exit(0);
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (s[0] != '-' || s[1] == 0) {
            if (!a->cmd) a->cmd = s;
            else if (!a->model) a->model = s;
            else usage_error("unexpected argument '%s'", s);
            continue;
        }
        char name[64];
        const char *eq = strchr(s, '=');
        size_t n = eq ? (size_t)(eq - s) : strlen(s);
        if (n >= sizeof name) usage_error("unknown option '%s'", s);
        memcpy(name, s, n);
        name[n] = 0;
        const char **slot = option_slot(a, name);
        if (!slot) usage_error("unknown option '%s'", s);
        if (eq) *slot = eq + 1;
        else if (i + 1 < argc) *slot = argv[++i];
        else usage_error("option '%s' needs a value", s);
    }
    if (!a->cmd) usage_error("no command%s", "");
    if (!a->model) usage_error("'%s' needs a cap.so", a->cmd);
}

static int64_t int_option(const char *name, const char *v, int64_t dflt, int64_t min) {
    if (!v) return dflt;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < min) {
        fprintf(stderr, "cap: error: %s must be an integer >= %lld, not '%s' (see cap --help)\n",
                name, (long long)min, v);
        exit(2);
    }
    return (int64_t)x;
}

/* --seed: Philox keys are 32-bit, so a larger value would silently become another seed. */
static uint32_t seed_option(const char *v) {
    int64_t x = int_option("--seed", v, 0, 0);
    if (x > (int64_t)UINT32_MAX) {
        fprintf(stderr, "cap: error: --seed must be at most %lu, not '%s' (see cap --help)\n",
                (unsigned long)UINT32_MAX, v);
        exit(2);
    }
    return (uint32_t)x;
}

static void fail_if(CapStatus st, const char *err) {
    if (st == CAP_OK) return;
    fprintf(stderr, "cap: error: %s\n", err);
    exit(1);
}

/* An output of the command (`what` names its option): writable, and none of its inputs. */
static void check_output(const char *out, const char *what, const char *const *inputs, int n) {
    char err[ERR_SIZE];
    if (out && file_check_new_output(out, what, inputs, n, err, sizeof err))
        fail_if(CAP_E_ARG, err);
}

static void forbid(const char *cmd, const char *opt, const char *value) {
    if (value) usage_error("this option does not apply here: %s", opt), (void)cmd;
}

/* ---- shared steps ---------------------------------------------------------------------- */

static CapModel *open_model(const char *path) {
    char err[ERR_SIZE];
    CapModel *m = NULL;
    fail_if(cap_model_open(path, &m, err, sizeof err), err);
    return m;
}

static CapSession *open_session(const CapModel *m, const Args *a) {
    CapBackendKind kind = CAP_BACKEND_AUTO;
    if (a->backend && cap_backend_parse(a->backend, &kind))
        usage_error("unknown backend '%s' (auto, cpu or cuda)", a->backend);
    int64_t threads = int_option("--threads", a->threads, 0, 1);
    if (threads > 4096) usage_error("--threads must be at most 4096, not '%s'", a->threads);
    char err[ERR_SIZE];
    CapSession *s = NULL;
    fail_if(cap_session_new(m, kind, &s, err, sizeof err), err);
    cap_session_set_threads(s, (int)threads);
    cap_cli_backend_note(s);
    return s;
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

static int cmd_info(const Args *a) {
    CapModel *m = open_model(a->model);
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

static int cmd_init(const Args *a) {
    if (!a->out) usage_error("cap init needs -o WEIGHTS.safetensors%s", "");
    if (a->prefix && !a->from) usage_error("--prefix goes with --from%s", "");
    check_output(a->out, "-o", (const char *[]){a->model, a->from}, 2);
    uint32_t seed = seed_option(a->seed);
    CapModel *m = open_model(a->model);
    CapSession *s = open_session(m, a);
    char err[ERR_SIZE];
    fail_if(cap_session_init(s, seed, err, sizeof err), err);
    if (a->from) {
        CapImportReport r;
        CapStatus st = cap_import_weights(s, a->from, a->prefix, &r, err, sizeof err);
        if (!st) print_import(a->from, a->prefix ? a->prefix : "", &r);
        if (!st && r.n_loaded == 0)
            st = cap_fail_msg(err, sizeof err, "%s: none of its tensors is a weight of this model "
                              "under the prefix '%s' (its first is '%s'; is --prefix right?)",
                              a->from, a->prefix ? a->prefix : "", r.n_unused ? r.unused[0] : "");
        cap_import_report_free(&r);
        fail_if(st, err);
    }
    fail_if(cap_save_weights(s, a->out, err, sizeof err), err);
    CapCounts c;
    cap_model_counts(m, &c);
    printf("wrote %s: %d tensors, %lld parameters (seed %u)\n", a->out,
           c.n_weights + c.n_buffers, (long long)c.params, seed);
    cap_session_free(s);
    cap_model_close(m);
    return 0;
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

static void write_grads(const CapModel *m, const char *entry, CapSession *s, CapBatch *b,
                        uint32_t seed, const char *path) {
    const CapArtifact *art = cap_model_artifact(m);
    const CapEntry *e = &art->entries[cap_model_find_entry(m, entry)];
    void **outs = calloc((size_t)e->n_outputs + 1, sizeof *outs);
    StWriteTensor *ts = calloc((size_t)e->n_outputs + 1, sizeof *ts);
    int n = 0, li = -1;
    for (int i = 0; i < e->n_outputs; i++) {
        if (e->output_state && e->output_state[i] >= 0) continue;
        outs[i] = malloc(cap_tensor_bytes(&e->outputs[i]) + 1);
        if (strcmp(e->outputs[i].name, "loss") == 0) li = i;
        if (strncmp(e->outputs[i].name, "grad.", 5) == 0)
            ts[n++] = (StWriteTensor){e->outputs[i].name + 5, ST_F32, e->outputs[i].rank,
                                      e->outputs[i].dims, outs[i]};
    }
    char err[ERR_SIZE];
    fail_if(cap_session_run_batch(s, entry, b, seed, 0, outs, err, sizeof err), err);
    if (li >= 0) printf("loss: %.9g\n", (double)*(float *)outs[li]);
    const char *keys[] = {"format", "entry"};
    const char *values[] = {"capc-grads", entry};
    fail_if(st_write_file(path, ts, n, keys, values, 2, err, sizeof err) ? CAP_E_IO : CAP_OK, err);
    fprintf(stderr, "cap: wrote %d gradients to %s\n", n, path);
    for (int i = 0; i < e->n_outputs; i++) free(outs[i]);
    free(outs);
    free(ts);
}

static int cmd_loss(const Args *a) {
    if (!a->weights) usage_error("cap loss needs --weights W.safetensors%s", "");
    if (!a->batch) usage_error("cap loss needs --batch B.safetensors%s", "");
    const char *mode = a->mode ? a->mode : "eval";
    if (strcmp(mode, "eval") && strcmp(mode, "train"))
        usage_error("--mode is eval or train, not '%s'", mode);
    check_output(a->grads, "--grads", (const char *[]){a->model, a->weights, a->batch}, 3);
    uint32_t seed = seed_option(a->seed);
    CapModel *m = open_model(a->model);
    const char *entry = strcmp(mode, "eval") == 0 ? "eval_loss"
                        : cap_model_find_entry(m, "train_loss") >= 0 ? "train_loss"
                                                                      : "train_step";
    const char *gentry = a->grads ? grads_entry(m, mode) : NULL;
    char err[ERR_SIZE];
    if (a->grads && !gentry)
        fail_if(CAP_E_UNSUPPORTED,
                strcmp(mode, "eval") == 0
                    ? "--grads: this cap.so has no gradient entry point ('eval_grads' with "
                      "outputs 'loss' and 'grad.<param>'); compile a model with a \"train\" section"
                    : "--grads: this cap.so has no gradient entry point ('train_grads' with "
                      "outputs 'loss' and 'grad.<param>'); compile a model with a \"train\" "
                      "section");
    if (gentry) entry = gentry;
    if (cap_model_find_entry(m, entry) < 0) {
        snprintf(err, sizeof err, "%s has no entry point '%s'%s", a->model, entry,
                 strcmp(mode, "train") == 0 ? " (nor 'train_loss'): it was compiled without a "
                                              "train section" : "");
        fail_if(CAP_E_UNSUPPORTED, err);
    }
    CapSession *s = open_session(m, a);
    fail_if(cap_load_weights(s, a->weights, err, sizeof err), err);
    CapBatch *b = NULL;
    fail_if(cap_batch_open(m, entry, a->batch, &b, err, sizeof err), err);
    if (gentry) {
        write_grads(m, gentry, s, b, seed, a->grads);
    } else {
        double loss = 0;
        fail_if(cap_session_loss(s, entry, b, seed, 0, &loss, err, sizeof err), err);
        printf("loss: %.9g\n", loss);
    }
    cap_batch_free(b);
    cap_session_free(s);
    cap_model_close(m);
    return 0;
}

/* ---- cap train --------------------------------------------------------------------------- */

typedef struct PathList {
    char **items;
    int n;
} PathList;

static void out_of_memory(void) {
    fprintf(stderr, "cap: error: out of memory\n");
    exit(1);
}

/* Appends "PREFIX" + the first len bytes of s (prefix may be ""). */
static void paths_add(PathList *p, const char *prefix, const char *s, size_t len) {
    char **items = realloc(p->items, (size_t)(p->n + 1) * sizeof *p->items);
    if (!items) out_of_memory();
    p->items = items;
    size_t np = strlen(prefix);
    char *item = malloc(np + len + 1);
    if (!item) out_of_memory();
    memcpy(item, prefix, np);
    memcpy(item + np, s, len);
    item[np + len] = 0;
    p->items[p->n++] = item;
}

static int cmp_str(const void *x, const void *y) {
    return strcmp(*(char *const *)x, *(char *const *)y);
}

static void collect_batches(const Args *a, PathList *p) {
    if (!!a->batches == !!a->batch_dir)
        usage_error("cap train needs exactly one of --batches and --batch-dir%s", "");
    if (a->batches) {
        for (const char *s = a->batches; *s;) {
            size_t n = strcspn(s, ",");
            if (n) paths_add(p, "", s, n);
            s += n + (s[n] == ',');
        }
        return;
    }
    size_t nd = strlen(a->batch_dir);
    char *prefix = malloc(nd + 2);
    if (!prefix) out_of_memory();
    snprintf(prefix, nd + 2, "%s/", a->batch_dir);
    DIR *d = opendir(a->batch_dir);
    if (!d) {
        fprintf(stderr, "cap: error: %s: cannot open directory: %s\n", a->batch_dir, strerror(errno));
        exit(1);
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n <= 12 || strcmp(de->d_name + n - 12, ".safetensors")) continue;
        paths_add(p, prefix, de->d_name, n);
    }
    closedir(d);
    free(prefix);
    qsort(p->items, (size_t)p->n, sizeof *p->items, cmp_str); /* a stable order */
    if (p->n == 0) {
        fprintf(stderr, "cap: error: %s: no .safetensors batch files\n", a->batch_dir);
        exit(1);
    }
}

static void prepare_state(const Args *a, CapSession *s, CapTrainMeta *meta, uint32_t seed) {
    char err[ERR_SIZE];
    memset(meta, 0, sizeof *meta);
    if (a->resume) {
        if (a->weights) usage_error("--resume and --weights exclude each other%s", "");
        fail_if(cap_load_checkpoint(s, a->resume, meta, err, sizeof err), err);
        if (a->seed && meta->seed != seed) {
            fprintf(stderr, "cap: error: %s was trained with --seed %u, not %u\n", a->resume,
                    meta->seed, seed);
            exit(1);
        }
        fprintf(stderr, "cap: resuming %s at step %lld\n", a->resume, (long long)meta->step);
        char changes[1024];
        if (cap_checkpoint_config_changes(cap_session_model(s), a->resume, changes, sizeof changes))
            fprintf(stderr, "cap: note: %s was trained with another config (checkpoint -> this "
                    "cap.so): %s\n", a->resume, changes);
        return;
    }
    fail_if(cap_session_init(s, seed, err, sizeof err), err); /* optimizer state, unlisted */
    if (a->weights) fail_if(cap_load_weights(s, a->weights, err, sizeof err), err);
}

/* --time-limit DURATION (--time is the same option): 0 when absent. */
static double time_limit(const char *text) {
    double seconds = 0;
    if (text && cap_parse_duration(text, &seconds) != 0)
        usage_error("--time-limit takes a duration such as 90, 90s, 5m or 2h, not '%s'", text);
    return seconds;
}

static int cmd_train(const Args *a) {
    if (!a->out) usage_error("cap train needs --out CKPT%s", "");
    if (!!a->steps == !!a->epochs) usage_error("cap train needs exactly one of --steps and --epochs%s", "");
    forbid("train", "--grads", a->grads);
    /* --out may be the --resume checkpoint: continuing a run in place is the common case, and
     * the save is atomic (the old checkpoint stays whole until the new one is complete) */
    check_output(a->out, "--out", (const char *[]){a->model, a->weights}, 2);
    check_output(a->log, "--log", (const char *[]){a->model, a->weights, a->resume}, 3);
    PathList batches = {0};
    collect_batches(a, &batches);
    uint32_t seed = seed_option(a->seed);
    int64_t steps = a->steps ? int_option("--steps", a->steps, 0, 1)
                             : int_option("--epochs", a->epochs, 0, 1) * batches.n;
    CapModel *m = open_model(a->model);
    CapSession *s = open_session(m, a);
    CapTrainMeta meta;
    prepare_state(a, s, &meta, seed);
    CapTrainOptions o = {
        .batch_paths = (const char *const *)batches.items, .n_batches = batches.n,
        .steps = steps, .max_seconds = time_limit(a->time), .seed = seed,
        .out_path = a->out,
        .save_every = int_option("--save-every", a->save_every, 0, 0), .log_path = a->log,
        .print_every = int_option("--print-every", a->print_every, 10, 0), .progress = stdout,
    };
    if (cap_nonfinite_parse(a->on_nonfinite, &o.on_nonfinite) != 0)
        usage_error("--on-nonfinite must be stop or skip, not '%s'", a->on_nonfinite);
    char err[ERR_SIZE];
    fail_if(cap_train(s, &o, &meta, err, sizeof err), err);
    printf("saved %s (step %lld", a->out, (long long)meta.step);
    if (meta.skipped) printf(", %lld non-finite steps skipped", (long long)meta.skipped);
    printf(")\n");
    for (int i = 0; i < batches.n; i++) free(batches.items[i]);
    free(batches.items);
    cap_session_free(s);
    cap_model_close(m);
    return 0;
}

/* Removes -v / --verbose from argv (every subcommand accepts it); returns whether it was there. */
static int take_verbose(int *argc, char **argv) {
    int found = 0, n = 1;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0) found = 1;
        else argv[n++] = argv[i];
    }
    argv[n] = NULL;
    *argc = n;
    return found;
}

/* `cap train --data`, data parallel when mpirun started it (distributed.h). */
static int train_data(int argc, char **argv) {
    if (cap_cli_has_option(argc, argv, "--help") || cap_cli_has_option(argc, argv, "-h")) {
        int rc = cap_cmd_train_data(argc - 1, argv + 1, NULL);
        fputs(cap_dist_help(), stdout);
        return rc;
    }
    CapComm comm;
    char err[ERR_SIZE];
    int dist = cap_dist_init(&argc, &argv, &comm, err, sizeof err);
    if (dist < 0) {
        fprintf(stderr, "cap: error: %s\n", err);
        return 1;
    }
    int rc = cap_cmd_train_data(argc - 1, argv + 1, dist ? &comm : NULL);
    cap_dist_finish(rc);
    return rc;
}

int main(int argc, char **argv) {
    cap_cli_set_verbose(take_verbose(&argc, argv));
    if (argc > 1 && strcmp(argv[1], "score") == 0) return cap_cmd_score(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "plot") == 0) return cap_cmd_plot(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "sample") == 0) return cap_cmd_sample(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "eval") == 0) return cap_cmd_eval(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "train") == 0 && cap_cli_has_option(argc, argv, "--data"))
        return train_data(argc, argv);
    if (argc > 1 && strcmp(argv[1], "data") == 0) return cap_cmd_data(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "vocab") == 0) return cap_cmd_vocab(argc - 1, argv + 1);
    Args a;
    parse_args(argc, argv, &a);
    if (strcmp(a.cmd, "info") == 0) return cmd_info(&a);
    if (strcmp(a.cmd, "init") == 0) return cmd_init(&a);
    if (strcmp(a.cmd, "loss") == 0) return cmd_loss(&a);
    if (strcmp(a.cmd, "train") == 0) return cmd_train(&a);
    usage_error("unknown command '%s'", a.cmd);
    return 2;
}
