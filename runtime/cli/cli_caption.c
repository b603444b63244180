/* cli_caption.c — `cap train --data`, `cap sample`, `cap eval` (cli_caption.h, docs/cli.md).
 * Command-line errors print `cap: error: ... (see cap --help)` and return 2; run-time errors
 * print the library's message and return 1. Progress and results go to stdout; notes
 * (backend choice, resume, skipped images) to stderr.
 */
#include "cli_caption.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cap_internal.h" /* cap_fail */
#include "caption.h"
#include "data.h"
#include "files.h"
#include "image.h"
#include "metrics.h"
#include "train_data.h"
#include "vocab.h"

#define ERR_SIZE 2048
#define MAX_IMAGES 4096

/* ---- options --------------------------------------------------------------------------------- */

typedef struct Opt {
    const char *name;
    int kind;          /* 0 value, 1 flag, 2 list (values up to the next option) */
    const char *value; /* value, or "1" for a set flag */
    char **list;       /* kind 2: argv entries */
    int n_list;
} Opt;

static int usage(const char *fmt, const char *arg) {
    fprintf(stderr, "cap: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see cap --help)\n");
    return 2;
}

static Opt *find_opt(Opt *o, int n, const char *a, size_t len) {
    for (int k = 0; k < n; k++)
        if (strlen(o[k].name) == len && strncmp(a, o[k].name, len) == 0) return &o[k];
    return NULL;
}

static const char *const HELP[][2] = {
    {"train", "usage: cap train cap.so --data SPEC --vocab VOCAB.txt (--steps N | --epochs N)\n"
              "       --out CKPT [--weights W | --resume CKPT] [--log metrics.jsonl] [--seed S]\n"
              "       [--workers K] [--save-every N] [--print-every N] [--time SECONDS]\n"
              "       [--no-feature-cache] [--backend B] [--threads N]\n"},
    {"sample", "usage: cap sample cap.so --weights CKPT --image FILE... [--greedy]\n"
               "       [--temperature T] [--top-k K] [--top-p P] [--beam N] [--length-alpha A]\n"
               "       [--max-len L] [--seed S] [--vocab VOCAB.txt] [--backend B] [--threads N]\n"},
    {"eval", "usage: cap eval cap.so --weights CKPT --data SPEC [--split train|val|test]\n"
             "       [--beam N] [--results results.json] [--limit N] [--max-len L]\n"
             "       [--vocab VOCAB.txt] [--backend B] [--threads N] (and sample's --greedy/--temperature/...)\n"},
};

/* argv[0] is the command; argv[1..] the model and the options. *model receives the one
 * positional argument. Returns 0, 2 on a bad line, or -1 after printing the help. */
static int parse(int argc, char **argv, Opt *opts, int n, const char **model) {
    *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") && strcmp(argv[i], "--help")) continue;
        for (size_t k = 0; k < sizeof HELP / sizeof HELP[0]; k++)
            if (strcmp(HELP[k][0], argv[0]) == 0) fputs(HELP[k][1], stdout);
        fputs("(docs/cli.md has the details)\n", stdout);
        return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == 0) {
            if (*model) return usage("unexpected argument '%s'", a);
            *model = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        Opt *o = find_opt(opts, n, a, len);
        if (!o) return usage("unknown option '%s'", a);
        if (o->kind == 1) {
            if (eq) return usage("option '%s' takes no value", a);
            o->value = "1";
        } else if (o->kind == 2) {
            if (!o->list && !(o->list = calloc((size_t)argc, sizeof *o->list)))
                return usage("out of memory%s", "");
            if (eq) o->list[o->n_list++] = (char *)eq + 1;
            while (!eq && i + 1 < argc && argv[i + 1][0] != '-') o->list[o->n_list++] = argv[++i];
            if (o->n_list == 0) return usage("option '%s' needs a value", a);
            o->value = o->list[0];
        } else if (eq) {
            o->value = eq + 1;
        } else if (i + 1 < argc) {
            o->value = argv[++i];
        } else {
            return usage("option '%s' needs a value", a);
        }
    }
    if (!*model) return usage("'%s' needs a cap.so", argv[0]);
    return 0;
}

static void opts_free(Opt *o, int n) {
    for (int k = 0; k < n; k++) free(o[k].list);
}

static const char *opt(const Opt *o, int n, const char *name) {
    for (int k = 0; k < n; k++)
        if (strcmp(o[k].name, name) == 0) return o[k].value;
    return NULL;
}

static int int_opt(const char *name, const char *v, long long dflt, long long min,
                   long long max, long long *out) {
    *out = dflt;
    if (!v) return 0;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < min || x > max) {
        fprintf(stderr, "cap: error: %s must be an integer in %lld..%lld, not '%s' (see cap "
                "--help)\n", name, min, max, v);
        return 2;
    }
    *out = x;
    return 0;
}

static int real_opt(const char *name, const char *v, double dflt, double min, double max,
                    double *out) {
    *out = dflt;
    if (!v) return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x >= min && x <= max)) {
        fprintf(stderr, "cap: error: %s must be a number in %g..%g, not '%s' (see cap --help)\n",
                name, min, max, v);
        return 2;
    }
    *out = x;
    return 0;
}

static int cli_verbose;

void cap_cli_set_verbose(int verbose) { cli_verbose = verbose; }

void cap_cli_backend_note(const CapSession *s) {
    const char *note = cap_session_backend_note(s);
    if (*note && (cli_verbose || !strstr(note, "auto: using cpu"))) fprintf(stderr, "cap: %s\n", note);
}

int cap_cli_has_option(int argc, char **argv, const char *name) {
    size_t n = strlen(name);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], name, n) == 0 && (argv[i][n] == 0 || argv[i][n] == '=')) return 1;
    return 0;
}

/* ---- shared: model, session, vocabulary --------------------------------------------------- */

static int fail(const char *err) {
    fprintf(stderr, "cap: error: %s\n", err);
    return 1;
}

typedef struct Run {
    CapModel *m;
    CapSession *s;
    Vocab *vocab;
    Dataset *ds;
    CapCaptioner *cap;
} Run;

static void run_free(Run *r) {
    cap_captioner_free(r->cap);
    data_free(r->ds);
    vocab_free(r->vocab);
    cap_session_free(r->s);
    cap_model_close(r->m);
}

static int run_open(Run *r, const char *model, const char *backend, const char *threads) {
    char err[ERR_SIZE];
    CapBackendKind kind = CAP_BACKEND_AUTO;
    long long n_threads;
    if (backend && cap_backend_parse(backend, &kind))
        return usage("unknown backend '%s' (auto, cpu or cuda)", backend);
    int rc = int_opt("--threads", threads, 0, 1, 4096, &n_threads);
    if (rc) return rc;
    if (cap_model_open(model, &r->m, err, sizeof err) ||
        cap_session_new(r->m, kind, &r->s, err, sizeof err))
        return fail(err);
    cap_session_set_threads(r->s, (int)n_threads);
    cap_cli_backend_note(r->s);
    return 0;
}

/* The vocabulary from the weights file's metadata, else from --vocab; the compiled size is
 * checked. */
static int load_vocab(Run *r, const char *weights, const char *vocab_path) {
    char err[ERR_SIZE];
    char *text = NULL;
    CapStatus st = cap_file_metadata(weights, "vocab", &text, err, sizeof err);
    const char *from = text ? weights : vocab_path;
    if (!st && text) st = vocab_from_string(text, weights, &r->vocab, err, sizeof err);
    else if (!st && vocab_path) st = vocab_load(vocab_path, &r->vocab, err, sizeof err);
    free(text);
    if (st) return fail(err);
    if (!r->vocab) {
        fprintf(stderr, "cap: error: %s has no vocabulary in its metadata (it is not a "
                "checkpoint of `cap train --data`): give --vocab VOCAB.txt\n", weights);
        return 1;
    }
    if (cap_check_vocab(r->m, r->vocab, from, err, sizeof err))
        return fail(err);
    return 0;
}

static void on_skip(void *ctx, const char *message) {
    int *n = ctx;
    if ((*n)++ < 10) fprintf(stderr, "cap: warning: skipped %s\n", message);
    else if (*n == 11) fprintf(stderr, "cap: warning: more images skipped (counted)\n");
}

/* ---- cap train --data ------------------------------------------------------------------------ */

enum { T_DATA, T_VOCAB, T_STEPS, T_EPOCHS, T_OUT, T_WEIGHTS, T_RESUME, T_LOG, T_SEED, T_WORKERS,
       T_SAVE, T_PRINT, T_BACKEND, T_THREADS, T_TIME, T_NO_CACHE, T_NONFINITE, T_TIME_LIMIT,
       T_EVAL_EVERY, T_EVAL_IMAGES, T_N };

/* Resume: state, position and vocabulary from the checkpoint (a --vocab must agree). */
static int train_resume(Run *r, const Opt *o, CapTrainMeta *meta, DataPosition *pos,
                        uint32_t seed) {
    char err[ERR_SIZE];
    const char *ck = o[T_RESUME].value;
    char *text = NULL;
    if (o[T_WEIGHTS].value) return usage("--resume and --weights exclude each other%s", "");
    if (cap_load_checkpoint(r->s, ck, meta, err, sizeof err) ||
        cap_checkpoint_data(ck, pos, &text, err, sizeof err))
        return fail(err);
    CapStatus st = text ? vocab_from_string(text, ck, &r->vocab, err, sizeof err)
                        : cap_fail(err, sizeof err, CAP_E_FORMAT, "%s: no vocabulary in the "
                                   "checkpoint's metadata", ck);
    if (!st && o[T_VOCAB].value) {
        Vocab *v = NULL;
        char *t2 = NULL;
        st = vocab_load(o[T_VOCAB].value, &v, err, sizeof err);
        if (!st && (!(t2 = vocab_to_string(v)) || strcmp(t2, text) != 0))
            st = cap_fail(err, sizeof err, CAP_E_MISMATCH, "%s differs from the vocabulary "
                          "%s was trained with (leave --vocab out to use the checkpoint's)",
                          o[T_VOCAB].value, ck);
        free(t2);
        vocab_free(v);
    }
    free(text);
    if (st) return fail(err);
    if (o[T_SEED].value && meta->seed != seed) {
        fprintf(stderr, "cap: error: %s was trained with --seed %u, not %u\n", ck, meta->seed,
                seed);
        return 1;
    }
    fprintf(stderr, "cap: resuming %s at step %lld (epoch %lld, image %lld of the epoch)\n", ck,
            (long long)meta->step, (long long)pos->epoch, (long long)pos->index);
    return 0;
}

static int train_fresh(Run *r, const Opt *o, CapTrainMeta *meta, uint32_t seed) {
    char err[ERR_SIZE];
    memset(meta, 0, sizeof *meta);
    if (!o[T_VOCAB].value) return usage("cap train --data needs --vocab VOCAB.txt%s", "");
    if (vocab_load(o[T_VOCAB].value, &r->vocab, err, sizeof err) ||
        cap_check_vocab(r->m, r->vocab, o[T_VOCAB].value, err, sizeof err) ||
        cap_session_init(r->s, seed, err, sizeof err) ||
        (o[T_WEIGHTS].value && cap_load_weights(r->s, o[T_WEIGHTS].value, err, sizeof err)))
        return fail(err);
    return 0;
}

static void train_summary(const CapDataTrainResult *res, const CapTrainMeta *meta) {
    printf("trained to step %lld in %.1f s: %lld images decoded, %lld skipped; next: epoch %lld, "
           "image %lld of %d\n", (long long)meta->step, res->seconds,
           (long long)res->loader.delivered, (long long)res->loader.skipped,
           (long long)res->position.epoch, (long long)res->position.index, (int)res->split_images);
    if (res->feature_cache)
        printf("feature cache: %lld batches from the cache, %lld computed (%.1f KiB per image, "
               "%s)\n", (long long)res->cache.hits, (long long)res->cache.misses,
               (double)res->cache.bytes / 1024.0, res->cache.in_file ? "in a file" : "in memory");
}

static int train_run(Run *r, const Opt *o, uint32_t seed, const CapComm *comm) {
    char err[ERR_SIZE];
    long long steps = 0, epochs = 0, workers, save_every, print_every, eval_every, eval_images;
    double seconds = 0;
    const char *limit = o[T_TIME_LIMIT].value ? o[T_TIME_LIMIT].value : o[T_TIME].value;
    int rc;
    if ((rc = int_opt("--steps", o[T_STEPS].value, 0, 1, 1LL << 40, &steps)) ||
        (rc = int_opt("--epochs", o[T_EPOCHS].value, 0, 1, 1LL << 30, &epochs)) ||
        (rc = int_opt("--workers", o[T_WORKERS].value, 2, 0, 64, &workers)) ||
        (rc = int_opt("--save-every", o[T_SAVE].value, 0, 0, 1LL << 40, &save_every)) ||
        (rc = int_opt("--print-every", o[T_PRINT].value, 10, 0, 1LL << 40, &print_every)) ||
        (rc = int_opt("--eval-every", o[T_EVAL_EVERY].value, 0, 0, 1LL << 40, &eval_every)) ||
        (rc = int_opt("--eval-images", o[T_EVAL_IMAGES].value, 100, 1, 1 << 30, &eval_images)))
        return rc;
    if (limit && cap_parse_duration(limit, &seconds) != 0)
        return usage("--time-limit takes a duration such as 90, 90s, 5m or 2h, not '%s'", limit);
    CapTrainMeta meta;
    DataPosition pos = {0, 0};
    if ((rc = o[T_RESUME].value ? train_resume(r, o, &meta, &pos, seed)
                                : train_fresh(r, o, &meta, seed)))
        return rc;
    if (data_load(o[T_DATA].value, &r->ds, err, sizeof err)) return fail(err);
    data_print_warnings(r->ds, stderr);
    CapDataShape sh;
    if (cap_data_shape(r->m, "train_step", &sh, err, sizeof err)) return fail(err);
    int64_t n_train = r->ds->n_per_split[DATA_TRAIN];
    /* data parallel: a step takes the global batch, every process's share of it */
    int ranks = comm ? comm->size : 1;
    int lead = !comm || comm->rank == 0; /* the one process that prints, logs and saves */
    int64_t global = (int64_t)sh.batch * ranks;
    if (epochs) steps = (epochs * n_train + global - 1) / global;
    int skips = 0;
    CapDataTrainOptions to = {
        .ds = r->ds, .vocab = r->vocab, .steps = steps, .max_seconds = seconds, .seed = o[T_RESUME].value ? meta.seed : seed,
        .workers = (int)workers, .start = pos, .out_path = lead ? o[T_OUT].value : NULL,
        .save_every = save_every, .log_path = lead ? o[T_LOG].value : NULL,
        .print_every = print_every, .progress = lead ? stdout : NULL,
        .on_skip = lead ? on_skip : NULL, .skip_ctx = &skips,
        .no_feature_cache = o[T_NO_CACHE].value != NULL,
        .eval_every = lead ? eval_every : 0, .eval_images = (int)eval_images, .comm = comm,
    };
    if (cap_nonfinite_parse(o[T_NONFINITE].value, &to.on_nonfinite) != 0)
        return usage("--on-nonfinite must be stop or skip, not '%s'", o[T_NONFINITE].value);
    if (lead && comm)
        printf("data parallel: %d processes, global batch %lld (%d per process)\n", ranks,
               (long long)global, sh.batch);
    if (lead)
        printf("training on %lld train images (batch %lld, %dx%d, max_len %d, vocab %d) for "
               "%lld steps\n", (long long)n_train, (long long)global, sh.image, sh.image,
               sh.max_len, (int)r->vocab->size, steps);
    fflush(stdout);
    CapDataTrainResult res;
    CapStatus st = cap_train_data(r->s, &to, &meta, &res, err, sizeof err);
    /* Data parallel: finishing, and a non-finite stop, happen on every rank at the same step.
     * One more allreduce then serves as a barrier: no rank exits (or, failing, aborts the
     * job) before rank 0 has written the final checkpoint. */
    char sync_err[256];
    float token = 0;
    if (comm && (st == CAP_OK || st == CAP_E_NONFINITE) &&
        comm->allreduce_sum(comm->ctx, &token, 1, sync_err, sizeof sync_err) != CAP_OK && !st) {
        snprintf(err, sizeof err, "%s", sync_err);
        st = CAP_E_IO;
    }
    if (st) {
        if (!comm) return fail(err);
        fprintf(stderr, "cap: error (rank %d of %d): %s\n", comm->rank, comm->size, err);
        return 1;
    }
    if (!lead) return 0;
    printf("saved %s (step %lld", o[T_OUT].value, (long long)meta.step);
    if (meta.skipped) printf(", %lld non-finite steps skipped", (long long)meta.skipped);
    printf(")\n");
    train_summary(&res, &meta);
    return 0;
}

/* An output (`what` names its option) must be writable and none of the command's inputs:
 * the files named, and the annotation file of the --data spec. Returns 0, or 1 after the
 * message. */
static int check_output(const char *out, const char *what, const char *data_spec,
                        const char *const *inputs, int n) {
    char err[ERR_SIZE];
    DataSpec spec;
    const char *annotations = data_spec && data_spec_parse(data_spec, &spec, err, sizeof err) == 0
                                  ? spec.path : NULL;
    if (out && (file_check_new_output(out, what, inputs, n, err, sizeof err) ||
                file_refuse_overwrite(out, what, &annotations, 1, err, sizeof err)))
        return fail(err);
    return 0;
}

int cap_cmd_train_data(int argc, char **argv, const CapComm *comm) {
    Opt o[T_N] = {{"--data", 0, NULL, NULL, 0}, {"--vocab", 0, NULL, NULL, 0}, {"--steps", 0, NULL, NULL, 0}, {"--epochs", 0, NULL, NULL, 0}, {"--out", 0, NULL, NULL, 0},
                  {"--weights", 0, NULL, NULL, 0}, {"--resume", 0, NULL, NULL, 0}, {"--log", 0, NULL, NULL, 0}, {"--seed", 0, NULL, NULL, 0},
                  {"--workers", 0, NULL, NULL, 0}, {"--save-every", 0, NULL, NULL, 0}, {"--print-every", 0, NULL, NULL, 0}, {"--backend", 0, NULL, NULL, 0},
                  {"--threads", 0, NULL, NULL, 0}, {"--time", 0, NULL, NULL, 0},
                  {"--no-feature-cache", 1, NULL, NULL, 0}, {"--on-nonfinite", 0, NULL, NULL, 0},
                  {"--time-limit", 0, NULL, NULL, 0}, {"--eval-every", 0, NULL, NULL, 0},
                  {"--eval-images", 0, NULL, NULL, 0}};
    const char *model;
    int rc = parse(argc, argv, o, T_N, &model);
    if (rc < 0) return opts_free(o, T_N), 0;
    long long seed = 0;
    if (!rc && !o[T_OUT].value) rc = usage("cap train needs --out CKPT%s", "");
    /* --out may be the --resume checkpoint (the save is atomic); nothing else may be clobbered */
    const char *inputs[] = {model, o[T_WEIGHTS].value, o[T_VOCAB].value};
    if (!rc) rc = check_output(o[T_OUT].value, "--out", o[T_DATA].value, inputs, 3);
    const char *log_inputs[] = {model, o[T_WEIGHTS].value, o[T_VOCAB].value, o[T_RESUME].value};
    if (!rc) rc = check_output(o[T_LOG].value, "--log", o[T_DATA].value, log_inputs, 4);
    if (!rc && !!o[T_STEPS].value == !!o[T_EPOCHS].value)
        rc = usage("cap train needs exactly one of --steps and --epochs%s", "");
    if (!rc) rc = int_opt("--seed", o[T_SEED].value, 0, 0, 4294967295LL, &seed);
    Run r = {0};
    if (!rc) rc = run_open(&r, model, o[T_BACKEND].value, o[T_THREADS].value);
    if (!rc) rc = train_run(&r, o, (uint32_t)seed, comm);
    run_free(&r);
    opts_free(o, T_N);
    return rc;
}

/* ---- cap sample -------------------------------------------------------------------------------- */

enum { S_WEIGHTS, S_IMAGE, S_TEMP, S_TOPK, S_TOPP, S_GREEDY, S_BEAM, S_MAXLEN, S_SEED, S_VOCAB,
       S_ALPHA, S_BACKEND, S_THREADS, S_N };

/* Caption options from the command line: greedy unless --temperature/--top-k/--top-p. */
static int caption_options(const Opt *o, int n, int greedy_i, CapCaptionOptions *co) {
    long long k = 0, beam = 0, max_len = 0, seed = 0;
    double t = 1, p = 1, alpha = 0;
    int rc;
    if ((rc = real_opt("--temperature", opt(o, n, "--temperature"), 1, 0, 1e6, &t)) ||
        (rc = int_opt("--top-k", opt(o, n, "--top-k"), 0, 0, 1 << 30, &k)) ||
        (rc = real_opt("--top-p", opt(o, n, "--top-p"), 1, 1e-9, 1, &p)) ||
        (rc = int_opt("--beam", opt(o, n, "--beam"), 0, 1, 4096, &beam)) ||
        (rc = real_opt("--length-alpha", opt(o, n, "--length-alpha"), 0, 0, 10, &alpha)) ||
        (rc = int_opt("--max-len", opt(o, n, "--max-len"), 0, 1, 1 << 20, &max_len)) ||
        (rc = int_opt("--seed", opt(o, n, "--seed"), 0, 0, 4294967295LL, &seed)))
        return rc;
    int sampling = opt(o, n, "--temperature") || opt(o, n, "--top-k") || opt(o, n, "--top-p");
    if (beam && (sampling || o[greedy_i].value))
        return usage("--beam excludes --greedy, --temperature, --top-k and --top-p%s", "");
    *co = (CapCaptionOptions){
        .sample = {.temperature = (float)t, .top_k = (int)k, .top_p = (float)p,
                   .greedy = o[greedy_i].value || !sampling},
        .beam = (int)beam, .length_alpha = alpha, .max_tokens = (int)max_len,
        .seed = (uint32_t)seed};
    return 0;
}

static int sample_run(Run *r, const Opt *o, const CapCaptionOptions *co) {
    char err[ERR_SIZE];
    if (cap_load_weights(r->s, o[S_WEIGHTS].value, err, sizeof err) ||
        cap_captioner_new(r->s, &r->cap, err, sizeof err))
        return fail(err);
    int n = o[S_IMAGE].n_list, S = cap_captioner_image_size(r->cap);
    int T1 = cap_captioner_max_tokens(r->cap);
    size_t one = 3 * (size_t)S * (size_t)S;
    float *images = malloc((size_t)n * one * sizeof *images);
    int32_t *tokens = malloc((size_t)n * (size_t)T1 * sizeof *tokens);
    int *lens = malloc((size_t)n * sizeof *lens);
    CapStatus st = images && tokens && lens ? CAP_OK
                                            : cap_fail(err, sizeof err, CAP_E_NOMEM, "out of memory");
    for (int i = 0; !st && i < n; i++)
        st = image_load_preprocessed(o[S_IMAGE].list[i], S, images + (size_t)i * one, err,
                                     sizeof err);
    if (!st) st = cap_caption_images(r->cap, images, n, co, NULL, tokens, lens, err, sizeof err);
    for (int i = 0; !st && i < n; i++) {
        size_t need = vocab_decode(r->vocab, tokens + (size_t)i * (size_t)T1, lens[i], NULL, 0) + 1;
        char *s = malloc(need);
        if (!s) {
            st = cap_fail(err, sizeof err, CAP_E_NOMEM, "out of memory");
            break;
        }
        vocab_decode(r->vocab, tokens + (size_t)i * (size_t)T1, lens[i], s, need);
        printf("%s: %s\n", o[S_IMAGE].list[i], s);
        free(s);
    }
    free(images);
    free(tokens);
    free(lens);
    return st ? fail(err) : 0;
}

int cap_cmd_sample(int argc, char **argv) {
    Opt o[S_N] = {{"--weights", 0, NULL, NULL, 0}, {"--image", 2, NULL, NULL, 0}, {"--temperature", 0, NULL, NULL, 0}, {"--top-k", 0, NULL, NULL, 0},
                  {"--top-p", 0, NULL, NULL, 0}, {"--greedy", 1, NULL, NULL, 0}, {"--beam", 0, NULL, NULL, 0}, {"--max-len", 0, NULL, NULL, 0},
                  {"--seed", 0, NULL, NULL, 0}, {"--vocab", 0, NULL, NULL, 0}, {"--length-alpha", 0, NULL, NULL, 0}, {"--backend", 0, NULL, NULL, 0},
                  {"--threads", 0, NULL, NULL, 0}};
    const char *model;
    CapCaptionOptions co;
    int rc = parse(argc, argv, o, S_N, &model);
    if (rc < 0) return opts_free(o, S_N), 0;
    if (!rc && !o[S_WEIGHTS].value) rc = usage("cap sample needs --weights CKPT%s", "");
    if (!rc && !o[S_IMAGE].n_list) rc = usage("cap sample needs --image FILE...%s", "");
    if (!rc && o[S_IMAGE].n_list > MAX_IMAGES) rc = usage("at most 4096 images per call%s", "");
    if (!rc) rc = caption_options(o, S_N, S_GREEDY, &co);
    Run r = {0};
    if (!rc) rc = run_open(&r, model, o[S_BACKEND].value, o[S_THREADS].value);
    if (!rc) rc = load_vocab(&r, o[S_WEIGHTS].value, o[S_VOCAB].value);
    if (!rc) rc = sample_run(&r, o, &co);
    run_free(&r);
    opts_free(o, S_N);
    return rc;
}

/* ---- cap eval ------------------------------------------------------------------------------------ */

enum { E_WEIGHTS, E_DATA, E_SPLIT, E_BEAM, E_RESULTS, E_VOCAB, E_MAXLEN, E_LIMIT, E_BACKEND,
       E_GREEDY, E_TEMP, E_TOPK, E_TOPP, E_SEED, E_ALPHA, E_THREADS, E_N };

static int split_of(const char *name, int *split) {
    static const char *names[] = {"train", "val", "test"};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0) return *split = i, 0;
    return usage("--split is train, val or test, not '%s'", name);
}

static int eval_run(Run *r, const Opt *o, const CapCaptionOptions *co, int split, int limit) {
    char err[ERR_SIZE];
    if (cap_load_weights(r->s, o[E_WEIGHTS].value, err, sizeof err) ||
        cap_captioner_new(r->s, &r->cap, err, sizeof err) ||
        data_load(o[E_DATA].value, &r->ds, err, sizeof err))
        return fail(err);
    data_print_warnings(r->ds, stderr);
    int skips = 0;
    CapEvalResult res;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (cap_eval_split(r->cap, r->ds, split, r->vocab, co, limit, on_skip, &skips, &res, err,
                       sizeof err))
        return fail(err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "cap: captioned %d images of the %s split in %.1f s (%d skipped, %s)\n",
            res.n, o[E_SPLIT].value ? o[E_SPLIT].value : "test", secs, res.skipped,
            co->beam ? "beam search" : co->sample.greedy ? "greedy" : "sampled");
    for (int n = 0; n < CAP_BLEU_N; n++) printf("BLEU-%d: %.12g\n", n + 1, res.bleu[n]);
    printf("CIDEr-D: %.12g\n", res.cider);
    CapStatus st = CAP_OK;
    if (o[E_RESULTS].value) {
        st = cap_write_coco_results(o[E_RESULTS].value, res.image_ids,
                                    (const char *const *)res.captions, res.n, err, sizeof err);
        if (!st) fprintf(stderr, "cap: wrote %s (%d captions)\n", o[E_RESULTS].value, res.n);
    }
    cap_eval_result_free(&res);
    return st ? fail(err) : 0;
}

int cap_cmd_eval(int argc, char **argv) {
    Opt o[E_N] = {{"--weights", 0, NULL, NULL, 0}, {"--data", 0, NULL, NULL, 0}, {"--split", 0, NULL, NULL, 0}, {"--beam", 0, NULL, NULL, 0},
                  {"--results", 0, NULL, NULL, 0}, {"--vocab", 0, NULL, NULL, 0}, {"--max-len", 0, NULL, NULL, 0}, {"--limit", 0, NULL, NULL, 0},
                  {"--backend", 0, NULL, NULL, 0}, {"--greedy", 1, NULL, NULL, 0}, {"--temperature", 0, NULL, NULL, 0}, {"--top-k", 0, NULL, NULL, 0},
                  {"--top-p", 0, NULL, NULL, 0}, {"--seed", 0, NULL, NULL, 0}, {"--length-alpha", 0, NULL, NULL, 0},
                  {"--threads", 0, NULL, NULL, 0}};
    const char *model;
    CapCaptionOptions co;
    int split = 2;
    long long limit = 0;
    int rc = parse(argc, argv, o, E_N, &model);
    if (rc < 0) return opts_free(o, E_N), 0;
    if (!rc && !o[E_WEIGHTS].value) rc = usage("cap eval needs --weights CKPT%s", "");
    if (!rc && !o[E_DATA].value) rc = usage("cap eval needs --data SPEC%s", "");
    if (!rc && o[E_SPLIT].value) rc = split_of(o[E_SPLIT].value, &split);
    if (!rc) rc = int_opt("--limit", o[E_LIMIT].value, 0, 0, 1 << 30, &limit);
    if (!rc) rc = caption_options(o, E_N, E_GREEDY, &co);
    if (!rc) rc = check_output(o[E_RESULTS].value, "--results", o[E_DATA].value,
                               (const char *[]){model, o[E_WEIGHTS].value, o[E_VOCAB].value}, 3);
    Run r = {0};
    if (!rc) rc = run_open(&r, model, o[E_BACKEND].value, o[E_THREADS].value);
    if (!rc) rc = load_vocab(&r, o[E_WEIGHTS].value, o[E_VOCAB].value);
    if (!rc) rc = eval_run(&r, o, &co, split, (int)limit);
    run_free(&r);
    opts_free(o, E_N);
    return rc;
}
