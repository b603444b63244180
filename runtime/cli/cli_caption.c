/* cli_caption.c — `cap train --data`, `cap sample`, `cap eval`, `cap attend` (cli_caption.h,
 * docs/cli.md).
 * Their options are tables of support/options.h. Command-line errors print `cap: error: ...
 * (see cap COMMAND --help)` and return 2; run-time errors print the library's message and
 * return 1. Progress and results go to stdout; notes
 * (backend choice, resume, skipped images) to stderr.
 */
#include "cli_caption.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attend.h"
#include "attend_picture.h"
#include "cap_internal.h" /* cap_fail */
#include "cli_common.h"
#include "caption.h"
#include "data.h"
#include "files.h"
#include "image.h"
#include "metrics.h"
#include "train_data.h"
#include "vocab.h"

#define ERR_SIZE 2048
#define MAX_IMAGES 4096

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
    CapAttender *att;
} Run;

static void run_free(Run *r) {
    cap_attender_free(r->att);
    cap_captioner_free(r->cap);
    data_free(r->ds);
    vocab_free(r->vocab);
    cap_session_free(r->s);
    cap_model_close(r->m);
}

/* The model (the positional argument) and a session on --backend with --threads. */
static int run_open(Run *r, const OptResult *o) {
    char err[ERR_SIZE];
    CapBackendKind kind;
    int threads;
    int rc = cap_cli_session_options(o, &kind, &threads);
    if (rc) return rc;
    if (cap_model_open(o->pos[0], &r->m, err, sizeof err)) return fail(err);
    return cap_cli_open_session(o, r->m, &r->s);
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

/* sample and eval: the session and the vocabulary of --weights (or --vocab). */
static int open_captioning(Run *r, const OptResult *o) {
    int rc = run_open(r, o);
    return rc ? rc : load_vocab(r, opt_str(o, "--weights"), opt_str(o, "--vocab"));
}

static void on_skip(void *ctx, const char *message) {
    int *n = ctx;
    if ((*n)++ < 10) fprintf(stderr, "cap: warning: skipped %s\n", message);
    else if (*n == 11) fprintf(stderr, "cap: warning: more images skipped (counted)\n");
}

/* ---- cap train --data ------------------------------------------------------------------------ */

/* Resume: state, position and vocabulary from the checkpoint (a --vocab must agree). */
static int train_resume(Run *r, const OptResult *o, CapTrainMeta *meta, DataPosition *pos,
                        uint32_t seed) {
    char err[ERR_SIZE];
    const char *ck = opt_str(o, "--resume");
    char *text = NULL;
    if (cap_load_checkpoint(r->s, ck, meta, err, sizeof err) ||
        cap_checkpoint_data(ck, pos, &text, err, sizeof err))
        return fail(err);
    CapStatus st = text ? vocab_from_string(text, ck, &r->vocab, err, sizeof err)
                        : cap_fail(err, sizeof err, CAP_E_FORMAT, "%s: no vocabulary in the "
                                   "checkpoint's metadata", ck);
    if (!st && opt_str(o, "--vocab")) {
        Vocab *v = NULL;
        char *t2 = NULL;
        st = vocab_load(opt_str(o, "--vocab"), &v, err, sizeof err);
        if (!st && (!(t2 = vocab_to_string(v)) || strcmp(t2, text) != 0))
            st = cap_fail(err, sizeof err, CAP_E_MISMATCH, "%s differs from the vocabulary "
                          "%s was trained with (leave --vocab out to use the checkpoint's)",
                          opt_str(o, "--vocab"), ck);
        free(t2);
        vocab_free(v);
    }
    free(text);
    if (st) return fail(err);
    if (opt_str(o, "--seed") && meta->seed != seed) {
        fprintf(stderr, "cap: error: %s was trained with --seed %u, not %u\n", ck, meta->seed,
                seed);
        return 1;
    }
    fprintf(stderr, "cap: resuming %s at step %lld (epoch %lld, image %lld of the epoch)\n", ck,
            (long long)meta->step, (long long)pos->epoch, (long long)pos->index);
    return 0;
}

static int train_fresh(Run *r, const OptResult *o, CapTrainMeta *meta, uint32_t seed) {
    char err[ERR_SIZE];
    memset(meta, 0, sizeof *meta);
    if (!opt_str(o, "--vocab"))
        return opt_fail(o->cmd, "cap train --data needs --vocab VOCAB.txt (or --resume CKPT)");
    if (vocab_load(opt_str(o, "--vocab"), &r->vocab, err, sizeof err) ||
        cap_check_vocab(r->m, r->vocab, opt_str(o, "--vocab"), err, sizeof err) ||
        cap_session_init(r->s, seed, err, sizeof err) ||
        (opt_has(o, "--weights") &&
         cap_load_weights(r->s, opt_str(o, "--weights"), err, sizeof err)))
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

static int train_run(Run *r, const OptResult *o, uint32_t seed, const CapComm *comm) {
    char err[ERR_SIZE];
    long long steps = 0, epochs = 0, workers, save_every, print_every, eval_every, eval_images;
    double seconds = 0;
    const char *limit = opt_str(o, "--time-limit");
    int rc;
    if (opt_int(o, "--steps", 0, 1, 1LL << 40, &steps, err, sizeof err) ||
        opt_int(o, "--epochs", 0, 1, 1LL << 30, &epochs, err, sizeof err) ||
        opt_int(o, "--workers", 2, 0, 64, &workers, err, sizeof err) ||
        opt_int(o, "--save-every", 0, 0, 1LL << 40, &save_every, err, sizeof err) ||
        opt_int(o, "--print-every", 10, 0, 1LL << 40, &print_every, err, sizeof err) ||
        opt_int(o, "--eval-every", 0, 0, 1LL << 40, &eval_every, err, sizeof err) ||
        opt_int(o, "--eval-images", 100, 1, 1 << 30, &eval_images, err, sizeof err))
        return opt_fail(o->cmd, "%s", err);
    if (limit && cap_parse_duration(limit, &seconds) != 0)
        return opt_fail(o->cmd, "--time-limit takes a duration such as 90, 90s, 5m or 2h, not '%s'",
                        limit);
    CapTrainMeta meta;
    DataPosition pos = {0, 0};
    if ((rc = opt_str(o, "--resume") ? train_resume(r, o, &meta, &pos, seed)
                                : train_fresh(r, o, &meta, seed)))
        return rc;
    if (data_load(opt_str(o, "--data"), &r->ds, err, sizeof err)) return fail(err);
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
        .ds = r->ds, .vocab = r->vocab, .steps = steps, .max_seconds = seconds,
        .seed = opt_has(o, "--resume") ? meta.seed : seed,
        .workers = (int)workers, .start = pos, .out_path = lead ? opt_str(o, "--out") : NULL,
        .save_every = save_every, .log_path = lead ? opt_str(o, "--log") : NULL,
        .print_every = print_every, .progress = lead ? stdout : NULL,
        .on_skip = lead ? on_skip : NULL, .skip_ctx = &skips,
        .no_feature_cache = opt_str(o, "--no-feature-cache") != NULL,
        .eval_every = lead ? eval_every : 0, .eval_images = (int)eval_images, .comm = comm,
    };
    if (cap_nonfinite_parse(opt_str(o, "--on-nonfinite"), &to.on_nonfinite) != 0)
        return opt_fail(o->cmd, "--on-nonfinite must be stop or skip, not '%s'",
                        opt_str(o, "--on-nonfinite"));
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
    printf("saved %s (step %lld", opt_str(o, "--out"), (long long)meta.step);
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

int cap_cmd_train_data(const OptResult *o, const CapComm *comm) {
    const char *model = o->pos[0];
    char err[ERR_SIZE];
    long long seed = 0;
    /* --out may be the --resume checkpoint (the save is atomic); nothing else may be clobbered */
    const char *inputs[] = {model, opt_str(o, "--weights"), opt_str(o, "--vocab")};
    int rc = check_output(opt_str(o, "--out"), "--out", opt_str(o, "--data"), inputs, 3);
    const char *log_inputs[] = {model, opt_str(o, "--weights"), opt_str(o, "--vocab"),
                                opt_str(o, "--resume")};
    if (!rc) rc = check_output(opt_str(o, "--log"), "--log", opt_str(o, "--data"), log_inputs, 4);
    if (!rc && opt_int(o, "--seed", 0, 0, 4294967295LL, &seed, err, sizeof err))
        rc = opt_fail(o->cmd, "%s", err);
    Run r = {0};
    if (!rc) rc = run_open(&r, o);
    if (!rc) rc = train_run(&r, o, (uint32_t)seed, comm);
    run_free(&r);
    return rc;
}

/* ---- cap sample -------------------------------------------------------------------------------- */

/* What sample and eval share: how captions are chosen, and the vocabulary. */
static const OptSpec CAPTION_OPTIONS[] = {
    {"--greedy", 0, OPT_FLAG, 0, NULL, "the most likely token at each step (the default)", NULL},
    {"--temperature", 0, OPT_VALUE, 0, "T",
     "sample with temperature T, 0..1e6 (default 1; any of --temperature, --top-k, --top-p "
     "switches to sampling)", NULL},
    {"--top-k", 0, OPT_VALUE, 0, "K", "sample among the K most likely tokens (0: all)", NULL},
    {"--top-p", 0, OPT_VALUE, 0, "P", "sample within the top probability mass P, (0, 1]", NULL},
    {"--beam", 0, OPT_VALUE, 0, "N",
     "beam search with N beams (N <= the compiled batch); excludes --greedy and the sampling options",
     NULL},
    {"--length-alpha", 0, OPT_VALUE, 0, "A",
     "beam length normalization, 0..10 (default 0: raw log-probability)", NULL},
    {"--max-len", 0, OPT_VALUE, 0, "L",
     "at most L tokens, <end> counted (default and maximum: the compiled max_len - 1)", NULL},
    {"--seed", 0, OPT_VALUE, 0, "S", "the sampling seed (default 0)", NULL},
    {"--vocab", 0, OPT_VALUE, 0, "VOCAB.txt",
     "the vocabulary, when the weights file has none in its metadata", NULL},
    OPT_END,
};

/* Caption options from the command line: greedy unless --temperature/--top-k/--top-p. */
static int caption_options(const OptResult *o, CapCaptionOptions *co) {
    long long k = 0, beam = 0, max_len = 0, seed = 0;
    double t = 1, p = 1, alpha = 0;
    char err[ERR_SIZE];
    if (opt_real(o, "--temperature", 1, 0, 1e6, &t, err, sizeof err) ||
        opt_int(o, "--top-k", 0, 0, 1 << 30, &k, err, sizeof err) ||
        opt_real(o, "--top-p", 1, 1e-9, 1, &p, err, sizeof err) ||
        opt_int(o, "--beam", 0, 1, 4096, &beam, err, sizeof err) ||
        opt_real(o, "--length-alpha", 0, 0, 10, &alpha, err, sizeof err) ||
        opt_int(o, "--max-len", 0, 1, 1 << 20, &max_len, err, sizeof err) ||
        opt_int(o, "--seed", 0, 0, 4294967295LL, &seed, err, sizeof err))
        return opt_fail(o->cmd, "%s", err);
    int sampling = opt_has(o, "--temperature") || opt_has(o, "--top-k") || opt_has(o, "--top-p");
    if (beam && (sampling || opt_has(o, "--greedy")))
        return opt_fail(o->cmd, "--beam excludes --greedy, --temperature, --top-k and --top-p");
    *co = (CapCaptionOptions){
        .sample = {.temperature = (float)t, .top_k = (int)k, .top_p = (float)p,
                   .greedy = opt_has(o, "--greedy") || !sampling},
        .beam = (int)beam, .length_alpha = alpha, .max_tokens = (int)max_len,
        .seed = (uint32_t)seed};
    return 0;
}

static int sample_run(Run *r, const OptResult *o, const CapCaptionOptions *co) {
    char err[ERR_SIZE];
    if (cap_load_weights(r->s, opt_str(o, "--weights"), err, sizeof err) ||
        cap_captioner_new(r->s, &r->cap, err, sizeof err))
        return fail(err);
    const OptValue *files = opt_get(o, "--image");
    int n = files->n_list, S = cap_captioner_image_size(r->cap);
    int T1 = cap_captioner_max_tokens(r->cap);
    size_t one = 3 * (size_t)S * (size_t)S;
    float *images = malloc((size_t)n * one * sizeof *images);
    int32_t *tokens = malloc((size_t)n * (size_t)T1 * sizeof *tokens);
    int *lens = malloc((size_t)n * sizeof *lens);
    CapStatus st = images && tokens && lens ? CAP_OK
                                            : cap_fail(err, sizeof err, CAP_E_NOMEM, "out of memory");
    for (int i = 0; !st && i < n; i++)
        st = image_load_preprocessed(files->list[i], S, images + (size_t)i * one, err,
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
        printf("%s: %s\n", files->list[i], s);
        free(s);
    }
    free(images);
    free(tokens);
    free(lens);
    return st ? fail(err) : 0;
}

#define WEIGHTS_OPTION                                                                        \
    {"--weights", 0, OPT_VALUE, OPT_REQUIRED, "CKPT",                                          \
     "a checkpoint of `cap train --data`, or weights with --vocab", NULL}

static const OptSpec SAMPLE_OPTIONS[] = {
    WEIGHTS_OPTION,
    {"--image", 0, OPT_MULTI, OPT_REQUIRED, "FILE...",
     "the images to caption (PNG or JPEG; at most 4096)", NULL},
    OPT_END,
};

const OptCommand CAP_SAMPLE_COMMAND = {
    .prog = "cap sample",
    .synopsis = "cap.so --weights CKPT --image FILE... [--greedy | --temperature T] [--top-k K] "
                "[--top-p P] [--beam N] [--length-alpha A] [--max-len L] [--seed S] "
                "[--vocab V]",
    .summary = "caption images: prints `FILE: caption` per image",
    .about = "Captions each image (docs/sampling.md): greedy by default, sampled with "
             "--temperature/--top-k/--top-p, or by beam search with --beam.",
    .tables = {SAMPLE_OPTIONS, CAPTION_OPTIONS, CAP_SESSION_OPTIONS},
    .table_titles = {"options", "choosing tokens", "running"},
    .min_pos = 1,
    .max_pos = 1,
    .pos_missing = "cap sample needs a cap.so",
};

static int sample(const OptResult *o) {
    CapCaptionOptions co;
    int rc = 0;
    if (opt_get(o, "--image")->n_list > MAX_IMAGES)
        rc = opt_fail(o->cmd, "at most 4096 images per call");
    if (!rc) rc = caption_options(o, &co);
    Run r = {0};
    if (!rc) rc = open_captioning(&r, o);
    if (!rc) rc = sample_run(&r, o, &co);
    run_free(&r);
    return rc;
}

int cap_cmd_sample(int argc, char **argv) {
    return opt_run(&CAP_SAMPLE_COMMAND, argc, argv, sample);
}

/* ---- cap eval ------------------------------------------------------------------------------------ */

static int eval_run(Run *r, const OptResult *o, const CapCaptionOptions *co, int split,
                    int limit) {
    char err[ERR_SIZE];
    if (cap_load_weights(r->s, opt_str(o, "--weights"), err, sizeof err) ||
        cap_captioner_new(r->s, &r->cap, err, sizeof err) ||
        data_load(opt_str(o, "--data"), &r->ds, err, sizeof err))
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
            res.n, opt_str(o, "--split") ? opt_str(o, "--split") : "test", secs, res.skipped,
            co->beam ? "beam search" : co->sample.greedy ? "greedy" : "sampled");
    for (int n = 0; n < CAP_BLEU_N; n++) printf("BLEU-%d: %.12g\n", n + 1, res.bleu[n]);
    printf("CIDEr-D: %.12g\n", res.cider);
    CapStatus st = CAP_OK;
    if (opt_str(o, "--results")) {
        st = cap_write_coco_results(opt_str(o, "--results"), res.image_ids,
                                    (const char *const *)res.captions, res.n, err, sizeof err);
        if (!st) fprintf(stderr, "cap: wrote %s (%d captions)\n", opt_str(o, "--results"), res.n);
    }
    cap_eval_result_free(&res);
    return st ? fail(err) : 0;
}

static const OptSpec EVAL_OPTIONS[] = {
    WEIGHTS_OPTION,
    {"--data", 0, OPT_VALUE, OPT_REQUIRED, "SPEC", "the dataset (docs/data.md)", NULL},
    {"--split", 0, OPT_VALUE, 0, "train|val|test", "the split to caption (default test)", NULL},
    {"--limit", 0, OPT_VALUE, 0, "N", "only the split's first N images (default 0: all)", NULL},
    {"--results", 0, OPT_VALUE, 0, "FILE",
     "also write the captions as a COCO results file ([{\"image_id\", \"caption\"}])", NULL},
    OPT_END,
};

const OptCommand CAP_EVAL_COMMAND = {
    .prog = "cap eval",
    .synopsis = "cap.so --weights CKPT --data SPEC [--split test] [--limit N] "
                "[--results results.json] [--beam N] [--length-alpha A] [--max-len L] "
                "[--vocab V] [sample's --greedy, --temperature, --top-k, --top-p, --seed]",
    .summary = "caption a dataset split, print BLEU-1..4 and CIDEr-D",
    .about = "Captions every image of a split and scores the captions against all of the "
             "split's captions of each image, as `cap score` does (docs/metrics.md).",
    .tables = {EVAL_OPTIONS, CAPTION_OPTIONS, CAP_SESSION_OPTIONS},
    .table_titles = {"options", "choosing tokens", "running"},
    .min_pos = 1,
    .max_pos = 1,
    .pos_missing = "cap eval needs a cap.so",
};

static int eval(const OptResult *o) {
    CapCaptionOptions co;
    char err[ERR_SIZE];
    long long limit = 0;
    int split = opt_choice(o, "--split", "train|val|test", 2, err, sizeof err);
    int rc = split < 0 ? opt_fail(o->cmd, "%s", err) : 0;
    if (!rc && opt_int(o, "--limit", 0, 0, 1 << 30, &limit, err, sizeof err))
        rc = opt_fail(o->cmd, "%s", err);
    if (!rc) rc = caption_options(o, &co);
    const char *inputs[] = {o->pos[0], opt_str(o, "--weights"), opt_str(o, "--vocab")};
    if (!rc) rc = check_output(opt_str(o, "--results"), "--results", opt_str(o, "--data"),
                               inputs, 3);
    Run r = {0};
    if (!rc) rc = open_captioning(&r, o);
    if (!rc) rc = eval_run(&r, o, &co, split, (int)limit);
    run_free(&r);
    return rc;
}

int cap_cmd_eval(int argc, char **argv) { return opt_run(&CAP_EVAL_COMMAND, argc, argv, eval); }

/* ---- cap attend ---------------------------------------------------------------------------------- */

/* The image at its own size (for the picture) and preprocessed for the model (S x S). */
static CapStatus attend_image(const char *path, int S, Image *im, float **pre, char *err,
                              size_t err_size) {
    CapStatus st = image_decode_file(path, im, err, err_size);
    if (st) return st;
    *pre = malloc(3 * (size_t)S * (size_t)S * sizeof **pre);
    if (!*pre) return cap_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", path);
    return image_preprocess(im, path, S, *pre, err, err_size);
}

/* The picture of the caption's words (one panel each), the caption in its Description. */
static CapStatus attend_draw(Run *r, const OptResult *o, const Image *im, const float *maps,
                             const char *const *words, int len, const char *caption, int cols,
                             char *err, size_t err_size) {
    AttendPicture p = {.image = im, .size = cap_captioner_image_size(r->cap),
                       .grid = cap_attender_grid(r->att), .maps = maps, .words = words,
                       .n = len, .cols = cols};
    Image out = {0};
    CapStatus st = attend_picture_draw(&p, &out, err, err_size);
    const char *text[] = {"Description", caption, "Software", "cap attend"};
    if (!st) st = image_write_png(opt_str(o, "--out"), out.rgb, out.width, out.height, text, 2,
                                  err, err_size);
    int pw, ph, w, h, scaled = attend_picture_size(&p, &pw, &ph, &w, &h);
    if (!st)
        fprintf(stderr, "cap: wrote %s: %d panels of %dx%d%s in a %dx%d picture, the last "
                "decoder layer's cross-attention over a %dx%d grid\n", opt_str(o, "--out"), len,
                pw, ph,
                scaled ? " (the image scaled down)" : "", out.width, out.height, p.grid, p.grid);
    image_free(&out);
    return st;
}

static int attend_run(Run *r, const OptResult *o, const CapCaptionOptions *co, int cols) {
    char err[ERR_SIZE];
    const char *path = opt_str(o, "--image");
    if (cap_load_weights(r->s, opt_str(o, "--weights"), err, sizeof err) ||
        cap_captioner_new(r->s, &r->cap, err, sizeof err))
        return fail(err);
    int S = cap_captioner_image_size(r->cap), T1 = cap_captioner_max_tokens(r->cap);
    int G = cap_attender_grid(r->att);
    if (cap_attender_image_size(r->att) != S || cap_attender_max_words(r->att) != T1) {
        fprintf(stderr, "cap: error: %s: the attend entry's image size or caption length "
                "differs from encode / decode_step's\n", cap_model_path(r->m));
        return 1;
    }
    Image im = {0};
    float *pre = NULL, *maps = malloc((size_t)T1 * (size_t)G * (size_t)G * sizeof *maps);
    int32_t tokens[T1];
    int len = 0, disagree = 0;
    char *caption = NULL;
    CapStatus st = maps ? attend_image(path, S, &im, &pre, err, sizeof err)
                        : cap_fail(err, sizeof err, CAP_E_NOMEM, "out of memory");
    if (!st) st = cap_caption_images(r->cap, pre, 1, co, NULL, tokens, &len, err, sizeof err);
    /* every generated token is a panel, so the caption printed is the tokens as they are:
     * one word per panel (no <start>/<pad> dropped, no punctuation attached) */
    const char *words[T1];
    size_t need = 1;
    for (int t = 0; !st && t < len; t++)
        need += strlen(words[t] = vocab_token(r->vocab, tokens[t])) + 1;
    if (!st && !(caption = calloc(1, need)))
        st = cap_fail(err, sizeof err, CAP_E_NOMEM, "out of memory");
    for (int t = 0; !st && t < len; t++) {
        if (t) strcat(caption, " ");
        strcat(caption, words[t]);
    }
    if (!st) {
        printf("%s: %s\n", path, caption);
        fflush(stdout);
        if (len == 0)
            st = cap_fail(err, sizeof err, CAP_E_ARG, "%s: the caption is empty (<end> came "
                          "first): there is no word to draw", path);
    }
    if (!st) st = cap_attend(r->att, pre, 1, tokens, T1, &len, maps, &disagree, err, sizeof err);
    bool greedy = co->sample.greedy || !(co->sample.temperature > 0);
    if (!st && disagree && co->beam == 0 && greedy)
        fprintf(stderr, "cap: warning: for %d of %d words the argmax of the attend entry's "
                "logits is not the word decode_step chose (float32 near-ties)\n", disagree, len);
    if (!st) st = attend_draw(r, o, &im, maps, words, len, caption, cols, err, sizeof err);
    free(caption);
    free(pre);
    free(maps);
    image_free(&im);
    return st ? fail(err) : 0;
}

static const OptSpec ATTEND_OPTIONS[] = {
    WEIGHTS_OPTION,
    {"--image", 0, OPT_VALUE, OPT_REQUIRED, "FILE", "the image to caption (PNG or JPEG)", NULL},
    {"--out", 'o', OPT_VALUE, OPT_REQUIRED, "PNG",
     "the picture to write: one panel per word, each the image's size (up to 1024 on a "
     "side)", NULL},
    {"--cols", 0, OPT_VALUE, 0, "N", "panels per row, 1..64 (default 4)", NULL},
    OPT_END,
};

const OptCommand CAP_ATTEND_COMMAND = {
    .prog = "cap attend",
    .synopsis = "cap.so --weights CKPT --image FILE -o attn.png [--cols 4] [--vocab V] "
                "[sample's --greedy, --beam, ... options]",
    .summary = "caption an image and draw, for each word, where the decoder looked (PNG)",
    .about = "Captions the image as `cap sample` does (greedy by default), prints `FILE: "
             "caption`, and writes a PNG with one panel per word: the image at its own size "
             "with the last decoder layer's cross-attention for that word (averaged over the "
             "heads) as a heat map over it, and the word on top. Needs the `attend` entry "
             "(docs/training.md, \"Attention maps\").",
    .tables = {ATTEND_OPTIONS, CAPTION_OPTIONS, CAP_SESSION_OPTIONS},
    .table_titles = {"options", "choosing tokens", "running"},
    .min_pos = 1,
    .max_pos = 1,
    .pos_missing = "cap attend needs a cap.so",
};

static int attend(const OptResult *o) {
    CapCaptionOptions co;
    char err[ERR_SIZE];
    long long cols = 4;
    int rc = 0;
    if (opt_int(o, "--cols", 4, 1, 64, &cols, err, sizeof err)) rc = opt_fail(o->cmd, "%s", err);
    if (!rc) rc = caption_options(o, &co);
    const char *inputs[] = {o->pos[0], opt_str(o, "--weights"), opt_str(o, "--vocab"),
                            opt_str(o, "--image")};
    if (!rc) rc = check_output(opt_str(o, "--out"), "-o", NULL, inputs, 4);
    Run r = {0};
    if (!rc) rc = run_open(&r, o);
    /* the entry first: a cap.so compiled before it existed says so before anything is read */
    if (!rc && cap_attender_new(r.s, &r.att, err, sizeof err)) rc = fail(err);
    if (!rc) rc = load_vocab(&r, opt_str(o, "--weights"), opt_str(o, "--vocab"));
    if (!rc) rc = attend_run(&r, o, &co, (int)cols);
    run_free(&r);
    return rc;
}

int cap_cmd_attend(int argc, char **argv) {
    return opt_run(&CAP_ATTEND_COMMAND, argc, argv, attend);
}
