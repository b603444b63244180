/* test_metrics.c — BLEU and CIDEr-D (runtime/caption/metrics.c) against published values and
 * hand-computed cases, the PTB-like tokenizer, COCO results files, and `cap score` end to end
 * (the cap binary from CAP_BIN, or cap_cmd_score in-process when CAP_BIN is unset).
 *
 * Published values:
 *  - coco-caption's demo notebook (cocoEvalCapDemo.ipynb) prints its BLEU totals
 *    {'reflen': 9855, 'guess': [9893, 8893, 7893, 6893], 'testlen': 9893,
 *     'correct': [5732, 2510, 1043, 423]} and BLEU 0.579/0.404/0.279/0.191 (0.5794, 0.4044,
 *    0.2785, 0.1908 to four digits); its data (COCO val2014 captions) is not vendored here, so
 *    the corpus formula is tested from these totals.
 *  - SummEval's test_cider: CiderMetric(tokenize=False) on its three candidate/reference
 *    pairs (summ_eval/test_util.py CANDS, REFS) gives 2.5759014911864084; the sentences are
 *    below, split on whitespace as that test does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_score.h"
#include "metrics.h"

static char err[1024];

#define ASSERT_NEAR(a, b, tol)                                                             \
    do {                                                                                   \
        double a_ = (a), b_ = (b);                                                         \
        if (!(fabs(a_ - b_) <= (tol))) fail_msg("%s = %.17g, expected %.17g (tol %g)", #a, \
                                                a_, b_, (double)(tol));                    \
    } while (0)

/* ---- BLEU: published ------------------------------------------------------------------- */

static void test_bleu_demo_counts(void **state) {
    (void)state;
    CapBleuCounts c = {9893, 9855, {9893, 8893, 7893, 6893}, {5732, 2510, 1043, 423}};
    double b[4];
    cap_bleu_from_counts(&c, b);
    const double published[4] = {0.5794, 0.4044, 0.2785, 0.1908};
    for (int n = 0; n < 4; n++) ASSERT_NEAR(round(b[n] * 1e4) / 1e4, published[n], 1e-9);
    /* testlen > reflen: no brevity penalty, BLEU-1 = (5732 + tiny) / (9893 + small). */
    ASSERT_NEAR(b[0], (5732 + 1e-15) / (9893 + 1e-9), 1e-15);
}

/* ---- BLEU: hand-computed ------------------------------------------------------------------ */

static CapStatus bleu1(const char *cand, const char *const *refs, int n_refs, double b[4],
                       CapBleuCounts *c) {
    CapScoreItem it = {cand, refs, n_refs};
    return cap_bleu(&it, 1, b, c, err, sizeof err);
}

/* Candidate == reference, 4 words: correct = guess = [4, 3, 2, 1], testlen = reflen = 4.
 * Every precision is (g + 1e-15) / (g + 1e-9) = 1 - ~1e-9/g, and the ratio
 * (4 + 1e-15) / (4 + 1e-9) is just below 1, so a brevity factor exp(1 - 1/r) = 1 - 2.5e-10
 * applies: BLEU-n = 1 to within 1e-9, slightly below. */
static void test_bleu_identical(void **state) {
    (void)state;
    const char *refs[] = {"a man rides horse"};
    double b[4];
    CapBleuCounts c;
    assert_int_equal(bleu1("a man rides horse", refs, 1, b, &c), CAP_OK);
    for (int n = 0; n < 4; n++) {
        ASSERT_NEAR(b[n], 1.0, 1e-9);
        assert_true(b[n] < 1.0);
        assert_true(c.correct[n] == 4 - n && c.guess[n] == 4 - n);
    }
}

/* Candidate "a b" against "a b c d": testlen 2, reflen 4, correct [2, 1, 0, 0], guess
 * [2, 1, 0, 0]. Precisions ~1, 1, then 1e-15/1e-9 = 1e-6 twice; brevity exp(1 - 4/2) = e^-1:
 *   BLEU-1 = e^-1, BLEU-2 = e^-1, BLEU-3 = (1e-6)^(1/3) e^-1 = 1e-2 e^-1,
 *   BLEU-4 = (1e-12)^(1/4) e^-1 = 1e-3 e^-1. */
static void test_bleu_brevity(void **state) {
    (void)state;
    const char *refs[] = {"a b c d"};
    double b[4];
    assert_int_equal(bleu1("a b", refs, 1, b, NULL), CAP_OK);
    double e1 = exp(-1.0);
    ASSERT_NEAR(b[0], e1, 1e-9);
    ASSERT_NEAR(b[1], e1, 1e-9);
    ASSERT_NEAR(b[2], 1e-2 * e1, 1e-9);
    ASSERT_NEAR(b[3], 1e-3 * e1, 1e-11);
}

/* No match: "x y z" vs "a b c": correct [0,0,0,0], guess [3,2,1,0], lengths 3 and 3.
 * Precisions 1e-15/3, 1e-15/2, 1e-15/1, 1e-15/1e-9 (the tiny and small constants alone):
 *   BLEU-1 = 3.33e-16, BLEU-2 = sqrt(1e-30/6) = 4.08e-16,
 *   BLEU-3 = (1e-45/6)^(1/3) = 5.50e-16, BLEU-4 = (1e-51/6)^(1/4) = 1.57e-13,
 * times the brevity factor of ratio (3 + 1e-15)/(3 + 1e-9) (1 - 3.3e-10). */
static void test_bleu_zero_matches(void **state) {
    (void)state;
    const char *refs[] = {"a b c"};
    double b[4];
    assert_int_equal(bleu1("x y z", refs, 1, b, NULL), CAP_OK);
    const double expect[4] = {1e-15 / 3, sqrt(1e-30 / 6), cbrt(1e-45 / 6), pow(1e-51 / 6, 0.25)};
    for (int n = 0; n < 4; n++) ASSERT_NEAR(b[n] / expect[n], 1.0, 1e-8);
}

/* "closest" reference length: candidate of 3 words, references of 2 and 4 words are equally
 * close; the shorter one counts. Clipping: "the the the" against "the cat" matches one "the". */
static void test_bleu_closest_and_clipping(void **state) {
    (void)state;
    const char *refs[] = {"the cat sat on", "the cat"};
    double b[4];
    CapBleuCounts c;
    assert_int_equal(bleu1("the the the", refs, 2, b, &c), CAP_OK);
    assert_true(c.reflen == 2 && c.testlen == 3);
    assert_true(c.correct[0] == 1 && c.correct[1] == 0);
    /* Corpus totals: two images add their counts before any ratio is taken. */
    const char *r2[] = {"a b"};
    CapScoreItem items[2] = {{"the the the", refs, 2}, {"a b", r2, 1}};
    assert_int_equal(cap_bleu(items, 2, b, &c, err, sizeof err), CAP_OK);
    assert_true(c.testlen == 5 && c.reflen == 4 && c.correct[0] == 3 && c.guess[0] == 5);
    ASSERT_NEAR(b[0], (3 + 1e-15) / (5 + 1e-9), 1e-15);
}

static void test_bleu_errors(void **state) {
    (void)state;
    double b[4];
    assert_int_equal(cap_bleu(NULL, 0, b, NULL, err, sizeof err), CAP_E_ARG);
    CapScoreItem it = {"a", NULL, 0};
    assert_int_equal(cap_bleu(&it, 1, b, NULL, err, sizeof err), CAP_E_ARG);
    assert_non_null(strstr(err, "no reference"));
}

/* ---- CIDEr-D ---------------------------------------------------------------------------- */

static const char *const SUMMEVAL_CANDS[] = {
    "28-year-old chef found dead in San Francisco mall",
    "A 28-year-old chef who recently moved to San Francisco was found dead in the staircase "
    "of a local shopping center.",
    "The victim's brother said he cannot imagine anyone who would want to harm him,\"Finally, "
    "it went uphill again at him.\"",
};
static const char *const SUMMEVAL_REFS[] = {
    "28-Year-Old Chef Found Dead at San Francisco Mall",
    "A 28-year-old chef who had recently moved to San Francisco was found dead in the "
    "stairwell of a local mall this week.",
    "But the victim's brother says he can't think of anyone who would want to hurt him, "
    "saying, \"Things were finally going well for him.\"",
};
#define SUMMEVAL_CIDER 2.5759014911864084

static void test_cider_summeval(void **state) {
    (void)state;
    CapScoreItem items[3];
    for (int i = 0; i < 3; i++) items[i] = (CapScoreItem){SUMMEVAL_CANDS[i], &SUMMEVAL_REFS[i], 1};
    double mean = 0, per[3];
    assert_int_equal(cap_cider_d(items, 3, &mean, per, err, sizeof err), CAP_OK);
    ASSERT_NEAR(mean, SUMMEVAL_CIDER, 1e-12);
    ASSERT_NEAR((per[0] + per[1] + per[2]) / 3, mean, 1e-15);
}

/* Two images, one reference each. df: every n-gram of "a b" (image 1) and "d" (image 2) has
 * df 1, so every weight is tf * (log 2 - log 1) = L = log 2 (n-grams absent from the
 * references, like "c", get log(max(1, 0)) = 0 and weight L too).
 *  image 1, "a b" vs "a b": unigrams dot 2L^2 / (sqrt2 L)^2 = 1, bigram 1, 3- and 4-grams
 *    have zero norms -> 0; equal lengths -> no penalty. (1 + 1 + 0 + 0) / 4 * 10 = 5.
 *  image 2, "c" vs "d": no common n-gram -> 0.  CIDEr-D = (5 + 0) / 2 = 2.5. */
static void test_cider_two_images(void **state) {
    (void)state;
    const char *r1[] = {"a b"}, *r2[] = {"d"};
    CapScoreItem items[2] = {{"a b", r1, 1}, {"c", r2, 1}};
    double mean, per[2];
    assert_int_equal(cap_cider_d(items, 2, &mean, per, err, sizeof err), CAP_OK);
    ASSERT_NEAR(per[0], 5.0, 1e-12);
    ASSERT_NEAR(per[1], 0.0, 0);
    ASSERT_NEAR(mean, 2.5, 1e-12);
}

/* Length penalty and norms: image 1 "a b" vs "a b c" (df 1 for all of its n-grams, weight
 * L each). Unigrams: dot 2L^2, norms sqrt2 L and sqrt3 L -> 2/sqrt6. Bigrams: dot L^2, norms
 * L and sqrt2 L -> 1/sqrt2. Lengths (pycocoevalcap counts bigrams): 1 and 2, delta -1,
 * penalty e^(-1/72). Score (2/sqrt6 + 1/sqrt2) / 4 * 10 * e^(-1/72); image 2 scores 0. */
static void test_cider_penalty(void **state) {
    (void)state;
    const char *r1[] = {"a b c"}, *r2[] = {"y"};
    CapScoreItem items[2] = {{"a b", r1, 1}, {"x", r2, 1}};
    double mean, per[2];
    assert_int_equal(cap_cider_d(items, 2, &mean, per, err, sizeof err), CAP_OK);
    double expect = (2 / sqrt(6.0) + 1 / sqrt(2.0)) / 4 * 10 * exp(-1.0 / 72);
    ASSERT_NEAR(per[0], expect, 1e-12);
    ASSERT_NEAR(mean, expect / 2, 1e-12);
}

/* Clipping: the candidate's weight is capped by the reference's (min(h, r) * r), and the score
 * averages over references: "a a" vs {"a", "b"} with a third image "z" vs "z". */
static void test_cider_clipping_and_refs(void **state) {
    (void)state;
    const char *r1[] = {"a", "b"}, *r2[] = {"z"};
    CapScoreItem items[2] = {{"a a", r1, 2}, {"z", r2, 1}};
    double mean, per[2];
    assert_int_equal(cap_cider_d(items, 2, &mean, per, err, sizeof err), CAP_OK);
    /* df(a) = df(b) = df(z) = 1, L = log 2. Candidate: a -> 2L, "a a" -> L (df 0, weight L).
     * vs "a": unigram dot min(2L, L) * L = L^2, norms 2L and L -> 1/2; bigram: ref norm 0
     * -> 0 / (L * 0) stays 0; lengths 1 and 0 -> penalty e^(-1/72).
     * vs "b": 0. Image 1: (1/2) / 4 / 2 refs * 10 * e^(-1/72). Image 2: unigram 1 -> 10/4. */
    ASSERT_NEAR(per[0], 0.5 / 4 / 2 * 10 * exp(-1.0 / 72), 1e-12);
    ASSERT_NEAR(per[1], 2.5, 1e-12);
}

/* ---- tokenizer --------------------------------------------------------------------------- */

static void check_tok(const char *in, const char *expect) {
    char *t = cap_ptb_tokenize(in);
    assert_non_null(t);
    if (strcmp(t, expect)) fail_msg("tokenize(\"%s\") = \"%s\", expected \"%s\"", in, t, expect);
    free(t);
}

static void test_tokenizer(void **state) {
    (void)state;
    check_tok("A man, riding a horse.", "a man riding a horse");
    check_tok("  The dog's ball (red)!  ", "the dog 's ball red");
    check_tok("He can't go -- now...", "he ca n't go now");
    check_tok("A 28-year-old chef; \"quoted\" `text'", "a 28-year-old chef quoted text");
    check_tok("1,000 people at 10:30, wait...what?", "1,000 people at 10:30 wait what");
    check_tok("They're here: we'll see", "they 're here we 'll see");
    check_tok("", "");
    check_tok("... !?", "");
}

/* ---- COCO files and `cap score` ------------------------------------------------------------ */

static char tmpdir[256];

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup_dir(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/capc_metrics_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state) {
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_in(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", tmpdir, name);
}

/* The SummEval pairs as a COCO captions file (image ids 7, 8, 9 plus an image 10 that has a
 * caption but no result) and a results file written by cap_write_coco_results. */
static void write_summeval_files(char *res, char *refs, size_t n) {
    path_in(res, n, "results.json");
    path_in(refs, n, "captions.json");
    int64_t ids[3] = {7, 8, 9};
    assert_int_equal(cap_write_coco_results(res, ids, SUMMEVAL_CANDS, 3, err, sizeof err), CAP_OK);
    const char *refs_as_results[4] = {SUMMEVAL_REFS[0], SUMMEVAL_REFS[1], SUMMEVAL_REFS[2],
                                      "an unused caption"};
    int64_t ref_ids[4] = {7, 8, 9, 10};
    /* reuse the writer for the annotation records, then wrap them */
    char tmp[300];
    path_in(tmp, sizeof tmp, "anns.json");
    assert_int_equal(cap_write_coco_results(tmp, ref_ids, refs_as_results, 4, err, sizeof err),
                     CAP_OK);
    FILE *f = fopen(tmp, "r");
    assert_non_null(f);
    char body[8192];
    size_t got = fread(body, 1, sizeof body - 1, f);
    fclose(f);
    body[got] = 0;
    char *doc = malloc(got + 128);
    snprintf(doc, got + 128, "{\"images\": [], \"annotations\": %s}", body);
    write_file(refs, doc);
    free(doc);
}

/* Runs `cap score ARGS...` (the binary if CAP_BIN is set, else in-process) with stdout and
 * stderr to files; returns the exit status and the outputs' text. */
static int run_score(const char *const *args, int n_args, char *out, char *errs, size_t n) {
    char out_path[300], err_path[300];
    path_in(out_path, sizeof out_path, "stdout.txt");
    path_in(err_path, sizeof err_path, "stderr.txt");
    const char *bin = getenv("CAP_BIN");
    int status;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen(out_path, "w", stdout) || !freopen(err_path, "w", stderr)) _exit(99);
        char *argv[16];
        int k = 0;
        argv[k++] = (char *)(bin && *bin ? bin : "cap");
        argv[k++] = "score";
        for (int i = 0; i < n_args; i++) argv[k++] = (char *)args[i];
        argv[k] = NULL;
        if (bin && *bin) {
            execv(bin, argv);
            _exit(98);
        }
        int rc = cap_cmd_score(k - 1, argv + 1);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    assert_true(waitpid(pid, &status, 0) == pid);
    assert_true(WIFEXITED(status));
    const char *paths[2] = {out_path, err_path};
    char *bufs[2] = {out, errs};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(paths[i], "r");
        assert_non_null(f);
        size_t got = fread(bufs[i], 1, n - 1, f);
        bufs[i][got] = 0;
        fclose(f);
    }
    return WEXITSTATUS(status);
}

static void test_cli_score_summeval(void **state) {
    (void)state;
    char res[300], refs[300], out[4096], errs[4096];
    write_summeval_files(res, refs, sizeof res);
    const char *args[] = {res, "--refs", refs, "--tokenizer", "none"};
    assert_int_equal(run_score(args, 5, out, errs, sizeof out), 0);
    double v[5];
    int got = sscanf(out, "BLEU-1: %lf\nBLEU-2: %lf\nBLEU-3: %lf\nBLEU-4: %lf\nCIDEr-D: %lf", &v[0],
                     &v[1], &v[2], &v[3], &v[4]);
    if (got != 5) fail_msg("unexpected output:\n%s\nstderr:\n%s", out, errs);
    ASSERT_NEAR(v[4], SUMMEVAL_CIDER, 1e-11); /* printed with 12 significant digits */
    /* The same BLEU the library computes on the same sentences. */
    CapScoreItem items[3];
    for (int i = 0; i < 3; i++) items[i] = (CapScoreItem){SUMMEVAL_CANDS[i], &SUMMEVAL_REFS[i], 1};
    double b[4];
    assert_int_equal(cap_bleu(items, 3, b, NULL, err, sizeof err), CAP_OK);
    char line[64];
    snprintf(line, sizeof line, "BLEU-4: %.12g\n", b[3]);
    assert_non_null(strstr(out, line));
    /* The PTB-like tokenizer (default) lowercases: the first pair then matches better. */
    const char *args2[] = {res, "--refs", refs};
    assert_int_equal(run_score(args2, 3, out, errs, sizeof out), 0);
    assert_int_equal(sscanf(strstr(out, "CIDEr-D:"), "CIDEr-D: %lf", &v[4]), 1);
    assert_true(v[4] > SUMMEVAL_CIDER);
}

static void expect_score_error(const char *results_text, const char *refs_text,
                               const char *needle, int status) {
    char res[300], refs[300], out[4096], errs[4096];
    path_in(res, sizeof res, "bad_results.json");
    path_in(refs, sizeof refs, "bad_captions.json");
    write_file(res, results_text);
    write_file(refs, refs_text);
    const char *args[] = {res, "--refs", refs};
    assert_int_equal(run_score(args, 3, out, errs, sizeof out), status);
    if (!strstr(errs, needle)) fail_msg("stderr lacks \"%s\":\n%s", needle, errs);
    assert_string_equal(out, "");
}

static void test_cli_score_errors(void **state) {
    (void)state;
    const char *refs = "{\"annotations\": [{\"image_id\": 1, \"caption\": \"a dog\"},"
                       " {\"image_id\": 2, \"caption\": \"a cat\"}]}";
    expect_score_error("[{\"image_id\": 1, \"caption\": \"a dog\"}, {\"image_id\": 1, "
                       "\"caption\": \"a cat\"}]", refs,
                       "bad_results.json: records 0 and 1 are both for image_id 1", 1);
    expect_score_error("[{\"image_id\": 3, \"caption\": \"a dog\"}]", refs,
                       "bad_results.json: record 0: image_id 3 has no captions in", 1);
    expect_score_error("[{\"image_id\": 1, \"caption\": \"a dog\"", refs,
                       "bad_results.json: malformed JSON", 1);
    expect_score_error("[{\"image_id\": 1, \"caption\": 5}]", refs,
                       "bad_results.json: record 0 (image_id 1): \"caption\" must be a string", 1);
    expect_score_error("[{\"image_id\": \"x\", \"caption\": \"a\"}]", refs,
                       "record 0: \"image_id\" must be an integer", 1);
    expect_score_error("[]", refs, "bad_results.json: no results", 1);
    expect_score_error("[{\"image_id\": 1, \"caption\": \"a dog\"}]", "{\"images\": []}",
                       "bad_captions.json: not a COCO captions file", 1);
    expect_score_error("[{\"image_id\": 1, \"caption\": \"a dog\"}]",
                       "{\"annotations\": [{\"image_id\": 1}]}",
                       "bad_captions.json: annotation 0 (image_id 1): \"caption\" must be a string", 1);
    char out[4096], errs[4096];
    const char *args[] = {"x.json"};
    assert_int_equal(run_score(args, 1, out, errs, sizeof out), 2);
    assert_non_null(strstr(errs, "needs --refs"));
    const char *args2[] = {"/nonexistent/r.json", "--refs", "/nonexistent/c.json"};
    assert_int_equal(run_score(args2, 3, out, errs, sizeof out), 1);
    assert_non_null(strstr(errs, "/nonexistent/r.json: cannot open"));
}

/* Identical results and references score BLEU ~1 and the CIDEr-D of a perfect match. */
static void test_cli_score_self(void **state) {
    (void)state;
    char res[300], refs[300], out[4096], errs[4096];
    path_in(res, sizeof res, "self_results.json");
    path_in(refs, sizeof refs, "self_captions.json");
    write_file(res, "[{\"image_id\": 1, \"caption\": \"A dog runs on the grass.\"},"
                    " {\"image_id\": 2, \"caption\": \"Two cats sleep on a red sofa\"}]");
    write_file(refs, "{\"annotations\": [{\"image_id\": 1, \"id\": 5, \"caption\": \"a dog runs "
                     "on the grass\"}, {\"image_id\": 2, \"id\": 6, \"caption\": \"two cats "
                     "sleep on a red sofa .\"}]}");
    const char *args[] = {res, "--refs", refs};
    assert_int_equal(run_score(args, 3, out, errs, sizeof out), 0);
    double b1;
    assert_int_equal(sscanf(out, "BLEU-1: %lf", &b1), 1);
    ASSERT_NEAR(b1, 1.0, 1e-9);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bleu_demo_counts),
        cmocka_unit_test(test_bleu_identical),
        cmocka_unit_test(test_bleu_brevity),
        cmocka_unit_test(test_bleu_zero_matches),
        cmocka_unit_test(test_bleu_closest_and_clipping),
        cmocka_unit_test(test_bleu_errors),
        cmocka_unit_test(test_cider_summeval),
        cmocka_unit_test(test_cider_two_images),
        cmocka_unit_test(test_cider_penalty),
        cmocka_unit_test(test_cider_clipping_and_refs),
        cmocka_unit_test(test_tokenizer),
        cmocka_unit_test(test_cli_score_summeval),
        cmocka_unit_test(test_cli_score_errors),
        cmocka_unit_test(test_cli_score_self),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
