/* test_sampling.c — runtime/caption/sampling.c: temperature, top-k and top-p masks on hand-computed
 * distributions, greedy ties, sampling frequencies over 20000 draws against the filtered
 * distribution, the RNG's reproducibility, and beam search on a hand-made transition table
 * (the best sequence known by hand, different from greedy; length normalization changing the
 * winner; parent indices that let a caller reorder its caches).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sampling.h"

static char err[512];

static int removed(float x) { return isinf(x) && x < 0; }

static void test_temperature(void **state) {
    (void)state;
    float l[3] = {1.0f, -2.0f, 0.5f};
    cap_logits_temperature(l, 3, 0.5f); /* divide by 0.5 = double */
    assert_true(l[0] == 2.0f && l[1] == -4.0f && l[2] == 1.0f);
    cap_logits_temperature(l, 3, 2.0f);
    assert_true(l[0] == 1.0f && l[1] == -2.0f && l[2] == 0.5f);
}

static void test_top_k(void **state) {
    (void)state;
    float l[6] = {0.1f, 3.0f, 2.0f, 2.0f, -1.0f, 5.0f};
    cap_logits_top_k(l, 6, 2); /* keeps 5.0 and 3.0 */
    assert_true(l[5] == 5.0f && l[1] == 3.0f);
    assert_true(removed(l[0]) && removed(l[2]) && removed(l[3]) && removed(l[4]));
    /* Ties at the k-th value are all kept (the threshold is the k-th largest value). */
    float t[5] = {1.0f, 2.0f, 2.0f, 2.0f, 0.0f};
    cap_logits_top_k(t, 5, 2);
    assert_true(t[1] == 2.0f && t[2] == 2.0f && t[3] == 2.0f);
    assert_true(removed(t[0]) && removed(t[4]));
    float u[3] = {1, 2, 3};
    cap_logits_top_k(u, 3, 0); /* off */
    cap_logits_top_k(u, 3, 3); /* k >= V: off */
    assert_true(u[0] == 1 && u[1] == 2 && u[2] == 3);
}

/* logits = log(probabilities): sorted probabilities 0.5, 0.25, 0.15, 0.1 (token order 2, 0,
 * 3, 1); cumulative 0.5, 0.75, 0.9, 1.0.
 *   p = 0.6:  cum > p at positions 1.. -> shifted: remove positions 2.. -> keep {2, 0}
 *   p = 0.76: cum > p at 2.. -> shifted: remove 3.. -> keep {2, 0, 3}
 *   p = 0.3:  cum > p at 0.. -> shifted: remove 1.. -> keep {2} (the first always stays)
 *   p = 0.95: remove nothing but position 4.. -> keep all four. */
static void top_p_case(float p, const int keep[4]) {
    const double probs[4] = {0.25, 0.1, 0.5, 0.15};
    float l[4];
    for (int i = 0; i < 4; i++) l[i] = (float)log(probs[i]);
    assert_int_equal(cap_logits_top_p(l, 4, p, err, sizeof err), CAP_OK);
    for (int i = 0; i < 4; i++) {
        if (keep[i] && removed(l[i])) fail_msg("p=%g: token %d removed", (double)p, i);
        if (!keep[i] && !removed(l[i])) fail_msg("p=%g: token %d kept", (double)p, i);
    }
}

static void test_top_p(void **state) {
    (void)state;
    top_p_case(0.6f, (const int[4]){1, 0, 1, 0});
    top_p_case(0.76f, (const int[4]){1, 0, 1, 1});
    top_p_case(0.3f, (const int[4]){0, 0, 1, 0});
    top_p_case(0.95f, (const int[4]){1, 1, 1, 1});
    top_p_case(1.0f, (const int[4]){1, 1, 1, 1});
    float l[2] = {0, 0};
    assert_int_equal(cap_logits_top_p(l, 2, 0.0f, err, sizeof err), CAP_E_ARG);
    /* After top-k the removed tokens carry no mass: top-k 2 then p = 0.5 over {0.5, 0.25}
     * renormalized to {2/3, 1/3}: cum 0.667 > 0.5 at position 0 -> keep only token 2. */
    const double probs[4] = {0.25, 0.1, 0.5, 0.15};
    float m[4];
    for (int i = 0; i < 4; i++) m[i] = (float)log(probs[i]);
    cap_logits_top_k(m, 4, 2);
    assert_int_equal(cap_logits_top_p(m, 4, 0.5f, err, sizeof err), CAP_OK);
    assert_true(!removed(m[2]) && removed(m[0]) && removed(m[1]) && removed(m[3]));
}

static void test_greedy_ties(void **state) {
    (void)state;
    float l[5] = {1.0f, 3.0f, -2.0f, 3.0f, NAN};
    assert_int_equal(cap_argmax(l, 5), 1);
    float n[2] = {NAN, NAN};
    assert_int_equal(cap_argmax(n, 2), -1);
    CapSampleOptions o = {.greedy = 1};
    CapRng r;
    cap_rng_init(&r, 1, 0);
    int tok = -1;
    assert_int_equal(cap_sample_next(l, 5, &o, &r, &tok, err, sizeof err), CAP_OK);
    assert_int_equal(tok, 1);
    o = (CapSampleOptions){.temperature = 0}; /* temperature 0 means greedy too */
    assert_int_equal(cap_sample_next(l, 5, &o, &r, &tok, err, sizeof err), CAP_OK);
    assert_int_equal(tok, 1);
}

static void test_rng(void **state) {
    (void)state;
    CapRng a, b, c;
    cap_rng_init(&a, 42, 3);
    cap_rng_init(&b, 42, 3);
    cap_rng_init(&c, 42, 4);
    int differ = 0;
    double mean = 0;
    for (int i = 0; i < 1000; i++) {
        double x = cap_rng_uniform(&a), y = cap_rng_uniform(&b), z = cap_rng_uniform(&c);
        assert_true(x == y && x >= 0 && x < 1);
        differ += x != z;
        mean += x / 1000;
    }
    assert_true(differ > 990);
    assert_true(fabs(mean - 0.5) < 0.05);
}

/* 20000 draws with temperature 2, top-k 3, top-p 0.9 from logits log(p) for
 * p = {0.05, 0.4, 0.3, 0.2, 0.05}. Temperature 2: weights sqrt(p) = {.2236, .6325, .5477,
 * .4472, .2236}; top-k 3 keeps tokens 1, 2, 3; renormalized over .6325 + .5477 + .4472 =
 * 1.6274: {.3887, .3366, .2748}; cumulative .3887, .7253, 1.0: only position 2 exceeds 0.9,
 * shifted out of range -> all three stay. Expected frequencies = those three, 0 elsewhere. */
static void test_sampling_frequencies(void **state) {
    (void)state;
    const double p[5] = {0.05, 0.4, 0.3, 0.2, 0.05};
    double w[5] = {0}, total = 0;
    for (int i = 1; i <= 3; i++) total += w[i] = sqrt(p[i]);
    int count[5] = {0};
    CapRng r;
    cap_rng_init(&r, 1234, 7);
    CapSampleOptions o = {.temperature = 2.0f, .top_k = 3, .top_p = 0.9f};
    const int N = 20000;
    for (int d = 0; d < N; d++) {
        float l[5];
        for (int i = 0; i < 5; i++) l[i] = (float)log(p[i]);
        int tok = -1;
        assert_int_equal(cap_sample_next(l, 5, &o, &r, &tok, err, sizeof err), CAP_OK);
        assert_true(tok >= 0 && tok < 5);
        count[tok]++;
    }
    assert_int_equal(count[0] + count[4], 0);
    for (int i = 1; i <= 3; i++) {
        double f = (double)count[i] / N, e = w[i] / total;
        double sigma = sqrt(e * (1 - e) / N); /* ~0.0034 */
        if (fabs(f - e) > 4 * sigma) fail_msg("token %d: frequency %.4f, expected %.4f", i, f, e);
    }
    /* Top-p 0.5 on the same: cumulative .3887 < .5, .7253 > .5 -> keep tokens 1 and 2. */
    o.top_p = 0.5f;
    memset(count, 0, sizeof count);
    for (int d = 0; d < N; d++) {
        float l[5];
        for (int i = 0; i < 5; i++) l[i] = (float)log(p[i]);
        int tok = -1;
        assert_int_equal(cap_sample_next(l, 5, &o, &r, &tok, err, sizeof err), CAP_OK);
        count[tok]++;
    }
    assert_int_equal(count[0] + count[3] + count[4], 0);
    double e1 = w[1] / (w[1] + w[2]);
    assert_true(fabs((double)count[1] / N - e1) < 4 * sqrt(e1 * (1 - e1) / N));
}

/* ---- beam search ------------------------------------------------------------------------- */

enum { PAD = 0, START = 1, END = 2, A = 3, B = 4, C = 5, VOCAB = 6 };

/* The table: next-token probabilities given the prefix's last token (0 where not listed).
 *   <start> -> A 0.6, B 0.4
 *   A       -> C 0.55, <end> 0.45
 *   B       -> <end> 1
 *   C       -> <end> 1
 * Greedy: A (0.6), C (0.55), <end>: [A C], p = 0.33.
 * Sequences: [B] p = 0.4 (log -0.916, 2 tokens with <end>), [A C] p = 0.33 (log -1.109, 3
 * tokens), [A] p = 0.27 (log -1.309, 2 tokens).
 *   no normalization (alpha 0): [B] wins (-0.916 > -1.109): differs from greedy.
 *   alpha 1 (log p / length): [B] -0.458, [A C] -0.370, [A] -0.655: [A C] wins. */
typedef struct Table {
    int32_t prefix[8][8]; /* the beams' tokens, rebuilt from parents like a KV cache */
    int len;
    int calls;
} Table;

static void fill_row(int32_t last, float *row) {
    for (int v = 0; v < VOCAB; v++) row[v] = -INFINITY;
    switch (last) {
    case START: row[A] = logf(0.6f), row[B] = logf(0.4f); break;
    case A: row[C] = logf(0.55f), row[END] = logf(0.45f); break;
    default: row[END] = 0.0f; break;
    }
}

static CapStatus table_step(void *ctx, int step, int n_beams, const int32_t *last,
                            const int32_t *parents, float *logits, char *e, size_t es) {
    (void)e, (void)es;
    Table *t = ctx;
    int32_t next[8][8];
    for (int i = 0; i < n_beams; i++) {
        if (step == 0) assert_int_equal(parents[i], -1);
        else memcpy(next[i], t->prefix[parents[i]], sizeof next[i]);
        next[i][step] = last[i];
        /* the prefix rebuilt from parents must end in the token the search gives */
        fill_row(next[i][step], logits + (size_t)i * VOCAB);
    }
    memcpy(t->prefix, next, sizeof next);
    t->calls++;
    return CAP_OK;
}

static void run_beam(int beam, double alpha, int32_t *out, int *len, double *score) {
    Table t = {0};
    CapBeamOptions o = {.beam_size = beam, .max_len = 6, .start_id = START, .end_id = END,
                        .length_alpha = alpha};
    assert_int_equal(cap_beam_search(table_step, &t, VOCAB, &o, out, len, score, err, sizeof err),
                     CAP_OK);
}

static void test_beam_differs_from_greedy(void **state) {
    (void)state;
    int32_t out[8];
    int len = 0;
    double score = 0;
    run_beam(2, 0.0, out, &len, &score);
    assert_int_equal(len, 1);
    assert_int_equal(out[0], B);
    assert_true(fabs(score - log(0.4)) < 1e-6);
    /* beam 1 is greedy */
    run_beam(1, 0.0, out, &len, &score);
    assert_int_equal(len, 2);
    assert_true(out[0] == A && out[1] == C);
    assert_true(fabs(score - log(0.6 * 0.55)) < 1e-6);
}

static void test_beam_length_normalization(void **state) {
    (void)state;
    int32_t out[8];
    int len = 0;
    double score = 0;
    run_beam(2, 1.0, out, &len, &score);
    assert_int_equal(len, 2);
    assert_true(out[0] == A && out[1] == C);
    assert_true(fabs(score - log(0.6 * 0.55) / 3) < 1e-6);
}

/* max_len cuts the search: with max_len 1 no beam reaches <end>; the best unterminated
 * one-token hypothesis (A) comes back. */
static void test_beam_max_len(void **state) {
    (void)state;
    Table t = {0};
    CapBeamOptions o = {.beam_size = 2, .max_len = 1, .start_id = START, .end_id = END};
    int32_t out[4];
    int len = 0;
    assert_int_equal(cap_beam_search(table_step, &t, VOCAB, &o, out, &len, NULL, err, sizeof err),
                     CAP_OK);
    assert_int_equal(len, 1);
    assert_int_equal(out[0], A);
    assert_int_equal(t.calls, 1);
    o.beam_size = 0;
    assert_int_equal(cap_beam_search(table_step, &t, VOCAB, &o, out, &len, NULL, err, sizeof err),
                     CAP_E_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_temperature),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_greedy_ties),
        cmocka_unit_test(test_rng),
        cmocka_unit_test(test_sampling_frequencies),
        cmocka_unit_test(test_beam_differs_from_greedy),
        cmocka_unit_test(test_beam_length_normalization),
        cmocka_unit_test(test_beam_max_len),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
