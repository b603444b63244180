/* test_e2e_caption.c — real data in, captions out, on the cpu backend.
 *
 * Setup (once): the synthetic shapes set (synth_write: 500 images of 64x64, 400 train / 50 val
 * / 50 test), its vocabulary (train split, min count 2), and the tiny captioner compiled by
 * CAPC_BIN for it: `-D image=64 -D vocab=<size> -D batch=16 -D lr=0.001 --target=cpu` (at 64
 * pixels layer4's map is 2x2 and the neck's adaptive pooling spreads it to G=4x4 tokens).
 *
 * Tests:
 *   - learns: greedy captions of the 50 held-out test images, BLEU-4 of the freshly
 *     initialized model, then TRAIN_STEPS steps of cap_train_data (the loader with 2 workers),
 *     BLEU-4 again: trained must be > untrained + 0.05 and > 0.1 (both printed). The trained
 *     checkpoint is kept for the tests below.
 *   - sampling: greedy twice (and in another batch grouping: 5 images vs 20, so the padding of
 *     a partial batch changes nothing) gives the same captions; top-k = 1 sampling equals
 *     greedy; beam search with 1 beam equals greedy; beam 3 and greedy captions hold no
 *     <pad>/<start>/<end> token; more beams than batch rows is refused with -D batch=N.
 *   - feature cache: 40 steps from cached features of the frozen backbone (the second epoch's
 *     15 batches served by the cache) and 40 with --no-feature-cache: the same checkpoint.
 *   - resume: 40 steps straight equal 20 steps + checkpoint + resume + 20 (crossing an epoch
 *     boundary at step 25; 2 loader workers in one run, 0 in the other): the same checkpoint
 *     bytes.
 *   - cli: `cap train --data` (resume from its checkpoint too), `cap sample` prints
 *     `FILE: caption`, `cap eval` prints the five metric lines and writes a results file, a
 *     vocabulary of another size is refused with the -D vocab=N to recompile with, plain
 *     weights need --vocab, and a corrupt train image is skipped, warned about and counted.
 * Nothing sets OMP_NUM_THREADS: the runtime's own threading defaults must hold up on a
 * shared machine.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "passes/testfiles.h"

#include "cap.h"
#include "caption.h"
#include "data.h"
#include "image.h"
#include "synth.h"
#include "train_data.h"
#include "vocab.h"

#define ERR 2048
#define N_IMAGES 500
#define IMAGE 64
#define BATCH 16
#define TRAIN_STEPS 800

static char tmpdir[256], spec[600], vocab_path[600], so_path[600], trained[600];
static Dataset *ds;
static Vocab *vocab;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void ok(CapStatus st, const char *err) {
    if (st) fail_msg("%s", err);
}

static const char *src_dir(void) {
    const char *s = getenv("CAPC_SOURCE_DIR");
    return s && *s ? s : ".";
}

static int run_cmd(const char *cmd) {
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

static char *read_text(const char *path);

/* Runs cmd (its output redirected to the file out) and expects exit status want; on any other,
 * shows the command and its output. */
static void run_expect(const char *cmd, const char *out, int want) {
    int rc = run_cmd(cmd);
    if (rc == want) return;
    char *text = read_text(out);
    fail_msg("exit %d (want %d): %s\n%s", rc, want, cmd, text ? text : "(no output)");
}

static int setup(void **state) {
    (void)state;
    char err[ERR];
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/capc_e2e_XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) return -1;
    double t0 = now();
    SynthOptions so = {.out_dir = tmpdir, .n_images = N_IMAGES, .seed = 1, .size = IMAGE,
                       .format = SYNTH_MIXED};
    snprintf(spec, sizeof spec, "coco:%s/captions.json", tmpdir);
    snprintf(vocab_path, sizeof vocab_path, "%s/vocab.txt", tmpdir);
    if (synth_write(&so, err, sizeof err) || data_load(spec, &ds, err, sizeof err) ||
        vocab_build(ds, 2, &vocab, err, sizeof err) ||
        vocab_save(vocab, vocab_path, err, sizeof err)) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    snprintf(so_path, sizeof so_path, "%s/tiny64.so", tmpdir);
    char cmd[4096];
    const char *capc = getenv("CAPC_BIN");
    snprintf(cmd, sizeof cmd, "%s %s/models/captioner_tiny.json --target=cpu -D image=%d "
             "-D vocab=%d -D batch=%d -D lr=0.001 -o %s", capc ? capc : "capc", src_dir(), IMAGE,
             (int)vocab->size, BATCH, so_path);
    if (run_cmd(cmd) != 0) {
        fprintf(stderr, "setup: failed: %s\n", cmd);
        return -1;
    }
    printf("setup: %d images, vocab %d, compiled in %.1f s\n", N_IMAGES, (int)vocab->size,
           now() - t0);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    data_free(ds);
    vocab_free(vocab);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return run_cmd(cmd) == 0 ? 0 : -1;
}

/* ---- helpers ------------------------------------------------------------------------------- */

typedef struct Ctx {
    CapModel *m;
    CapSession *s;
} Ctx;

static void ctx_open(Ctx *c) {
    char err[ERR];
    ok(cap_model_open(so_path, &c->m, err, sizeof err), err);
    ok(cap_session_new(c->m, CAP_BACKEND_CPU, &c->s, err, sizeof err), err);
}

static void ctx_close(Ctx *c) {
    cap_session_free(c->s);
    cap_model_close(c->m);
}

static double bleu4(CapSession *s, const char *label) {
    char err[ERR];
    CapCaptioner *cap = NULL;
    ok(cap_captioner_new(s, &cap, err, sizeof err), err);
    CapCaptionOptions o = {.sample = {.greedy = 1}};
    CapEvalResult r;
    ok(cap_eval_split(cap, ds, DATA_TEST, vocab, &o, 0, NULL, NULL, &r, err, sizeof err), err);
    printf("%s: BLEU-4 %.4f (BLEU-1 %.4f, CIDEr-D %.4f) on %d test images; e.g. \"%s\"\n", label,
           r.bleu[3], r.bleu[0], r.cider, r.n, r.captions[0]);
    double b = r.bleu[3];
    assert_int_equal(r.n, 50);
    cap_eval_result_free(&r);
    cap_captioner_free(cap);
    return b;
}

static CapDataTrainResult train_with(CapSession *s, CapTrainMeta *meta, DataPosition start,
                                     int64_t steps, int workers, const char *out, int no_cache) {
    char err[ERR];
    CapDataTrainOptions o = {.ds = ds, .vocab = vocab, .steps = steps, .seed = 7,
                             .workers = workers, .start = start, .out_path = out,
                             .print_every = 100, .progress = stdout,
                             .no_feature_cache = no_cache};
    CapDataTrainResult res;
    ok(cap_train_data(s, &o, meta, &res, err, sizeof err), err);
    assert_int_equal(res.loader.skipped, 0);
    return res;
}

static void train(CapSession *s, CapTrainMeta *meta, DataPosition start, int64_t steps,
                  int workers, const char *out) {
    train_with(s, meta, start, steps, workers, out, 0);
}

/* ---- learning ------------------------------------------------------------------------------ */

static void test_learns(void **state) {
    (void)state;
    char err[ERR];
    Ctx c;
    ctx_open(&c);
    ok(cap_session_init(c.s, 7, err, sizeof err), err);
    double before = bleu4(c.s, "untrained");
    snprintf(trained, sizeof trained, "%s/trained.safetensors", tmpdir);
    CapTrainMeta meta = {0};
    double t0 = now();
    train(c.s, &meta, (DataPosition){0, 0}, TRAIN_STEPS, 2, trained);
    printf("trained %d steps (batch %d) in %.1f s\n", TRAIN_STEPS, BATCH, now() - t0);
    double after = bleu4(c.s, "trained");
    printf("BLEU-4: untrained %.4f, trained %.4f\n", before, after);
    assert_true(after > before + 0.05);
    assert_true(after > 0.1);
    ctx_close(&c);
}

/* ---- sampling ------------------------------------------------------------------------------ */

#define N_SAMPLE 20

typedef struct Captions {
    int32_t tokens[N_SAMPLE * 64];
    int lens[N_SAMPLE];
} Captions;

static void caption(CapCaptioner *cap, const float *images, int n, const CapCaptionOptions *o,
                    Captions *out) {
    char err[ERR];
    assert_true(cap_captioner_max_tokens(cap) <= 64);
    ok(cap_caption_images(cap, images, n, o, NULL, out->tokens, out->lens, err, sizeof err), err);
}

static void assert_same(const Captions *a, const Captions *b, int n, int T1) {
    for (int i = 0; i < n; i++) {
        assert_int_equal(a->lens[i], b->lens[i]);
        assert_memory_equal(a->tokens + i * T1, b->tokens + i * T1,
                            (size_t)a->lens[i] * sizeof(int32_t));
    }
}

static void assert_no_specials(const Captions *a, int n, int T1, int V) {
    for (int i = 0; i < n; i++) {
        assert_true(a->lens[i] >= 1 && a->lens[i] <= T1);
        for (int k = 0; k < a->lens[i]; k++) {
            int t = a->tokens[i * T1 + k];
            assert_true(t > VOCAB_END && t < V);
        }
    }
}

static float *test_images(int n, int S) {
    int32_t count = 0;
    int32_t *idx = data_split_images(ds, DATA_TEST, &count);
    assert_true(count >= n);
    size_t one = 3 * (size_t)S * (size_t)S;
    float *images = malloc((size_t)n * one * sizeof *images);
    char err[ERR];
    for (int i = 0; i < n; i++)
        ok(image_load_preprocessed(ds->images[idx[i]].path, S, images + (size_t)i * one, err,
                                   sizeof err), err);
    free(idx);
    return images;
}

static void test_sampling(void **state) {
    (void)state;
    if (!*trained) skip();
    char err[ERR];
    Ctx c;
    ctx_open(&c);
    ok(cap_load_weights(c.s, trained, err, sizeof err), err);
    CapCaptioner *cap = NULL;
    ok(cap_captioner_new(c.s, &cap, err, sizeof err), err);
    int T1 = cap_captioner_max_tokens(cap), V = cap_captioner_vocab(cap);
    float *images = test_images(N_SAMPLE, cap_captioner_image_size(cap));
    static Captions g1, g2, g5, k1, b1, b3;
    CapCaptionOptions greedy = {.sample = {.greedy = 1}};
    CapCaptionOptions topk1 = {.sample = {.temperature = 1, .top_k = 1, .top_p = 1}, .seed = 3};
    CapCaptionOptions beam1 = {.beam = 1}, beam3 = {.beam = 3};
    caption(cap, images, N_SAMPLE, &greedy, &g1);
    caption(cap, images, N_SAMPLE, &greedy, &g2);
    caption(cap, images, 5, &greedy, &g5);
    caption(cap, images, N_SAMPLE, &topk1, &k1);
    caption(cap, images, 6, &beam1, &b1);
    caption(cap, images, 6, &beam3, &b3);
    assert_same(&g1, &g2, N_SAMPLE, T1);
    assert_same(&g1, &g5, 5, T1);
    assert_same(&g1, &k1, N_SAMPLE, T1);
    assert_same(&g1, &b1, 6, T1);
    assert_no_specials(&g1, N_SAMPLE, T1, V);
    assert_no_specials(&b3, 6, T1, V);
    CapCaptionOptions too_many = {.beam = BATCH + 1};
    static Captions unused;
    assert_int_equal(cap_caption_images(cap, images, 1, &too_many, NULL, unused.tokens,
                                        unused.lens, err, sizeof err), CAP_E_ARG);
    assert_non_null(strstr(err, "-D batch=17"));
    /* a longer caption than the model was compiled for is refused, not cut silently */
    CapCaptionOptions too_long = {.sample = {.greedy = 1}, .max_tokens = T1 + 1};
    assert_int_equal(cap_caption_images(cap, images, 1, &too_long, NULL, unused.tokens,
                                        unused.lens, err, sizeof err), CAP_E_ARG);
    assert_non_null(strstr(err, "more than this cap.so can generate"));
    char text[512];
    for (int i = 0; i < 3; i++) {
        vocab_decode(vocab, b3.tokens + i * T1, b3.lens[i], text, sizeof text);
        printf("beam 3, test image %d: %s\n", i, text);
    }
    free(images);
    cap_captioner_free(cap);
    ctx_close(&c);
}

/* ---- resume -------------------------------------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *n) {
    unsigned char *buf = read_binary_file(path, n);
    if (buf == NULL) fail_msg("cannot read %s", path);
    return buf;
}

/* The two files hold the same bytes. */
static void assert_same_file(const char *a, const char *b) {
    if (!same_file_bytes(a, b)) fail_msg("%s and %s differ", a, b);
}

static void test_resume(void **state) {
    (void)state;
    char err[ERR], straight[600], half[600], resumed[600];
    snprintf(straight, sizeof straight, "%s/straight.safetensors", tmpdir);
    snprintf(half, sizeof half, "%s/half.safetensors", tmpdir);
    snprintf(resumed, sizeof resumed, "%s/resumed.safetensors", tmpdir);
    Ctx a, b;
    ctx_open(&a);
    ok(cap_session_init(a.s, 7, err, sizeof err), err);
    CapTrainMeta ma = {0};
    train(a.s, &ma, (DataPosition){0, 0}, 40, 2, straight);
    ctx_close(&a);

    ctx_open(&b);
    ok(cap_session_init(b.s, 7, err, sizeof err), err);
    CapTrainMeta mb = {0};
    train(b.s, &mb, (DataPosition){0, 0}, 20, 0, half);
    ctx_close(&b);
    ctx_open(&b); /* a new process would start like this */
    DataPosition pos;
    char *text = NULL;
    ok(cap_load_checkpoint(b.s, half, &mb, err, sizeof err), err);
    ok(cap_checkpoint_data(half, &pos, &text, err, sizeof err), err);
    assert_int_equal(mb.step, 20);
    assert_int_equal(pos.epoch, 0);
    assert_int_equal(pos.index, 20 * BATCH);
    char *want = vocab_to_string(vocab);
    assert_string_equal(text, want);
    free(want);
    free(text);
    train(b.s, &mb, pos, 40, 0, resumed);
    ctx_close(&b);

    assert_same_file(straight, resumed);
}

/* ---- the feature cache -------------------------------------------------------------------- */

/* 40 steps (an epoch is 25: the second epoch's batches come from the cache) with the feature
 * cache and without it: the same checkpoint bytes. */
static void test_feature_cache(void **state) {
    (void)state;
    char err[ERR], cached[600], plain[600];
    snprintf(cached, sizeof cached, "%s/cached.safetensors", tmpdir);
    snprintf(plain, sizeof plain, "%s/plain.safetensors", tmpdir);
    Ctx a;
    ctx_open(&a);
    assert_true(feature_cache_supported(a.m));
    ok(cap_session_init(a.s, 7, err, sizeof err), err);
    CapTrainMeta ma = {0};
    CapDataTrainResult r = train_with(a.s, &ma, (DataPosition){0, 0}, 40, 2, cached, 0);
    printf("feature cache: %lld batches from the cache, %lld computed, %lld bytes per image\n",
           (long long)r.cache.hits, (long long)r.cache.misses, (long long)r.cache.bytes);
    assert_int_equal(r.feature_cache, 1);
    assert_int_equal(r.cache.misses, 25);
    assert_int_equal(r.cache.hits, 15);
    ctx_close(&a);

    ctx_open(&a);
    ok(cap_session_init(a.s, 7, err, sizeof err), err);
    CapTrainMeta mb = {0};
    r = train_with(a.s, &mb, (DataPosition){0, 0}, 40, 2, plain, 1);
    assert_int_equal(r.feature_cache, 0);
    ctx_close(&a);

    assert_same_file(cached, plain);
}

/* ---- the command line ---------------------------------------------------------------------- */

static char *read_text(const char *path) {
    size_t n;
    unsigned char *b = slurp(path, &n);
    b[n] = 0;
    return (char *)b;
}

static void test_cli(void **state) {
    (void)state;
    const char *cap = getenv("CAP_BIN");
    if (!cap) skip();
    char cmd[4096], out[600], ck[600];
    snprintf(out, sizeof out, "%s/cli.out", tmpdir);
    snprintf(ck, sizeof ck, "%s/cli.safetensors", tmpdir);
    snprintf(cmd, sizeof cmd, "%s train %s --data %s --vocab %s --steps 3 --out %s --seed 5 "
             "--backend cpu >%s 2>&1", cap, so_path, spec, vocab_path, ck, out);
    run_expect(cmd, out, 0);
    snprintf(cmd, sizeof cmd, "%s train %s --data %s --steps 5 --resume %s --out %s "
             "--backend cpu >%s 2>&1", cap, so_path, spec, ck, ck, out);
    run_expect(cmd, out, 0);
    char *text = read_text(out);
    assert_non_null(strstr(text, "step 5/5"));
    assert_non_null(strstr(text, "skipped"));
    free(text);

    const char *w = *trained ? trained : ck;
    snprintf(cmd, sizeof cmd, "%s sample %s --weights %s --image %s/images/synth_000450.png "
             "%s/images/synth_000451.jpg --backend cpu >%s 2>&1", cap, so_path, w, tmpdir,
             tmpdir, out);
    run_expect(cmd, out, 0);
    text = read_text(out);
    printf("%s", text);
    assert_non_null(strstr(text, "synth_000450.png: "));
    assert_non_null(strstr(text, "synth_000451.jpg: "));
    assert_null(strstr(text, "<end>"));
    free(text);

    snprintf(cmd, sizeof cmd, "%s eval %s --weights %s --data %s --split test --results "
             "%s/results.json --backend cpu >%s 2>/dev/null", cap, so_path, w, spec, tmpdir, out);
    run_expect(cmd, out, 0);
    text = read_text(out);
    printf("%s", text);
    assert_non_null(strstr(text, "BLEU-1: "));
    assert_non_null(strstr(text, "BLEU-4: "));
    assert_non_null(strstr(text, "CIDEr-D: "));
    free(text);

    /* --eval-every: validation loss and scores in the log lines of steps 2 and 4, which cap
     * plot then draws as three more curves */
    char log[600], svg[600];
    snprintf(log, sizeof log, "%s/eval.jsonl", tmpdir);
    snprintf(svg, sizeof svg, "%s/eval.svg", tmpdir);
    snprintf(cmd, sizeof cmd, "%s train %s --data %s --vocab %s --steps 4 --out %s/eval.st "
             "--eval-every 2 --eval-images 10 --log %s --backend cpu >%s 2>&1", cap, so_path,
             spec, vocab_path, tmpdir, log, out);
    run_expect(cmd, out, 0);
    text = read_text(out);
    assert_non_null(strstr(text, "eval at step 2:  val_loss "));
    assert_non_null(strstr(text, "eval at step 4:  val_loss "));
    free(text);
    text = read_text(log);
    int evals = 0;
    for (const char *p = text; (p = strstr(p, "\"val_bleu4\":")) != NULL; p++) evals++;
    assert_int_equal(evals, 2);
    assert_non_null(strstr(text, "\"val_cider\":"));
    free(text);
    snprintf(cmd, sizeof cmd, "%s plot %s -o %s >%s 2>&1", cap, log, svg, out);
    run_expect(cmd, out, 0);
    text = read_text(out);
    assert_non_null(strstr(text, "6 curves"));
    free(text);

    /* outputs that would replace an input are refused, and nothing is written */
    const char *annotations = strchr(spec, ':') + 1;
    size_t before = 0;
    free(slurp(annotations, &before));
    snprintf(cmd, sizeof cmd, "%s vocab --data %s -o %s >%s 2>&1", cap, spec, annotations, out);
    run_expect(cmd, out, 1);
    text = read_text(out);
    assert_non_null(strstr(text, "is also the input"));
    free(text);
    snprintf(cmd, sizeof cmd, "%s eval %s --weights %s --data %s --results %s --backend cpu "
             ">%s 2>&1", cap, so_path, w, spec, annotations, out);
    run_expect(cmd, out, 1);
    text = read_text(out);
    assert_non_null(strstr(text, "--results '"));
    free(text);
    size_t after = 0;
    free(slurp(annotations, &after));
    assert_int_equal(after, before);
    /* a longer caption than compiled is refused, not cut */
    snprintf(cmd, sizeof cmd, "%s sample %s --weights %s --image %s/images/synth_000450.png "
             "--max-len 99 --backend cpu >%s 2>&1", cap, so_path, w, tmpdir, out);
    run_expect(cmd, out, 1);
    text = read_text(out);
    assert_non_null(strstr(text, "--max-len 99 is more than this cap.so can generate"));
    free(text);

    /* a vocabulary of another size: refused with the -D to recompile with */
    char small[600];
    snprintf(small, sizeof small, "%s/small_vocab.txt", tmpdir);
    FILE *f = fopen(small, "w");
    fputs("<pad>\n<start>\n<end>\n<unk>\na\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s train %s --data %s --vocab %s --steps 1 --out %s/x.st "
             "--backend cpu >%s 2>&1", cap, so_path, spec, small, tmpdir, out);
    run_expect(cmd, out, 1);
    text = read_text(out);
    assert_non_null(strstr(text, "-D vocab=5"));
    free(text);

    /* plain weights carry no vocabulary: sample needs --vocab */
    snprintf(cmd, sizeof cmd, "%s init %s -o %s/init.safetensors >/dev/null 2>&1 && %s sample "
             "%s --weights %s/init.safetensors --image %s/images/synth_000450.png --backend cpu "
             ">%s 2>&1", cap, so_path, tmpdir, cap, so_path, tmpdir, tmpdir, out);
    run_expect(cmd, out, 1);
    text = read_text(out);
    assert_non_null(strstr(text, "give --vocab"));
    free(text);
    snprintf(cmd, sizeof cmd, "%s sample %s --weights %s/init.safetensors --vocab %s --image "
             "%s/images/synth_000450.png --backend cpu >%s 2>&1", cap, so_path, tmpdir,
             vocab_path, tmpdir, out);
    run_expect(cmd, out, 0);

    /* a corrupt train image is skipped, warned about and counted (last: it changes the set) */
    char bad[700];
    snprintf(bad, sizeof bad, "%s/images/synth_000002.png", tmpdir);
    f = fopen(bad, "w");
    fputs("not a png", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s train %s --data %s --vocab %s --steps 30 --out %s/y.st "
             "--print-every 0 --backend cpu >%s 2>&1", cap, so_path, spec, vocab_path, tmpdir,
             out);
    run_expect(cmd, out, 0);
    text = read_text(out);
    assert_non_null(strstr(text, "cap: warning: skipped "));
    assert_non_null(strstr(text, "synth_000002.png"));
    assert_non_null(strstr(text, "1 skipped"));
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learns),
        cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_feature_cache),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
